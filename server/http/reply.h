/* reply.h: every response goes through here, so each one carries the
 * request id, and every error is RFC 9457 application/problem+json with
 * type, title, status, detail, instance and (for validation) errors. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "request.h"

/* Replies with a JSON document; takes ownership of body (json_decref). */
enum MHD_Result reply_json(struct request *r, unsigned status, json_t *body);
/* Problem details; errors (a JSON array of {field, message}) is stolen, may be NULL. */
enum MHD_Result reply_problem(struct request *r, unsigned status, const char *detail,
                              json_t *errors);
/* A problem with one printf-formatted detail. */
enum MHD_Result reply_problemf(struct request *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A problem with one {field, message} validation error. */
enum MHD_Result reply_field(struct request *r, unsigned status, const char *field, const char *msg);
/* The problem an operation recorded (its errors array is taken). */
enum MHD_Result reply_op_error(struct request *r, struct op_error *e);
/* The one mapping from a domain error code (errors.h) to an HTTP status. */
unsigned http_status_of(enum err_code c);
/* Raw bytes (copied) with a content type; extra headers as NULL-terminated name/value pairs. */
enum MHD_Result reply_bytes(struct request *r, unsigned status, const char *content_type,
                            const void *data, size_t len, const char *const *headers);
/* Streams an open file descriptor (closed by MHD when done). */
enum MHD_Result reply_fd(struct request *r, unsigned status, const char *content_type, int fd,
                         uint64_t size, const char *const *headers);
const char *http_status_title(unsigned status);
