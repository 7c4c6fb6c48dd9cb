/* request.h: the per-request state the HTTP layer hands to a handler.
 *
 * Lifetime: created on the first access-handler call, freed in the
 * request-completed callback (http/server.c). Handlers read it and reply once
 * through http/reply.h; they never free it. */
#pragma once

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <stdint.h>

#include "engine/app.h"

struct route;
struct job;
struct request;

/* Work run on the compute worker for a request (see request_defer). */
typedef int (*request_op)(struct request *r);
typedef enum MHD_Result (*request_finish)(struct request *r);

enum role { ROLE_NONE = 0, ROLE_CLIENT = 1, ROLE_PROVIDER = 2, ROLE_ADMIN = 3 };

struct principal {
  enum role role;
  int64_t token_id;
  char provider[128]; /* for ROLE_PROVIDER */
  char name[160];     /* "admin#3", "provider:acme#7": for logs and audit */
};

struct request {
  struct app *app;
  struct MHD_Connection *conn;
  const char *method;
  char path[512];
  char id[33]; /* request id, echoed in X-Request-Id and every log line */
  const struct route *route;
  int64_t path_id;   /* the {id} segment, when the route has one */
  char path_key[40]; /* the {key} segment (a job id) */
  struct principal who;
  double t0;
  int status; /* what was replied */
  int replied;

  /* JSON body (routes with BODY_JSON) */
  char *body;
  size_t body_len, body_cap;
  int body_too_big;
  json_t *json; /* parsed body, owned by the request */

  /* streamed upload (Content-Type: application/octet-stream) */
  int upload;
  int upload_fd;
  char upload_path[1100];
  EVP_MD_CTX *upload_sha;
  uint64_t upload_len;
  int upload_error; /* errno of a failed write */

  /* deferred work (request_defer): the connection is suspended meanwhile */
  struct job *job;
  request_op op;
  request_finish finish;
  unsigned ok_status;
  void *op_ctx;        /* the handler's state for op (freed with the request) */
  json_t *result;      /* set by op on success (owned) */
  struct op_error err; /* set by op on failure */
};

/* Runs op(r) on the compute worker (soup updates with priority 1) while
 * the connection is suspended, so no HTTP thread waits on compute. When it
 * ends, finish(r) replies, or (finish NULL) the reply is r->result with
 * ok_status, or the problem in r->err. A full queue replies 429. */
enum MHD_Result request_defer(struct request *r, request_op op, int priority, unsigned ok_status,
                              request_finish finish);
/* The same with a job built by the caller (its own function); the job is
 * told the connection's socket so it can stop when the client goes away. */
enum MHD_Result request_defer_job(struct request *r, struct job *j, request_op marker,
                                  request_finish finish);

/* Query argument or header lookups (NULL when absent). */
const char *request_arg(const struct request *r, const char *name);
const char *request_header(const struct request *r, const char *name);
