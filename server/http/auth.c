/* auth.c: token lookup (only SHA-256 hashes are stored, registry/), role
 * checks, and the audit of every denial. */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <openssl/evp.h>
#include <string.h>

#include "core/app.h"
#include "log.h"
#include "core/reads.h"
#include "reply.h"
#include "routes.h"

const char *role_name(enum role role) {
  static const char *names[] = {"none", "client", "provider", "admin"};
  return (unsigned)role < 4 ? names[role] : "?";
}

static enum role role_parse(const char *s) {
  if (strcmp(s, "admin") == 0) return ROLE_ADMIN;
  if (strcmp(s, "provider") == 0) return ROLE_PROVIDER;
  if (strcmp(s, "client") == 0) return ROLE_CLIENT;
  return ROLE_NONE;
}

struct actor auth_actor(const struct request *r) {
  struct actor a = {r->who.token_id, r->who.name, r->who.provider, r->who.role == ROLE_ADMIN};
  return a;
}

/* The password of an HTTP Basic credential ("user:password", base64). */
static int basic_password(const char *b64, char *out, size_t len) {
  unsigned char dec[256];
  size_t n = strlen(b64);
  if (n == 0 || n > 340 || n % 4) return 0;
  int m = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)n);
  if (m <= 0) return 0;
  while (n && b64[n - 1] == '=') n--, m--; /* DecodeBlock counts padding as zero bytes */
  dec[m] = 0;
  const char *colon = memchr(dec, ':', (size_t)m);
  if (!colon || strlen(colon + 1) >= len) return 0;
  snprintf(out, len, "%s", colon + 1);
  return 1;
}

int auth_check(struct request *r, enum role min_role, enum MHD_Result *res) {
  const char *h = request_header(r, "Authorization");
  char basic[256];
  const char *tok = NULL;
  if (h && strncasecmp(h, "Bearer ", 7) == 0) {
    tok = h + 7;
    while (*tok == ' ') tok++;
  } else if (h && strncasecmp(h, "Basic ", 6) == 0 && basic_password(h + 6, basic, sizeof basic)) {
    tok = basic; /* HTTP Basic (AUTOMATIC1111 clients): the password is the token */
  }
  if (!tok) {
    *res = reply_problemf(r, 401, "a bearer token is required (Authorization: Bearer <token>)");
    return -1;
  }
  struct core_token t;
  struct op_error e = {0};
  if (core_token_lookup(r->app, tok, &t, &e) != 0) {
    *res = e.code == ERR_NOT_FOUND ? reply_problemf(r, 401, "the token is unknown or revoked")
                                   : reply_problemf(r, 503, "the registry is busy; retry");
    return -1;
  }
  r->who.role = role_parse(t.role);
  r->who.token_id = t.id;
  snprintf(r->who.provider, sizeof r->who.provider, "%s", t.provider);
  if (r->who.role == ROLE_PROVIDER)
    snprintf(r->who.name, sizeof r->who.name, "provider:%s#%lld", t.provider, (long long)t.id);
  else
    snprintf(r->who.name, sizeof r->who.name, "%s#%lld", t.role, (long long)t.id);
  if (r->who.role < min_role) {
    char what[128];
    snprintf(what, sizeof what, "%s %s needs role %s", r->method, r->route->pattern,
             role_name(min_role));
    struct actor a = auth_actor(r);
    app_audit_denied(r->app, &a, r->path_id, what);
    *res = reply_problemf(r, 403, "%s; this token has role %s", what, role_name(r->who.role));
    return -1;
  }
  return 0;
}

enum MHD_Result auth_deny(struct request *r, int64_t shard_id, const char *what) {
  struct actor a = auth_actor(r);
  app_audit_denied(r->app, &a, shard_id, what);
  return reply_problemf(r, 403, "%s", what);
}
