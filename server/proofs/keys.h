/* keys.h: the daemon's Ed25519 signing keys (DESIGN.md 10).
 *
 * Layout in the data directory: keys/keys.json lists every key ever used,
 * {"keys": [{"key_id", "algorithm": "ed25519", "public_key" (base64 of the
 * raw 32 bytes), "created_at", "retired_at" (null for the current one)}]};
 * keys/<key_id>.pem holds each private key (PKCS#8 PEM, mode 0600). The key
 * id is the lowercase hex of the first 8 bytes of SHA-256(raw public key).
 * Exactly one key is current (the last one, retired_at null); retired keys
 * stay listed so old proofs keep verifying. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define PROOFS_ALGORITHM "ed25519"
#define PROOFS_KEY_ID_LEN 16

struct proofs_keys;

/* Opens keys/ under data_dir, creating the first key when none exists.
 * Refuses (-1, *err) a private key file that group or others can read. */
int proofs_keys_open(const char *data_dir, struct proofs_keys **out, char **err);
void proofs_keys_close(struct proofs_keys *k);

/* The current key's id. */
const char *proofs_keys_current_id(const struct proofs_keys *k);
/* A copy of keys.json's {"keys": [...]} (public parts only). */
json_t *proofs_keys_json(const struct proofs_keys *k);
/* Signs msg with the current key; sig_b64 gets base64 of the 64-byte
 * signature (at least 89 bytes). 0 ok, -1 and *err. */
int proofs_keys_sign(const struct proofs_keys *k, const void *msg, size_t len, char *sig_b64,
                     char **err);

/* Adds a new current key and retires the old one (offline: a running daemon
 * picks it up at its next start). *new_id (malloc'd) names the new key. */
int proofs_keys_rotate(const char *data_dir, char **new_id, char **err);

/* Checks an Ed25519 signature (base64) with a raw public key (base64).
 * 1 valid, 0 invalid or malformed. */
int proofs_ed25519_verify(const char *pub_b64, const void *msg, size_t len, const char *sig_b64);

/* Base64 (standard alphabet, padded) helpers; decode returns the length or
 * -1. */
void proofs_b64_encode(const unsigned char *in, size_t n, char *out);
int proofs_b64_decode(const char *in, unsigned char *out, size_t cap);
/* The current time as RFC 3339 UTC with seconds ("2026-01-02T03:04:05Z"). */
void proofs_now_rfc3339(char out[32]);
