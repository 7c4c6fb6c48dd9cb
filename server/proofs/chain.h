/* chain.h: the audit log's hash chain (DESIGN.md 10). Each event's hash is
 * SHA-256 over "soupd.audit/1\n", the previous event's hash (64 hex digits;
 * 64 zeros for the first) and the event's stored columns in a fixed order,
 * each as 0x00 (SQL NULL) or 0x01, an 8-byte big-endian length and the
 * column's text exactly as stored. Editing, deleting, inserting or
 * reordering a row breaks the chain at that row. */
#pragma once

#include <stddef.h>

#define PROOFS_CHAIN_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

/* out[65] gets the hex hash; fields[i] NULL is SQL NULL. */
void proofs_chain_hash(const char *prev_hex, const char *const *fields, size_t n, char out[65]);
