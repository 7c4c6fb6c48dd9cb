/* cli.c: `soupd key rotate` and `soupd verify-receipt` (cli.h). The
 * verification needs nothing from the server: the receipt file and a public
 * key, given as --key (a file or literal: raw key in base64 or 64 hex digits,
 * or a PEM public key), --keys (a saved GET /keys reply) or --data-dir (the
 * daemon's own keys/keys.json). */
#include "cli.h"

#include <ctype.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "keys.h"
#include "receipt.h"

int proofs_cli_key(int argc, char **argv) {
  const char *dir = "./var", *v;
  if (argc < 3 || strcmp(argv[2], "rotate") != 0) {
    fprintf(stderr, "usage: soupd key rotate --data-dir DIR\n");
    return 2;
  }
  for (int i = 3; i < argc; i++) {
    if ((v = config_flag_value(argc, argv, &i, "--data-dir")))
      dir = v;
    else {
      fprintf(stderr, "soupd key rotate: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  char *id = NULL, *err = NULL;
  if (proofs_keys_rotate(dir, &id, &err) != 0) {
    fprintf(stderr, "soupd key rotate: %s\n", err ? err : "failed");
    free(err);
    return 1;
  }
  printf("new signing key %s; the previous key is retired and still verifies old proofs "
         "(a running daemon signs with the new key after its next start)\n",
         id);
  free(id);
  return 0;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  char tmp[4096];
  size_t got;
  while ((got = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (n + got + 1 > cap) {
      cap = (n + got + 1) * 2;
      char *q = realloc(buf, cap);
      if (!q) break;
      buf = q;
    }
    memcpy(buf + n, tmp, got);
    n += got;
  }
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

/* The raw public key given on the command line, as base64 in out[64]. */
static int key_arg(const char *arg, char out[64], char *why, size_t why_len) {
  char *text = slurp(arg);
  const char *s = text ? text : arg;
  unsigned char raw[32];
  int ok = 0;
  if (strstr(s, "-----BEGIN")) {
    BIO *b = BIO_new_mem_buf(s, -1);
    EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    size_t len = sizeof raw;
    ok = pk && EVP_PKEY_get_raw_public_key(pk, raw, &len) == 1 && len == 32;
    EVP_PKEY_free(pk);
    BIO_free(b);
  } else {
    char t[200];
    size_t n = 0;
    for (const char *p = s; *p && n + 1 < sizeof t; p++)
      if (!isspace((unsigned char)*p)) t[n++] = *p;
    t[n] = 0;
    if (n == 64 && strspn(t, "0123456789abcdefABCDEF") == 64) {
      for (int i = 0; i < 32; i++) sscanf(t + 2 * i, "%2hhx", &raw[i]);
      ok = 1;
    } else {
      ok = proofs_b64_decode(t, raw, sizeof raw) == 32;
    }
  }
  free(text);
  if (!ok) {
    snprintf(why, why_len,
             "--key: not an Ed25519 public key (give a PEM file, 64 hex digits or the base64 "
             "of the raw 32 bytes)");
    return -1;
  }
  proofs_b64_encode(raw, 32, out);
  return 0;
}

int proofs_cli_verify_receipt(int argc, char **argv) {
  const char *file = NULL, *key = NULL, *keys_file = NULL, *dir = NULL, *v;
  for (int i = 2; i < argc; i++) {
    if ((v = config_flag_value(argc, argv, &i, "--key")))
      key = v;
    else if ((v = config_flag_value(argc, argv, &i, "--keys")))
      keys_file = v;
    else if ((v = config_flag_value(argc, argv, &i, "--data-dir")))
      dir = v;
    else if (!file && argv[i][0] != '-')
      file = argv[i];
    else {
      fprintf(stderr, "soupd verify-receipt: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!file || (!key && !keys_file && !dir)) {
    fprintf(stderr, "usage: soupd verify-receipt FILE (--key PUBKEY | --keys KEYS_JSON | "
                    "--data-dir DIR)\n");
    return 2;
  }
  char why[400] = "", pub[64];
  json_error_t je;
  json_t *doc = json_load_file(file, 0, &je), *keys = NULL;
  int rc = 1;
  if (!doc) {
    snprintf(why, sizeof why, "%s is not JSON: %s (line %d)", file, je.text, je.line);
    goto out;
  }
  json_t *receipt = json_object_get(doc, "receipt") ? json_object_get(doc, "receipt") : doc;
  if (key && key_arg(key, pub, why, sizeof why) != 0) goto out;
  if (!key) {
    char path[1200];
    if (!keys_file) snprintf(path, sizeof path, "%s/keys/keys.json", dir);
    keys = json_load_file(keys_file ? keys_file : path, 0, &je);
    if (!keys || !json_is_array(json_object_get(keys, "keys"))) {
      snprintf(why, sizeof why, "%s is not a key list (a saved GET /keys reply)",
               keys_file ? keys_file : path);
      goto out;
    }
  }
  if (proofs_object_verify(receipt, json_object_get(keys, "keys"), key ? pub : NULL, why,
                           sizeof why) != 0)
    goto out;
  const char *type = json_string_value(json_object_get(receipt, "type"));
  if (!type || strcmp(type, "soupd.receipt/1") != 0) {
    snprintf(why, sizeof why, "the signature is valid but this is not a soupd receipt (type %s)",
             type ? type : "missing");
    goto out;
  }
  char *sentence = proofs_receipt_sentence(receipt);
  printf("%s\n", sentence ? sentence : "Valid.");
  free(sentence);
  rc = 0;
out:
  if (rc) fprintf(stderr, "soupd verify-receipt: INVALID: %s\n", why);
  json_decref(doc);
  json_decref(keys);
  return rc;
}
