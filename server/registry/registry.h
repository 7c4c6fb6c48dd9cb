/* registry.h: the SQLite registry, soupd's source of truth (DESIGN 5.6, 7, 9).
 *
 * Holds shards, bearer tokens (hashes only), the append-only audit log and the
 * soup version history, in one SQLite file opened in WAL mode with
 * synchronous=FULL, foreign_keys=ON and a busy timeout. registry_open reads
 * every pragma back and refuses to open if one is not in force
 * (reliability item 18), migrates the schema (embedded schema/NNNN_*.sql,
 * tracked by PRAGMA user_version, append-only; a newer DB is refused) and runs
 * quick_check.
 *
 * Threads: one connection guarded by one RECURSIVE mutex. Every function below
 * may be called from any thread; each takes the mutex for its duration.
 * registry_begin takes the mutex and KEEPS it until registry_commit or
 * registry_rollback (called by the same thread), so a multi-statement
 * transaction ("insert shard + audit event + soup version", DESIGN 5.6) is
 * never interleaved with another thread's statements: other threads simply
 * wait. registry_lock/unlock hold the mutex across several reads. Do not
 * carry a registry across fork(): open a new one in the child.
 *
 * Outside a transaction each function is atomic on its own (autocommit).
 *
 * Errors: 0 on success, a negative REGISTRY_E* code on failure; where an
 * `err` pointer is given (may be NULL) it receives a malloc'd message the
 * caller frees. SQLite failures carry the SQL statement and the source
 * file:line in the message (for logs, not for HTTP bodies).
 *
 * Times are RFC 3339 UTC with milliseconds, "2026-11-25T19:01:02.123Z".
 * Weights are stored quantized: weight_q is an int64 in units of 2^-16
 * (REGISTRY_WEIGHT_ONE == weight 1.0); JSON reports weight_q / 65536.0.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct registry;

/* ---- error codes ---- */
#define REGISTRY_OK 0
#define REGISTRY_EFAIL (-1)     /* SQLite or internal failure (-> 500) */
#define REGISTRY_ENOTFOUND (-2) /* no such row (-> 404) */
#define REGISTRY_ECONFLICT (-3) /* unique index or state conflict (-> 409) */
#define REGISTRY_EINVAL (-4)    /* bad argument (-> 400/422) */
#define REGISTRY_EBUSY (-5)     /* database locked past the busy timeout (-> 503) */
/* An I/O error or corruption reported by SQLite. If it happened at a commit
 * (also the implicit commit of a single statement) the OUTCOME IS UNKNOWN: a
 * commit whose fsync failed may still be found committed after a crash
 * (seen with SQLite 3.40; test_registry_ioerr.c). So the registry poisons
 * itself: every later call returns REGISTRY_EIO until it is closed and
 * re-opened (restart), when SQLite recovery decides. The caller must not act
 * on the change as failed (e.g. delete a stored file) nor as done: stop
 * being ready (-> 503) and restart. ENOSPC (SQLITE_FULL) is a clean failure
 * (-> EFAIL, nothing written) and does not poison. */
#define REGISTRY_EIO (-6)

#define REGISTRY_WEIGHT_ONE 65536 /* weight_q of weight 1.0 (unit 2^-16) */
#define REGISTRY_BUSY_TIMEOUT_MS 5000
#define REGISTRY_NAME_MAX 128 /* max bytes of a shard or provider name */
#define REGISTRY_ROLE_MAX 16

/* ---- open / close / integrity ---- */

/* Opens or creates the database at `path` (file mode 0600), sets and verifies
 * the pragmas, migrates, runs quick_check. On failure *out is NULL. */
int registry_open(const char *path, struct registry **out, char **err);
/* Closes the connection (checkpoints the WAL). NULL is a no-op. Must not be
 * called inside a transaction or while another thread uses the registry. */
void registry_close(struct registry *r);
/* 1 while usable, 0 once poisoned by an I/O error (see REGISTRY_EIO). */
int registry_healthy(struct registry *r);
/* Full PRAGMA integrity_check; REGISTRY_EFAIL with the report if not "ok". */
int registry_integrity_check(struct registry *r, char **err);
/* Schema version (PRAGMA user_version) and number of embedded migrations. */
int registry_schema_version(struct registry *r, int *db_version, int *binary_version);

/* ---- locking and transactions ---- */

void registry_lock(struct registry *r); /* recursive */
void registry_unlock(struct registry *r);
/* BEGIN IMMEDIATE (takes the write lock up front, waiting up to the busy
 * timeout). Holds the registry mutex until commit/rollback. No nesting. */
int registry_begin(struct registry *r, char **err);
/* COMMIT; on failure the transaction is rolled back. Releases the mutex
 * in both cases. REGISTRY_EINVAL if this thread has no open transaction. */
