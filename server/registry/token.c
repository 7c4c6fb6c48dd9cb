/* token.c: bearer tokens (DESIGN 7). A token is "sdp_" + 64 lowercase hex
 * characters (32 bytes from RAND_bytes). It is shown once, at creation; the
 * registry stores only SHA-256(token) in hex, so a copy of the database gives
 * no usable token. Lookup hashes the presented token and finds the unrevoked
 * row with that hash (the hash of a 256-bit secret leaks nothing useful
 * through comparison timing). Invariant: a provider token always names its
 * provider; admin and client tokens never do. */
#include "registry_impl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_PREFIX "sdp_"
#define TOKEN_RAW 32
#define TOKEN_LEN (4 + 2 * TOKEN_RAW)

static void hex_encode(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = 0;
}

/* hex SHA-256 of s into out[65]. 0 ok, -1 failure. */
static int sha256_hex(const char *s, char out[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1 || len != 32) return -1;
  hex_encode(md, 32, out);
  return 0;
}

static int role_ok(const char *role) {
  return role && (strcmp(role, "admin") == 0 || strcmp(role, "provider") == 0 ||
                  strcmp(role, "client") == 0);
}

static int provider_name_ok(const char *p) {
  size_t n = p ? strlen(p) : 0;
  if (n == 0 || n > REGISTRY_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

int registry_token_create(struct registry *r, const char *role, const char *provider,
                          char **token_out, int64_t *token_id, char **err) {
  *token_out = NULL;
  if (!role_ok(role))
    return reg_err(err, REGISTRY_EINVAL, "role must be admin, provider or client");
  int is_provider = strcmp(role, "provider") == 0;
  if (is_provider && !provider_name_ok(provider))
    return reg_err(err, REGISTRY_EINVAL,
                   "role provider needs --provider NAME (1..%d of [A-Za-z0-9._-])",
                   REGISTRY_NAME_MAX);
  if (!is_provider && provider)
    return reg_err(err, REGISTRY_EINVAL, "--provider is only for role provider");

  unsigned char raw[TOKEN_RAW];
  char hash[65];
  char *tok = malloc(TOKEN_LEN + 1);
  if (!tok) return reg_err(err, REGISTRY_EFAIL, "token: out of memory");
  if (RAND_bytes(raw, sizeof raw) != 1) {
    free(tok);
    return reg_err(err, REGISTRY_EFAIL, "token: RAND_bytes failed");
  }
  memcpy(tok, TOKEN_PREFIX, 4);
  hex_encode(raw, sizeof raw, tok + 4);
  OPENSSL_cleanse(raw, sizeof raw);
  if (sha256_hex(tok, hash) != 0) {
    OPENSSL_cleanse(tok, TOKEN_LEN);
    free(tok);
    return reg_err(err, REGISTRY_EFAIL, "token: SHA-256 failed");
  }

  static const char *sql = "INSERT INTO tokens (token_hash, role, provider) VALUES (?1, ?2, ?3)";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = SQLITE_OK;
  REG_BIND(brc, reg_bind_text(st, 1, hash));
  REG_BIND(brc, reg_bind_text(st, 2, role));
  REG_BIND(brc, reg_bind_text(st, 3, is_provider ? provider : NULL));
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (token_id) *token_id = sqlite3_last_insert_rowid(r->db);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  if (rc) {
    OPENSSL_cleanse(tok, TOKEN_LEN);
    free(tok);
    return rc;
  }
  *token_out = tok;
  return 0;
}

/* 1 if t has the exact shape of a token. */
static int token_shape_ok(const char *t) {
  if (!t || strncmp(t, TOKEN_PREFIX, 4) != 0) return 0;
  return reg_is_hex64(t + 4);
}

int registry_token_lookup(struct registry *r, const char *token, struct registry_token *out,
                          char **err) {
  memset(out, 0, sizeof *out);
  char hash[65];
  if (!token_shape_ok(token)) return reg_err(err, REGISTRY_ENOTFOUND, "unknown token");
  if (sha256_hex(token, hash) != 0) return reg_err(err, REGISTRY_EFAIL, "token: SHA-256 failed");
  static const char *sql =
      "SELECT id, role, provider FROM tokens WHERE token_hash = ?1 AND revoked_at IS NULL";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = reg_bind_text(st, 1, hash);
  if (brc != SQLITE_OK) {
    rc = REG_SQL_FAIL(r, brc, sql, err);
    goto done;
  }
  int s = sqlite3_step(st);
  if (s == SQLITE_DONE) {
    rc = reg_err(err, REGISTRY_ENOTFOUND, "unknown token");
  } else if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
  } else {
    out->id = sqlite3_column_int64(st, 0);
    const unsigned char *role = sqlite3_column_text(st, 1);
    const unsigned char *prov = sqlite3_column_text(st, 2);
    snprintf(out->role, sizeof out->role, "%s", role ? (const char *)role : "");
    snprintf(out->provider, sizeof out->provider, "%s", prov ? (const char *)prov : "");
  }
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_token_revoke(struct registry *r, int64_t id, char **err) {
  static const char *sql = "UPDATE tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                           "WHERE id = ?1 AND revoked_at IS NULL";
  static const char *probe = "SELECT 1 FROM tokens WHERE id = ?1";
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = sqlite3_bind_int64(st, 1, id);
  int s = brc == SQLITE_OK ? sqlite3_step(st) : brc;
  if (s != SQLITE_DONE) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  if (sqlite3_changes(r->db) > 0) goto done;
  sqlite3_finalize(st);
  st = NULL;
  if ((rc = REG_PREPARE(r, probe, &st, err))) goto done;
  brc = sqlite3_bind_int64(st, 1, id);
  s = brc == SQLITE_OK ? sqlite3_step(st) : brc;
  if (s == SQLITE_ROW)
    rc = reg_err(err, REGISTRY_ECONFLICT, "token %lld is already revoked", (long long)id);
  else if (s == SQLITE_DONE)
    rc = reg_err(err, REGISTRY_ENOTFOUND, "no token %lld", (long long)id);
  else
    rc = REG_SQL_FAIL(r, s, probe, err);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}

int registry_token_count(struct registry *r, const char *role, int64_t *n, char **err) {
  static const char *sql =
      "SELECT count(*) FROM tokens WHERE revoked_at IS NULL AND (?1 IS NULL OR role = ?1)";
  *n = 0;
  sqlite3_stmt *st = NULL;
  registry_lock(r);
  int rc = REG_PREPARE(r, sql, &st, err);
  if (rc) goto done;
  int brc = reg_bind_text(st, 1, role);
  int s = brc == SQLITE_OK ? sqlite3_step(st) : brc;
  if (s != SQLITE_ROW) {
    rc = REG_SQL_FAIL(r, s, sql, err);
    goto done;
  }
  *n = sqlite3_column_int64(st, 0);
done:
  sqlite3_finalize(st);
  registry_unlock(r);
  return rc;
}
