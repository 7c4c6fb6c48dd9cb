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

struct app;
struct route;

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
  int64_t path_id; /* the {id} segment, when the route has one */
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
};

/* Query argument or header lookups (NULL when absent). */
const char *request_arg(const struct request *r, const char *name);
const char *request_header(const struct request *r, const char *name);