int registry_commit(struct registry *r, char **err);
/* ROLLBACK; releases the mutex. A no-op (returns 0) without a transaction. */
int registry_rollback(struct registry *r);
/* 1 if the calling thread has a transaction open. */
int registry_in_transaction(struct registry *r);

/* ---- shards ---- */

enum registry_shard_status { REGISTRY_SHARD_ACTIVE = 0, REGISTRY_SHARD_WITHDRAWN = 1 };

/* Input of registry_shard_insert. Borrowed; strings must be UTF-8. */
struct registry_shard_new {
  const char *name;        /* 1..REGISTRY_NAME_MAX bytes */
  const char *provider;    /* 1..REGISTRY_NAME_MAX bytes */
  int64_t weight_q;        /* > 0 */
  const char *sha256;      /* 64 lowercase hex */
  int64_t size_bytes;      /* >= 0 */
  const char *dtype;       /* e.g. "F16" */
  int64_t tensors, params; /* >= 0 */
  const char *description; /* NULL -> "" */
  const json_t *metadata;  /* a JSON object, or NULL -> {} */
};

/* A shard row. Owned strings; release with registry_shard_clear. */
struct registry_shard {
  int64_t id;
  char *name, *provider;
  enum registry_shard_status status;
  int64_t weight_q;
  char sha256[65];
  int64_t size_bytes;
  char *dtype;
  int64_t tensors, params;
  char *description;
  json_t *metadata; /* object, owned (one reference) */
  char *created_at;
  char *withdrawn_at;    /* NULL while active */
  char *withdraw_reason; /* NULL while active */
};

void registry_shard_clear(struct registry_shard *s);
/* The API.md shard object: id, name, provider, status, weight (weight_q /
 * 65536.0), sha256, size_bytes, dtype, tensors, params, description,
 * metadata, created_at, withdrawn_at. With `internal` != 0 it also has
 * "weight_q" and "withdraw_reason" (for logs/admin views, not the public API).
 * Returns a new reference, NULL on allocation failure. */
json_t *registry_shard_to_json(const struct registry_shard *s, int internal);

/* Inserts an active shard; *id_out gets its id (ids are never reused).
 * REGISTRY_ECONFLICT if an ACTIVE shard already has this name, or this
 * sha256 (one active row per stored file, so a purge never deletes a file
 * another active shard uses); the message says which. */
int registry_shard_insert(struct registry *r, const struct registry_shard_new *in, int64_t *id_out,
                          char **err);
/* REGISTRY_ENOTFOUND if no such id / no active shard of that name. */
int registry_shard_get(struct registry *r, int64_t id, struct registry_shard *out, char **err);
int registry_shard_get_active_by_name(struct registry *r, const char *name,
                                      struct registry_shard *out, char **err);
/* Rows ordered by id. status: "active", "withdrawn" or NULL (all); provider
 * NULL for all. *rows is a malloc'd array (NULL when *n == 0); free with
 * registry_shard_rows_free. REGISTRY_EINVAL on an unknown status. */
int registry_shard_list(struct registry *r, const char *status, const char *provider,
                        struct registry_shard **rows, size_t *n, char **err);
void registry_shard_rows_free(struct registry_shard *rows, size_t n);
/* Same filter, as the API body {"shards": [shard objects]} (new reference). */
int registry_shard_list_json(struct registry *r, const char *status, const char *provider,
                             json_t **out, char **err);
/* active -> withdrawn, sets withdrawn_at = now and the reason (NULL -> "").
 * REGISTRY_ENOTFOUND unknown id; REGISTRY_ECONFLICT already withdrawn.
 * A withdrawn row is final: the schema refuses any later UPDATE of it. */
int registry_shard_withdraw(struct registry *r, int64_t id, const char *reason, char **err);
/* Sets weight_q (> 0) of an active shard. ENOTFOUND / ECONFLICT (withdrawn). */
int registry_shard_set_weight(struct registry *r, int64_t id, int64_t weight_q, char **err);
/* Number of active and of withdrawn shards (for /stats); either may be NULL. */
int registry_shard_counts(struct registry *r, int64_t *active, int64_t *withdrawn, char **err);
/* Shard rows are never deleted (a trigger refuses DELETE): a failed
 * registration must roll its transaction back instead. */

/* ---- tokens ---- */

/* Role "admin", "provider" or "client". `provider` (a name, 1..
 * REGISTRY_NAME_MAX bytes of [A-Za-z0-9._-]) is required for role provider
 * and refused for the others. Generates 32 random bytes (RAND_bytes); the
 * token is "sdp_" + 64 hex chars, returned ONCE in *token_out (malloc'd, the
 * caller frees and should wipe it); only its SHA-256 (hex) is stored.
 * token_id may be NULL. */
int registry_token_create(struct registry *r, const char *role, const char *provider,
                          char **token_out, int64_t *token_id, char **err);

