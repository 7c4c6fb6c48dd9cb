/* server.c: libmicrohttpd glue. The access handler runs in three phases:
 *  1. headers: route (404/405), authenticate (401/403), size limits (413,
 *     from Content-Length before any body byte is read), open the upload file;
 *  2. body chunks: appended to the JSON buffer (capped) or streamed to the
 *     upload file with an incremental SHA-256 (capped);
 *  3. end of body: parse JSON (400), call the route's handler.
 * The request-completed callback frees the request, removes an unconsumed
 * upload file, and logs one line with status and duration. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "await_watch.h"
#include "core/app.h"
#include "engine/engine.h"
#include "log.h"
#include "reply.h"
#include "routes.h"

struct http_server {
  struct MHD_Daemon *d;
  struct app *app;
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

const char *request_arg(const struct request *r, const char *name) {
  return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *request_header(const struct request *r, const char *name) {
  return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static void request_id_make(struct request *r) {
  const char *given = request_header(r, "X-Request-Id");
  if (given) {
    size_t n = strlen(given), ok = n > 0 && n < sizeof r->id;
    for (size_t i = 0; ok && i < n; i++)
      ok = (given[i] >= '0' && given[i] <= '9') || (given[i] >= 'a' && given[i] <= 'z') ||
           (given[i] >= 'A' && given[i] <= 'Z') || given[i] == '-' || given[i] == '_';
    if (ok) {
      memcpy(r->id, given, n + 1);
      return;
    }
  }
  unsigned char b[8] = {0};
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) memset(b, 0, sizeof b);
  for (int i = 0; i < 8; i++) snprintf(r->id + 2 * i, 3, "%02x", b[i]);
}

static void request_free(struct request *r) {
  if (!r) return;
  if (r->job) job_put(r->job);
  free(r->op_ctx);
  if (r->upload_fd >= 0) close(r->upload_fd);
  if (r->upload_path[0]) unlink(r->upload_path);
  if (r->upload_sha) EVP_MD_CTX_free(r->upload_sha);
  free(r->body);
  json_decref(r->json);
  free(r);
}

static int content_type_is(const struct request *r, const char *want) {
  const char *ct = request_header(r, "Content-Type");
  if (!ct) return 0;
  size_t n = strlen(want);
  return strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* Phase 1: returns MHD_YES to continue reading, or the result of a reply. */
static enum MHD_Result request_begin(struct request *r, const char *url) {
  struct app *a = r->app;
  int64_t id = 0;
  int known = 0;
  char allow[64];
  r->route = route_match(r->method, url, &id, r->path_key, &known, allow, sizeof allow);
  if (!r->route) {
    if (known) {
      const char *h[] = {"Allow", allow, NULL};
      char detail[160];
      snprintf(detail, sizeof detail, "%s is not allowed here; allowed: %s", r->method, allow);
      json_t *p =
          json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", "https://soupd.dev/problems/405", "title",
                    "Method Not Allowed", "status", 405, "detail", detail, "instance", r->path);
      char *s = json_dumps(p, JSON_COMPACT);
      json_decref(p);
      enum MHD_Result ok = reply_bytes(r, 405, "application/problem+json", s, strlen(s), h);
      free(s);
      return ok;
    }
    return reply_problemf(r, 404, "no route for %s", r->path);
  }
  r->path_id = id;
  if (r->route->min_role != ROLE_NONE && !atomic_load(&a->ready))
    return reply_problemf(r, 503, "starting: the registry and the soup are not ready yet");
  if (r->route->min_role != ROLE_NONE) {
    enum MHD_Result res;
    if (auth_check(r, r->route->min_role, &res) != 0) return res;
  }
  const char *cl = request_header(r, "Content-Length");
  long long len = cl ? atoll(cl) : -1;
  if (r->route->body == BODY_NONE) return MHD_YES; /* a stray body is read and ignored */
  if (r->route->body == BODY_JSON_OR_UPLOAD && content_type_is(r, "application/octet-stream")) {
    if (len > a->cfg.upload_max_bytes)
      return reply_problemf(r, 413, "upload of %lld bytes exceeds the limit of %lld bytes", len,
                            (long long)a->cfg.upload_max_bytes);
    snprintf(r->upload_path, sizeof r->upload_path, "%s/upload-%s.part", a->tmp_dir, r->id);
    r->upload_fd = open(r->upload_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (r->upload_fd < 0) {
      r->upload_path[0] = 0;
      return reply_problemf(r, 500, "cannot create the upload file: %s", strerror(errno));
    }
    r->upload = 1;
    r->upload_sha = EVP_MD_CTX_new();
    if (!r->upload_sha || !EVP_DigestInit_ex(r->upload_sha, EVP_sha256(), NULL))
      return reply_problemf(r, 500, "cannot start SHA-256");
    return MHD_YES;
  }
  if (len > a->cfg.json_body_max)
    return reply_problemf(r, 413, "body of %lld bytes exceeds the JSON limit of %lld bytes", len,
                          (long long)a->cfg.json_body_max);
  return MHD_YES;
}

