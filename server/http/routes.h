/* routes.h: the static route table (one row per method and path pattern;
 * "{id}" matches a positive decimal integer). 404 for an unknown path, 405
 * (with Allow) for a known path with another method. */
#pragma once

#include "request.h"

enum body_kind { BODY_NONE = 0, BODY_JSON, BODY_JSON_OR_UPLOAD };

typedef enum MHD_Result (*route_fn)(struct request *r);

struct route {
  const char *method;
  const char *pattern;
  enum role min_role; /* ROLE_NONE: no token needed */
  enum body_kind body;
  route_fn fn;
};

/* Returns the route, or NULL with *path_known = 1 (405, *allow filled) or 0 (404). */
const struct route *route_match(const char *method, const char *path, int64_t *id, char *key,
                                int *path_known, char *allow, size_t allow_len);
