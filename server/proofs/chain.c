/* chain.c: one link of the audit hash chain (chain.h). */
#include "chain.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void proofs_chain_hash(const char *prev_hex, const char *const *fields, size_t n, char out[65]) {
  static const char tag[] = "soupd.audit/1\n";
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  EVP_DigestUpdate(c, tag, sizeof tag - 1);
  EVP_DigestUpdate(c, prev_hex, strlen(prev_hex));
  for (size_t i = 0; i < n; i++) {
    unsigned char head[9] = {0};
    if (!fields[i]) {
      EVP_DigestUpdate(c, head, 1);
      continue;
    }
    uint64_t len = strlen(fields[i]);
    head[0] = 1;
    for (int b = 0; b < 8; b++) head[1 + b] = (unsigned char)(len >> (56 - 8 * b));
    EVP_DigestUpdate(c, head, sizeof head);
    EVP_DigestUpdate(c, fields[i], len);
  }
  unsigned char md[32];
  EVP_DigestFinal_ex(c, md, NULL);
  EVP_MD_CTX_free(c);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}
