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

#include "core/app.h"

struct route;
struct job;
struct request;

/* Replies once the awaited job has ended (see request_await). */
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

  /* the job the request waits for (request_await): the connection is
   * suspended meanwhile; the job holds the outcome */
  struct job *job;
  int awaiting;
  uint64_t watch_id; /* await_watch.h: the disconnect watch, or 0 */
  request_finish finish;
  unsigned ok_status;
  void *op_ctx; /* the handler's state for finish (freed with the request) */
};

/* The one way HTTP waits for the compute worker. Submits j (the request
 * keeps the caller's reference) and suspends the connection, so no HTTP
 * thread waits on compute; when the job ends the worker resumes it, and
 * finish(r) replies, or (finish NULL) the job's result with ok_status, or
 * its problem. A full queue (429) or a stopping engine (503) ends the job at
 * once. With cancel_on_disconnect the job stops when the client goes away. */
enum MHD_Result request_await(struct request *r, struct job *j, unsigned ok_status,
                              int cancel_on_disconnect, request_finish finish);
/* The problem+json of a job that did not succeed (its status, detail and
 * field errors; 503 for a cancelled one). */
enum MHD_Result reply_job_error(struct request *r, struct job *j);

/* Query argument or header lookups (NULL when absent). */
const char *request_arg(const struct request *r, const char *name);
const char *request_header(const struct request *r, const char *name);
