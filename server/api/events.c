/* events.c: GET /events, the append-only audit log; GET /events/verify, its
 * hash chain checked (the first broken link, if any). */
#include <errno.h>
#include <stdlib.h>

#include "api.h"
#include "core/app.h"
#include "core/reads.h"

/* Parses a non-negative integer query argument; -1 if absent, -2 if bad. */
static long long arg_int(const struct request *r, const char *name, long long max) {
  const char *s = request_arg(r, name);
  if (!s) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > max) return -2;
  return v;
}

enum MHD_Result api_events_list(struct request *r) {
  long long since = arg_int(r, "since", INT64_MAX), limit = arg_int(r, "limit", 1000);
  if (since == -2 || limit == -2 || limit == 0) {
    json_t *errs = json_array();
    if (since == -2)
      json_array_append_new(
          errs, json_pack("{s:s,s:s}", "field", "since", "message", "a non-negative integer"));
    if (limit == -2 || limit == 0)
      json_array_append_new(
          errs, json_pack("{s:s,s:s}", "field", "limit", "message", "an integer in [1, 1000]"));
    return reply_problem(r, 422, "invalid query parameters", errs);
  }
  json_t *out = NULL;
  struct op_error e = {0};
  if (core_events_list(r->app, since < 0 ? 0 : since, limit < 0 ? 100 : limit, &out, &e) != 0)
    return reply_op_error(r, &e);
  return reply_json(r, 200, out);
}

enum MHD_Result api_events_verify(struct request *r) {
  json_t *out = NULL;
  struct op_error e = {0};
  if (core_events_verify(r->app, &out, &e) != 0) return reply_op_error(r, &e);
  return reply_json(r, 200, out);
}