/* Phase 2: one chunk of body. */
static enum MHD_Result request_chunk(struct request *r, const char *data, size_t n) {
  struct app *a = r->app;
  if (r->upload) {
    r->upload_len += n;
    if ((int64_t)r->upload_len > a->cfg.upload_max_bytes) {
      r->body_too_big = 1;
      /* Past twice the cap the client is abusive: drop the connection. */
      return (int64_t)r->upload_len > 2 * a->cfg.upload_max_bytes ? MHD_NO : MHD_YES;
    }
    if (r->upload_error) return MHD_YES;
    EVP_DigestUpdate(r->upload_sha, data, n);
    for (size_t off = 0; off < n;) {
      ssize_t w = write(r->upload_fd, data + off, n - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        r->upload_error = errno;
        break;
      }
      off += (size_t)w;
    }
    return MHD_YES;
  }
  if (r->route->body == BODY_NONE) return MHD_YES;
  if (r->body_len + n > (size_t)a->cfg.json_body_max) {
    r->body_too_big = 1;
    return r->body_len + n > 4 * (size_t)a->cfg.json_body_max ? MHD_NO : MHD_YES;
  }
  if (r->body_len + n + 1 > r->body_cap) {
    size_t cap = r->body_cap ? r->body_cap : 4096;
    while (cap < r->body_len + n + 1) cap *= 2;
    char *b = realloc(r->body, cap);
    if (!b) return MHD_NO;
    r->body = b, r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, data, n);
  r->body_len += n;
  r->body[r->body_len] = 0;
  return MHD_YES;
}

/* A body that is not JSON is 400, except a bare NaN or Infinity where a
 * number belongs: well-formed intent, unacceptable value, so 422 naming the
 * field (Python's json module writes these by default). */
static enum MHD_Result reply_bad_json(struct request *r, const json_error_t *je) {
  size_t pos = (size_t)je->position < r->body_len ? (size_t)je->position : r->body_len;
  size_t at = pos;
  while (at > 0 && r->body[at - 1] != ':' && r->body[at - 1] != ',' && r->body[at - 1] != '[') at--;
  const char *v = r->body + at;
  while (*v == ' ' || *v == '-' || *v == '+') v++;
  if (strncmp(v, "NaN", 3) == 0 || strncmp(v, "Infinity", 8) == 0) {
    char field[64] = "body";
    /* the key before the colon: "...key" : NaN */
    size_t k = at > 0 ? at - 1 : 0;
    while (k > 0 && r->body[k] != '"') k--;
    size_t end = k;
    if (k > 0) k--;
    while (k > 0 && r->body[k] != '"') k--;
    if (end > k + 1 && end - k - 1 < sizeof field) {
      memcpy(field, r->body + k + 1, end - k - 1);
      field[end - k - 1] = 0;
    }
    json_t *errs = json_array();
    json_array_append_new(errs,
                          json_pack("{s:s,s:s}", "field", field, "message", "a finite number"));
    return reply_problem(r, 422, "NaN and Infinity are not numbers JSON can carry", errs);
  }
  return reply_problemf(r, 400, "malformed JSON at line %d column %d: %s", je->line, je->column,
                        je->text);
}

/* Phase 3: the whole request is here. */
static enum MHD_Result request_end(struct request *r) {
  if (r->body_too_big)
    return reply_problemf(
        r, 413, "request body exceeds the limit of %lld bytes",
        (long long)(r->upload ? r->app->cfg.upload_max_bytes : r->app->cfg.json_body_max));
  if (r->upload) {
    if (r->upload_error)
      return reply_problemf(r, r->upload_error == ENOSPC ? 507 : 500, "cannot store the upload: %s",
                            strerror(r->upload_error));
    if (fsync(r->upload_fd) != 0)
      return reply_problemf(r, 500, "cannot store the upload: %s", strerror(errno));
  } else if (r->route->body != BODY_NONE && r->body_len > 0) {
    json_error_t je;
    r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!r->json) return reply_bad_json(r, &je);
    if (!json_is_object(r->json)) return reply_problemf(r, 400, "the body must be a JSON object");
  }
  enum MHD_Result res = r->route->fn(r);
  if (!r->replied && !r->awaiting) return reply_problemf(r, 500, "the handler gave no reply");
  return res;
}

/* Called by the worker (under the engine lock) when the job ends. */
static void await_done(struct job *j, void *ctx) {
  struct request *r = ctx;
  await_watch_remove(r->watch_id);
  r->watch_id = 0;
  MHD_resume_connection(r->conn);
}

