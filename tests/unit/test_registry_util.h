/* test_registry_util.h: the fixture every registry test uses: a fresh
 * temporary directory holding registry.db, removed with its WAL/SHM files
 * afterwards, and a raw one-integer query for checking tables directly. */
#pragma once

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "registry/registry.h"

struct fx {
  char dir[64];
  char path[128];
  struct registry *r; /* opened by the tests that want it */
};

/* A new fixture in *state (directory created, registry not opened). */
static inline int fx_make(void **state, const char *tag) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/soupd-%s-XXXXXX", tag);
  if (!mkdtemp(f->dir)) {
    free(f);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s/registry.db", f->dir);
  *state = f;
  return 0;
}

/* Closes the registry if open and removes every file of the fixture. */
static inline int fx_remove(void **state) {
  struct fx *f = *state;
  registry_close(f->r);
  const char *sfx[] = {"", "-wal", "-shm", "-journal"};
  char p[160];
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
    unlink(p);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

static inline int64_t raw_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}