struct registry_token {
  int64_t id;
  char role[REGISTRY_ROLE_MAX];         /* "admin" | "provider" | "client" */
  char provider[REGISTRY_NAME_MAX + 1]; /* "" unless role provider */
};
/* Looks up a presented token (the full "sdp_..." string). REGISTRY_ENOTFOUND
 * for an unknown, malformed or revoked token. */
int registry_token_lookup(struct registry *r, const char *token, struct registry_token *out,
                          char **err);
/* Sets revoked_at. ENOTFOUND unknown id; ECONFLICT already revoked. */
int registry_token_revoke(struct registry *r, int64_t id, char **err);
/* Number of unrevoked tokens of `role` (NULL: all roles); for the first-start
 * "create an admin token if none" logic. */
int registry_token_count(struct registry *r, const char *role, int64_t *n, char **err);

/* ---- audit events (append-only: the schema aborts UPDATE and DELETE) ---- */

#define REGISTRY_OUTCOME_OK "ok"
#define REGISTRY_OUTCOME_DENIED "denied"
#define REGISTRY_OUTCOME_FAILED "failed"

/* Input of registry_event_append. Borrowed. NULL / 0 / -1 fields are stored
 * as SQL NULL as noted. */
struct registry_event {
  const char *type;                                /* required, e.g. "shard.withdrawn" */
  const char *principal;                           /* e.g. "provider:acme", NULL */
  int64_t token_id;                                /* 0 -> NULL */
  int64_t shard_id;                                /* 0 -> NULL */
  const char *sha256;                              /* shard file hash, NULL */
  int64_t soup_version_before, soup_version_after; /* -1 -> NULL */
  const char *soup_hash_before, *soup_hash_after;  /* NULL */
  const json_t *members;                           /* JSON array: ordered member set after, NULL */
  const char *base_sha256;                         /* base UNet hash, NULL */
  const char *algorithm;                           /* algorithm version string, NULL */
  const char *outcome;                             /* REGISTRY_OUTCOME_*, required */
  const json_t *detail;                            /* JSON object, NULL -> {} */
};

int registry_event_append(struct registry *r, const struct registry_event *ev, int64_t *id_out,
                          char **err);
/* Events with id > since_id, ascending, at most `limit` (1..1000; <= 0 means
 * 100), as {"events": [ {id, at, type, principal, token_id, shard_id, sha256,
 * soup_version_before, soup_version_after, soup_hash_before,
 * soup_hash_after, members, base_sha256, algorithm, outcome, detail} ]}. */
int registry_event_list(struct registry *r, int64_t since_id, int64_t limit, json_t **out,
                        char **err);

/* The audit hash chain (schema 0003, proofs/chain.h): the number of columns
 * hashed per event, and a walk of the whole log that stops at the first
 * broken link: {"ok", "events", "chained", "last_event_id", "head_hash",
 * "first_broken": null | {"event_id", "reason"}}. */
#define REGISTRY_EVENT_CHAIN_FIELDS 15
int registry_event_chain_verify(struct registry *r, json_t **out, char **err);
/* The stored chain hash of event id ("" for an unchained legacy event). */
int registry_event_hash(struct registry *r, int64_t id, char out[65], char **err);
/* The signed checkpoints of the chain head (append-only), inside the change's
 * transaction; the list gives their bodies, oldest first. */
int registry_checkpoint_insert(struct registry *r, int64_t event_id, const char *head_hash,
                               const json_t *body, char **err);
int registry_checkpoint_list(struct registry *r, json_t **out, char **err);

/* ---- receipts (schema 0002; append-only) ---- */

/* Stores a signed receipt of a change to shard_id recorded by event_id;
 * inside the change's transaction. */
int registry_receipt_insert(struct registry *r, int64_t shard_id, int64_t event_id,
                            const json_t *body, char **err);
/* The receipts of shard_id, oldest first, as a JSON array (empty when none). */
int registry_receipt_list(struct registry *r, int64_t shard_id, json_t **out, char **err);

/* ---- soup versions (append-only; versions strictly increase) ---- */

struct registry_soup_version {
  int64_t version;
  char hash[65];
  char at[32];
  int64_t event_id; /* 0 when none */
  json_t *members;  /* JSON array, owned (one reference) */
};
void registry_soup_version_clear(struct registry_soup_version *v);

/* version >= 0 and greater than every stored one (else ECONFLICT); hash 64
 * hex; event_id 0 -> NULL (must name an existing event otherwise); members a
 * JSON array (NULL -> []). */
int registry_soup_version_insert(struct registry *r, int64_t version, const char *hash,
                                 int64_t event_id, const json_t *members, char **err);
/* Latest version; REGISTRY_ENOTFOUND if there is none yet. */
int registry_soup_version_latest(struct registry *r, struct registry_soup_version *out, char **err);
/* Versions > since_version, ascending, at most limit (as events), as
 * {"versions": [{"version", "hash", "at", "event_id", "event_type", "members"}]}. */
int registry_soup_version_list(struct registry *r, int64_t since_version, int64_t limit,
                               json_t **out, char **err);
