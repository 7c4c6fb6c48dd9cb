/* reply.c: building and queueing responses. Every response gets
 * X-Request-Id; problem+json bodies never carry a server path or a stack. */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

const char *http_status_title(unsigned status) {
  switch (status) {
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 415:
    return "Unsupported Media Type";
  case 422:
    return "Unprocessable Content";
  case 429:
    return "Too Many Requests";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  case 507:
    return "Insufficient Storage";
  default:
    return "Error";
  }
}

static enum MHD_Result queue(struct request *r, unsigned status, struct MHD_Response *resp,
                             const char *content_type, const char *const *headers) {
  if (!resp) return MHD_NO;
  /* A reply ends the upload's use: remove its temporary file now, not when the
   * connection completes, so a client that has the reply never sees it. */
  if (r->upload_path[0]) {
    unlink(r->upload_path);
    r->upload_path[0] = 0;
  }
  MHD_add_response_header(resp, "Content-Type", content_type);
  MHD_add_response_header(resp, "X-Request-Id", r->id);
  MHD_add_response_header(resp, "Cache-Control", "no-store");
  for (const char *const *h = headers; h && h[0]; h += 2) MHD_add_response_header(resp, h[0], h[1]);
  if (status == 401)
    MHD_add_response_header(resp, "WWW-Authenticate",
                            "Bearer realm=\"soupd\", error=\"invalid_token\"");
  enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
  MHD_destroy_response(resp);
  r->status = (int)status;
  r->replied = 1;
  return ok;
}

enum MHD_Result reply_bytes(struct request *r, unsigned status, const char *content_type,
                            const void *data, size_t len, const char *const *headers) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
  return queue(r, status, resp, content_type, headers);
}

enum MHD_Result reply_fd(struct request *r, unsigned status, const char *content_type, int fd,
                         uint64_t size, const char *const *headers) {
  struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
  return queue(r, status, resp, content_type, headers);
}

enum MHD_Result reply_json(struct request *r, unsigned status, json_t *body) {
  char *s = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
  json_decref(body);
  if (!s) return MHD_NO;
  size_t n = strlen(s);
  struct MHD_Response *resp = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
  return queue(r, status, resp, "application/json", NULL);
}

enum MHD_Result reply_problem(struct request *r, unsigned status, const char *detail,
                              json_t *errors) {
  json_t *p = json_object();
  char type[64];
  snprintf(type, sizeof type, "https://soupd.dev/problems/%u", status);
  json_object_set_new(p, "type", json_string(type));
  json_object_set_new(p, "title", json_string(http_status_title(status)));
  json_object_set_new(p, "status", json_integer(status));
  json_object_set_new(p, "detail", json_string(detail ? detail : http_status_title(status)));
  json_object_set_new(p, "instance", json_string(r->path));
  json_object_set_new(p, "request_id", json_string(r->id));
  if (errors) json_object_set_new(p, "errors", errors);
  if (status >= 500)
    log_error("%s %s -> %u: %s", r->method, r->path, status, detail ? detail : "");
  else
    log_info("%s %s -> %u: %s", r->method, r->path, status, detail ? detail : "");
  char *s = json_dumps(p, JSON_COMPACT | JSON_ENSURE_ASCII);
  json_decref(p);
  if (!s) return MHD_NO;
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
  const char *retry[] = {"Retry-After", "1", NULL};
  return queue(r, status, resp, "application/problem+json",
               (status == 429 || status == 503) ? retry : NULL);
}

enum MHD_Result reply_problemf(struct request *r, unsigned status, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return reply_problem(r, status, buf, NULL);
}

enum MHD_Result reply_field(struct request *r, unsigned status, const char *field,
                            const char *msg) {
  json_t *errs = json_array();
  json_array_append_new(errs, json_pack("{s:s,s:s}", "field", field, "message", msg));
  char detail[300];
  snprintf(detail, sizeof detail, "%s: %s", field, msg);
  return reply_problem(r, status, detail, errs);
}

unsigned http_status_of(enum err_code c) {
  switch (c) {
  case ERR_INVALID:
    return 422;
  case ERR_NOT_FOUND:
    return 404;
  case ERR_CONFLICT:
    return 409;
  case ERR_FORBIDDEN:
    return 403;
  case ERR_BUSY:
    return 429;
  case ERR_UNAVAILABLE:
    return 503;
  case ERR_NO_SPACE:
    return 507;
  case ERR_NONE:
  case ERR_INTERNAL:
    break;
  }
  return 500;
}

enum MHD_Result reply_op_error(struct request *r, struct op_error *e) {
  json_t *errs = e->errors;
  e->errors = NULL;
  return reply_problem(r, http_status_of(e->code), e->detail, errs);
}
