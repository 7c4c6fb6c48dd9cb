/* errors.h: the daemon's domain error codes. core/ and engine/ report
 * failures with these and know nothing of HTTP; http/reply.c holds the one
 * mapping from a code to an HTTP status. */
#pragma once

enum err_code {
  ERR_NONE = 0,
  ERR_INVALID,     /* well-formed but unacceptable input (a field, a checkpoint) */
  ERR_NOT_FOUND,   /* no such object */
  ERR_CONFLICT,    /* the object's state forbids it (name taken, already withdrawn) */
  ERR_FORBIDDEN,   /* the actor may not do this */
  ERR_BUSY,        /* the job queue is full: retry later */
  ERR_UNAVAILABLE, /* not now (shutting down, out of memory, no model, timed out) */
  ERR_NO_SPACE,    /* the disk is full */
  ERR_INTERNAL,    /* a fault of the server */
};

/* "invalid", "not_found", ...: for logs. */
const char *err_code_name(enum err_code c);
