/* receipt.c: sign and verify JSON objects over their RFC 8785 encoding
 * without "signature" (receipt.h), and the plain-language meaning of a
 * receipt. */
#include "receipt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canon.h"

/* The canonical bytes of obj without its signature (malloc'd) or NULL. */
static char *signed_bytes(const json_t *obj) {
  json_t *c = json_copy((json_t *)obj);
  if (!c) return NULL;
  json_object_del(c, "signature");
  char *s = proofs_canon_json(c);
  json_decref(c);
  return s;
}

int proofs_object_sign(const struct proofs_keys *k, json_t *obj, char **err) {
  json_object_set_new(obj, "algorithm", json_string(PROOFS_ALGORITHM));
  json_object_set_new(obj, "key_id", json_string(proofs_keys_current_id(k)));
  char *bytes = signed_bytes(obj);
  if (!bytes) {
    if (err) *err = strdup("the object cannot be canonicalized (a real number?)");
    return -1;
  }
  char sig[96];
  int rc = proofs_keys_sign(k, bytes, strlen(bytes), sig, err);
  free(bytes);
  if (rc == 0) json_object_set_new(obj, "signature", json_string(sig));
  return rc;
}

int proofs_object_verify(const json_t *obj, const json_t *keys, const char *pub_b64, char *why,
                         size_t why_len) {
  if (!json_is_object(obj)) return snprintf(why, why_len, "not a JSON object"), -1;
  const char *alg = json_string_value(json_object_get(obj, "algorithm"));
  const char *kid = json_string_value(json_object_get(obj, "key_id"));
  const char *sig = json_string_value(json_object_get(obj, "signature"));
  if (!sig) return snprintf(why, why_len, "it has no signature"), -1;
  if (!alg || strcmp(alg, PROOFS_ALGORITHM) != 0)
    return snprintf(why, why_len, "unknown algorithm '%s' (expected %s)", alg ? alg : "",
                    PROOFS_ALGORITHM),
           -1;
  if (!pub_b64) {
    size_t i;
    json_t *e;
    json_array_foreach((json_t *)keys, i, e) {
      const char *id = json_string_value(json_object_get(e, "key_id"));
      if (kid && id && strcmp(id, kid) == 0)
        pub_b64 = json_string_value(json_object_get(e, "public_key"));
    }
    if (!pub_b64)
      return snprintf(why, why_len, "key %s is not among the given keys", kid ? kid : "(none)"), -1;
  }
  char *bytes = signed_bytes(obj);
  if (!bytes) return snprintf(why, why_len, "it cannot be canonicalized (a real number?)"), -1;
  int ok = proofs_ed25519_verify(pub_b64, bytes, strlen(bytes), sig);
  free(bytes);
  if (!ok)
    return snprintf(why, why_len,
                    "the signature does not match: the receipt was changed after signing, or "
                    "key %s did not sign it",
                    kid ? kid : "(none)"),
           -1;
  return 0;
}

static const char *str(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "?";
}

char *proofs_receipt_sentence(const json_t *r) {
  const json_t *soup = json_object_get(r, "soup"), *ver = json_object_get(r, "verify");
  const char *action = str(r, "action");
  int withdrawn = strcmp(action, "shard.withdrawn") == 0;
  char verify[300] = "";
  if (json_is_object(ver))
    snprintf(verify, sizeof verify,
             json_is_true(json_object_get(ver, "match"))
                 ? ", and that the soup rebuilt from the remaining shards then matched the live "
                   "soup (hash %.16s...)"
                 : ", and that the soup rebuilt from the remaining shards did NOT match the live "
                   "soup (rebuilt %.16s...)",
             str(ver, "rebuilt_hash"));
  char *out = NULL;
  if (asprintf(&out,
               "Valid: key %s of this soupd signed that shard %lld (sha256 %s) of provider %s "
               "was %s at %s, taking the soup from version %lld (hash %.16s...) to version %lld "
               "(hash %.16s...)%s.",
               str(r, "key_id"), (long long)json_integer_value(json_object_get(r, "shard_id")),
               str(r, "sha256"), str(r, "provider"), withdrawn ? "withdrawn" : "registered",
               str(r, "at"), (long long)json_integer_value(json_object_get(soup, "version_before")),
               str(soup, "hash_before"),
               (long long)json_integer_value(json_object_get(soup, "version_after")),
               str(soup, "hash_after"), verify) < 0)
    return NULL;
  return out;
}
