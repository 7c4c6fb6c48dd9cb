/* auth.h: bearer tokens (RFC 6750). A missing, malformed, unknown or revoked
 * token is 401 with WWW-Authenticate; a known token whose role is below the
 * route's is 403 and an auth.denied audit event. */
#pragma once

#include "request.h"

/* Fills r->who. Returns 0 if allowed; otherwise replies, sets *res, returns -1. */
int auth_check(struct request *r, enum role min_role, enum MHD_Result *res);
/* The caller as core/ sees it (for authorization in jobs and the audit log). */
struct actor auth_actor(const struct request *r);
/* Replies 403 for an object the caller may not touch and records auth.denied. */
enum MHD_Result auth_deny(struct request *r, int64_t shard_id, const char *what);
const char *role_name(enum role role);
