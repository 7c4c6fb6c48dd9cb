/* keys.c: creating, loading, rotating and using the Ed25519 signing keys
 * (keys.h). keys.json is rewritten through a temporary file and rename, the
 * private key files are created with O_EXCL and mode 0600; a private key
 * that group or others may read stops the start, since anyone who can read
 * it can forge every proof. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct proofs_keys {
  json_t *list; /* {"keys": [...]} */
  EVP_PKEY *current;
  char current_id[PROOFS_KEY_ID_LEN + 1];
};

static int fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return -1;
}

void proofs_b64_encode(const unsigned char *in, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

int proofs_b64_decode(const char *in, unsigned char *out, size_t cap) {
  size_t n = strlen(in);
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap + 2) return -1;
  unsigned char tmp[512];
  if (n / 4 * 3 > sizeof tmp) return -1;
  int len = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
  if (len < 0) return -1;
  if (n >= 1 && in[n - 1] == '=') len--;
  if (n >= 2 && in[n - 2] == '=') len--;
  if ((size_t)len > cap) return -1;
  memcpy(out, tmp, (size_t)len);
  return len;
}

void proofs_now_rfc3339(char out[32]) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void key_id_of(const unsigned char pub[32], char id[PROOFS_KEY_ID_LEN + 1]) {
  unsigned char md[32];
  EVP_Digest(pub, 32, md, NULL, EVP_sha256(), NULL);
  for (int i = 0; i < PROOFS_KEY_ID_LEN / 2; i++) snprintf(id + 2 * i, 3, "%02x", md[i]);
}

static int keys_dir(const char *data_dir, char *out, size_t len, char **err) {
  snprintf(out, len, "%s/keys", data_dir);
  if (mkdir(data_dir, 0700) != 0 && errno != EEXIST)
    return fail(err, "cannot create %s: %s", data_dir, strerror(errno));
  if (mkdir(out, 0700) != 0 && errno != EEXIST)
    return fail(err, "cannot create %s: %s", out, strerror(errno));
  return 0;
}

static json_t *list_load(const char *dir, char **err) {
  char path[1200];
  snprintf(path, sizeof path, "%s/keys.json", dir);
  if (access(path, F_OK) != 0) return json_pack("{s:[]}", "keys");
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j || !json_is_array(json_object_get(j, "keys"))) {
    json_decref(j);
    fail(err, "%s is not a key list: %s", path, j ? "no \"keys\" array" : je.text);
    return NULL;
  }
  return j;
}

static int list_save(const char *dir, const json_t *list, char **err) {
  char path[1200], tmp[1210];
  snprintf(path, sizeof path, "%s/keys.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (json_dump_file(list, tmp, JSON_INDENT(2)) != 0) return fail(err, "cannot write %s", tmp);
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) fsync(fd), close(fd);
  if (rename(tmp, path) != 0) return fail(err, "cannot replace %s: %s", path, strerror(errno));
  return 0;
}

/* Generates a key, writes its private PEM (0600) and appends it to list. */
static int key_create(const char *dir, json_t *list, char **err) {
  EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (!pk) return fail(err, "cannot generate an Ed25519 key");
  unsigned char pub[32];
  size_t plen = sizeof pub;
  char id[PROOFS_KEY_ID_LEN + 1], path[1200], b64[64];
  if (EVP_PKEY_get_raw_public_key(pk, pub, &plen) != 1 || plen != 32) {
    EVP_PKEY_free(pk);
    return fail(err, "cannot read the new public key");
  }
  key_id_of(pub, id);
  snprintf(path, sizeof path, "%s/%s.pem", dir, id);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  int ok = f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1 && fflush(f) == 0 &&
           fsync(fd) == 0;
  if (f)
    fclose(f);
  else if (fd >= 0)
    close(fd);
  EVP_PKEY_free(pk);
  if (!ok) return fail(err, "cannot write the private key %s: %s", path, strerror(errno));
  proofs_b64_encode(pub, 32, b64);
  char now[32];
  proofs_now_rfc3339(now);
  json_array_append_new(json_object_get(list, "keys"),
                        json_pack("{s:s,s:s,s:s,s:s,s:n}", "key_id", id, "algorithm",
                                  PROOFS_ALGORITHM, "public_key", b64, "created_at", now,
                                  "retired_at"));
  return 0;
}