enum MHD_Result request_await(struct request *r, struct job *j, unsigned ok_status,
                              int cancel_on_disconnect, request_finish finish) {
  if (!j) return reply_problemf(r, 500, "out of memory");
  r->job = j, r->finish = finish, r->ok_status = ok_status, r->awaiting = 1;
  j->owner_token = r->who.token_id;
  j->on_done = await_done;
  j->done_ctx = r;
  const union MHD_ConnectionInfo *ci =
      cancel_on_disconnect ? MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD)
                           : NULL;
  if (ci) r->watch_id = await_watch_add(ci->connect_fd, r->app->engine, j);
  MHD_suspend_connection(r->conn);
  int status = 0;
  if (engine_submit(r->app->engine, j, 0, &status) != 0) {
    j->on_done = NULL;
    await_watch_remove(r->watch_id);
    r->watch_id = 0;
    job_fail(j, status, "%s",
             status == ERR_BUSY ? "the job queue is full; retry later"
                                : "the server is shutting down");
    MHD_resume_connection(r->conn);
  }
  return MHD_YES;
}

enum MHD_Result reply_job_error(struct request *r, struct job *j) {
  unsigned status = j->code ? http_status_of(j->code) : 503; /* 503: cancelled */
  return reply_problem(r, status, j->detail[0] ? j->detail : "the job did not complete",
                       j->errors ? json_incref(j->errors) : NULL);
}

/* The awaited job has ended (or was refused): reply. */
static enum MHD_Result request_resume(struct request *r) {
  struct job *j = r->job;
  if (r->finish) return r->finish(r);
  if (atomic_load(&j->status) != JOB_SUCCEEDED) return reply_job_error(r, j);
  return reply_json(r, r->ok_status, j->result ? json_incref(j->result) : json_object());
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
  struct http_server *s = cls;
  struct request *r = *con_cls;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->app = s->app;
    r->conn = conn;
    r->upload_fd = -1;
    r->method = method;
    r->t0 = now_ms();
    snprintf(r->path, sizeof r->path, "%s", url);
    request_id_make(r);
    *con_cls = r;
    log_set_request_id(r->id);
    enum MHD_Result res = request_begin(r, url);
    log_set_request_id(NULL);
    return res;
  }
  if (r->replied) { /* replied early: discard whatever body follows */
    *upload_data_size = 0;
    return MHD_YES;
  }
  log_set_request_id(r->id);
  enum MHD_Result res;
  if (r->awaiting) { /* resumed after the awaited job */
    *upload_data_size = 0;
    res = request_resume(r);
  } else if (*upload_data_size) {
    res = request_chunk(r, upload_data, *upload_data_size);
    *upload_data_size = 0;
  } else {
    res = request_end(r);
  }
  log_set_request_id(NULL);
  return res;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct request *r = *con_cls;
  if (!r) return;
  log_set_request_id(r->id);
  const char *why = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK      ? ""
                    : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? " (timeout)"
                    : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT    ? " (client aborted)"
                    : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? " (shutdown)"
                    : toe == MHD_REQUEST_TERMINATED_READ_ERROR      ? " (read error)"
                                                                    : " (error)";
  if (strcmp(r->path, "/healthz") != 0 && strcmp(r->path, "/metrics") != 0)
    log_info("%s %s %d %.1fms %s%s", r->method, r->path, r->status, now_ms() - r->t0,
             r->who.name[0] ? r->who.name : "-", why);
  log_set_request_id(NULL);
  request_free(r);
  *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  size_t n = strlen(buf);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
  log_warn("http: %s", buf);
}

int http_start(struct app *app, struct http_server **out, char **err) {
  struct sockaddr_in sa;
  if (config_listen_addr(app->cfg.listen, &sa) != 0) { /* checked at load; kept for callers */
    *err = strdup("listen must be IPV4:PORT, e.g. 127.0.0.1:8600");
    return -1;
  }
  struct http_server *s = calloc(1, sizeof *s);
  if (!s) return -1;
  s->app = app;
  if (await_watch_start(err) != 0) {
    free(s);
    return -1;
  }
  const struct config *c = &app->cfg;
  s->d = MHD_start_daemon(
      MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
      on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)c->threads,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)c->per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)c->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)c->connection_memory_kib * 1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_END);
  if (!s->d) {
    char buf[256];
    snprintf(buf, sizeof buf, "cannot listen on %s (address in use or not permitted)", c->listen);
    *err = strdup(buf);
    await_watch_stop();
    free(s);
    return -1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  log_info("listening on http://%.*s:%u (%d threads, %d connections, %d per IP, %ds timeout)",
           (int)(strrchr(c->listen, ':') - c->listen), c->listen, info ? info->port : 0,
           (int)c->threads, (int)c->max_connections, (int)c->per_ip_connections,
           (int)c->connection_timeout_s);
  *out = s;
  return 0;
}

void http_quiesce(struct http_server *s) {
  if (s) MHD_quiesce_daemon(s->d);
}

void http_stop(struct http_server *s) {
  if (!s) return;
  MHD_quiesce_daemon(s->d);
  /* connections resumed by the engine's last jobs need a moment to reply */
  usleep(200 * 1000);
  MHD_stop_daemon(s->d);
  await_watch_stop();
  free(s);
}
