/* soup_hash.c: the soup hash (DESIGN.md 5), independent of device and
 * inference dtype. SHA-256 over, in this byte encoding:
 *   K                         int64 little-endian (8 bytes)
 *   then per tensor, in sorted (strcmp) name order:
 *     name length             uint32 LE, then the name bytes (no NUL)
 *     ndim                    uint32 LE, then each dim as int64 LE
 *     F                       int32 LE
 *     SHA-256(accumulator)    32 bytes; the accumulator as int64 LE values
 */
#include <openssl/evp.h>
#include <string.h>

#include "soup_internal.h"

static void put_le(EVP_MD_CTX *c, uint64_t v, int bytes) {
  uint8_t b[8];
  for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
  EVP_DigestUpdate(c, b, (size_t)bytes);
}

void soup_hash_combine(const struct soup *s, int64_t K, const uint8_t (*digests)[32],
                       char hex[65]) {
  uint8_t d[32];
  unsigned int len = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  memset(d, 0, sizeof d);
  if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1) {
    put_le(c, (uint64_t)K, 8);
    for (size_t i = 0; i < s->n; i++) {
      const struct soup_meta *m = &s->t[i];
      size_t nl = strlen(m->name);
      put_le(c, (uint64_t)nl, 4);
      EVP_DigestUpdate(c, m->name, nl);
      put_le(c, (uint64_t)m->ndim, 4);
      for (int k = 0; k < m->ndim; k++) put_le(c, (uint64_t)m->shape[k], 8);
      put_le(c, (uint64_t)(uint32_t)m->F, 4);
      EVP_DigestUpdate(c, digests[i], 32);
    }
    EVP_DigestFinal_ex(c, d, &len);
  }
  EVP_MD_CTX_free(c);
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = hx[d[i] >> 4];
    hex[2 * i + 1] = hx[d[i] & 15];
  }
  hex[64] = 0;
}

void soup_hash_hex(const struct soup *s, char hex[65]) {
  pthread_mutex_lock((pthread_mutex_t *)&s->mu);
  memcpy(hex, s->hash_hex, 65);
  pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}
