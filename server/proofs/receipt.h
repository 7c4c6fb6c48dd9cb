/* receipt.h: signing and checking soupd receipts, and any signed JSON
 * object: the signature covers the RFC 8785 encoding of the object without
 * its "signature" member, and the object names the "algorithm" ("ed25519")
 * and the "key_id" that signed it. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "keys.h"

/* Sets algorithm and key_id on obj, then signature. 0 ok, -1 and *err (a
 * real number anywhere in obj cannot be canonicalized and is refused). */
int proofs_object_sign(const struct proofs_keys *k, json_t *obj, char **err);

/* Checks obj's signature against the key in `keys` (an array of {key_id,
 * public_key}, as GET /keys lists them) that obj's key_id names, or against
 * pub_b64 when given (then key_id is not looked up). 0 valid; -1 with the
 * reason in why. */
int proofs_object_verify(const json_t *obj, const json_t *keys, const char *pub_b64, char *why,
                         size_t why_len);

/* One sentence saying what a valid receipt proves (malloc'd). */
char *proofs_receipt_sentence(const json_t *receipt);