static EVP_PKEY *private_load(const char *dir, const char *id, char **err) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.pem", dir, id);
  struct stat sb;
  if (stat(path, &sb) != 0) {
    fail(err, "the signing key %s is missing: %s", path, strerror(errno));
    return NULL;
  }
  if (sb.st_mode & 077) {
    fail(err,
         "the signing key %s is readable or writable by group or others (mode %04o); anyone "
         "who can read it can forge proofs: run chmod 600 %s",
         path, (unsigned)(sb.st_mode & 07777), path);
    return NULL;
  }
  FILE *f = fopen(path, "r");
  EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  if (!pk) fail(err, "cannot read the signing key %s", path);
  return pk;
}

/* The last key with retired_at null, or NULL. */
static json_t *current_entry(json_t *list) {
  json_t *arr = json_object_get(list, "keys");
  size_t n = json_array_size(arr);
  json_t *last = n ? json_array_get(arr, n - 1) : NULL;
  return last && json_is_null(json_object_get(last, "retired_at")) ? last : NULL;
}

int proofs_keys_open(const char *data_dir, struct proofs_keys **out, char **err) {
  *out = NULL;
  char dir[1100];
  if (keys_dir(data_dir, dir, sizeof dir, err) != 0) return -1;
  json_t *list = list_load(dir, err);
  if (!list) return -1;
  if (!current_entry(list)) {
    if (key_create(dir, list, err) != 0 || list_save(dir, list, err) != 0) {
      json_decref(list);
      return -1;
    }
  }
  const char *id = json_string_value(json_object_get(current_entry(list), "key_id"));
  EVP_PKEY *pk = id ? private_load(dir, id, err) : NULL;
  if (!pk) {
    if (!id) fail(err, "%s/keys.json: the current key has no key_id", dir);
    json_decref(list);
    return -1;
  }
  struct proofs_keys *k = calloc(1, sizeof *k);
  k->list = list;
  k->current = pk;
  snprintf(k->current_id, sizeof k->current_id, "%s", id);
  *out = k;
  return 0;
}

void proofs_keys_close(struct proofs_keys *k) {
  if (!k) return;
  EVP_PKEY_free(k->current);
  json_decref(k->list);
  free(k);
}

const char *proofs_keys_current_id(const struct proofs_keys *k) {
  return k->current_id;
}

json_t *proofs_keys_json(const struct proofs_keys *k) {
  return json_deep_copy(k->list);
}

int proofs_keys_sign(const struct proofs_keys *k, const void *msg, size_t len, char *sig_b64,
                     char **err) {
  unsigned char sig[64];
  size_t slen = sizeof sig;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, k->current) == 1 &&
           EVP_DigestSign(c, sig, &slen, msg, len) == 1 && slen == 64;
  EVP_MD_CTX_free(c);
  if (!ok) return fail(err, "Ed25519 signing failed");
  proofs_b64_encode(sig, 64, sig_b64);
  return 0;
}

int proofs_ed25519_verify(const char *pub_b64, const void *msg, size_t len, const char *sig_b64) {
  unsigned char pub[32], sig[64];
  if (!pub_b64 || !sig_b64 || proofs_b64_decode(pub_b64, pub, sizeof pub) != 32 ||
      proofs_b64_decode(sig_b64, sig, sizeof sig) != 64)
    return 0;
  EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
  EVP_MD_CTX *c = pk ? EVP_MD_CTX_new() : NULL;
  int ok = c && EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) == 1 &&
           EVP_DigestVerify(c, sig, 64, msg, len) == 1;
  EVP_MD_CTX_free(c);
  EVP_PKEY_free(pk);
  return ok;
}

int proofs_keys_rotate(const char *data_dir, char **new_id, char **err) {
  *new_id = NULL;
  char dir[1100];
  if (keys_dir(data_dir, dir, sizeof dir, err) != 0) return -1;
  json_t *list = list_load(dir, err);
  if (!list) return -1;
  json_t *cur = current_entry(list);
  char now[32];
  proofs_now_rfc3339(now);
  if (cur) json_object_set_new(cur, "retired_at", json_string(now));
  int rc = key_create(dir, list, err);
  if (rc == 0) rc = list_save(dir, list, err);
  if (rc == 0) *new_id = strdup(json_string_value(json_object_get(current_entry(list), "key_id")));
  json_decref(list);
  return rc;
}
