/* reads.h: the daemon's read use cases for the API (shards, the audit log,
 * soup history, counts, readiness, tokens). Each returns 0, or -1 with a
 * domain error in *e; the API shapes the reply and never opens the registry
 * itself. */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "app.h"
#include "engine/engine.h"
#include "generation.h"
#include "soup/soup.h"

/* {"shards": [...]}, filtered by status ("active"/"withdrawn"/NULL) and provider. */
int core_shards_list(struct app *a, const char *status, const char *provider, json_t **out,
                     struct op_error *e);
/* The shard object of id, and its owner's provider name (owner may be NULL). */
int core_shard_get(struct app *a, int64_t id, json_t **out, char *owner, size_t owner_len,
                   struct op_error *e);
/* {"events": [...]} with id > since, at most limit. */
int core_events_list(struct app *a, int64_t since, int64_t limit, json_t **out, struct op_error *e);
/* The audit log's hash chain walked from the start (registry_event_chain_verify). */
int core_events_verify(struct app *a, json_t **out, struct op_error *e);
/* {"versions": [...]} after since (-1: from the start), at most limit. */
int core_soup_history(struct app *a, int64_t since, int64_t limit, json_t **out,
                      struct op_error *e);
/* Shard counts by state (0 and 0 when the registry cannot answer). */
void core_shard_counts(struct app *a, int64_t *active, int64_t *withdrawn);
/* 1 while the registry has seen no I/O error. */
int core_registry_healthy(struct app *a);

/* A bearer token's identity. */
struct core_token {
  int64_t id;
  char role[16];
  char provider[160];
};
/* ERR_NOT_FOUND for an unknown or revoked token. */
int core_token_lookup(struct app *a, const char *token, struct core_token *t, struct op_error *e);

/* What /stats and /metrics show, read at one moment: counts, the soup, the
 * queue, generation statistics, update times and the process's resident set. */
struct core_stats {
  int64_t active, withdrawn;
  struct soup_stats soup;
  char hash[65];
  struct engine_stats eng;
  struct gen_stats gen;
  struct update_times times;
  long long rss;
};
void core_stats_get(struct app *a, struct core_stats *s);

/* Writes the live soup as a safetensors file (diffusers names, the inference
 * dtype, the base's sha256 in the metadata) to fp; *version and hash (hex)
 * name the version written; fp is flushed. ERR_INTERNAL when writing fails. */
int core_soup_export(struct app *a, FILE *fp, uint64_t *version, char hash[65], struct op_error *e);
