/* test_registry_threads.c: concurrency on one registry file.
 *  - a transaction holds the registry mutex: another thread's statement
 *    waits for it to end and is not swept into (or rolled back with) it;
 *  - several threads run "shard + event" transactions while a reader lists:
 *    every transaction lands whole;
 *  - two processes (two connections) write at once: BEGIN IMMEDIATE and the
 *    busy timeout serialize them without SQLITE_BUSY failures. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "registry/registry.h"
#include "registry/registry_impl.h"
#include "test_registry_util.h"

static int setup(void **state) {
  if (fx_make(state, "regthr") != 0) return -1;
  return 0;
}

static int teardown(void **state) {
  return fx_remove(state);
}

/* shard "<prefix><n>" + its event, one transaction. 0 or negative. */
static int register_tx(struct registry *r, const char *prefix, int n) {
  char name[48], sha[65];
  snprintf(name, sizeof name, "%s%d", prefix, n);
  snprintf(sha, sizeof sha, "%032x%032x", (unsigned)(prefix[0] & 0xff), (unsigned)n);
  struct registry_shard_new in = {.name = name,
                                  .provider = "acme",
                                  .weight_q = REGISTRY_WEIGHT_ONE,
                                  .sha256 = sha,
                                  .dtype = "F32"};
  int64_t id = 0;
  int rc = registry_begin(r, NULL);
  if (rc) return rc;
  if ((rc = registry_shard_insert(r, &in, &id, NULL))) goto fail;
  struct registry_event ev = {.type = "shard.registered",
                              .shard_id = id,
                              .soup_version_before = -1,
                              .soup_version_after = -1,
                              .outcome = REGISTRY_OUTCOME_OK};
  if ((rc = registry_event_append(r, &ev, NULL, NULL))) goto fail;
  return registry_commit(r, NULL);
fail:
  registry_rollback(r);
  return rc;
}

struct blocker {
  struct registry *r;
  atomic_int a_in_tx;  /* A has its transaction open */
  atomic_int a_ending; /* A is about to roll back */
  int b_saw_a_ending;  /* B's append returned after A ended */
  int b_rc;
};

static void *thread_b(void *arg) {
  struct blocker *b = arg;
  while (!atomic_load(&b->a_in_tx)) usleep(100);
  struct registry_event ev = {.type = "from.b",
                              .soup_version_before = -1,
                              .soup_version_after = -1,
                              .outcome = REGISTRY_OUTCOME_OK};
  b->b_rc = registry_event_append(b->r, &ev, NULL, NULL); /* must wait for A */
  b->b_saw_a_ending = atomic_load(&b->a_ending);
  return NULL;
}

static void test_transaction_excludes_other_threads(void **state) {
  struct fx *f = *state;
  struct blocker b = {0};
  assert_int_equal(registry_open(f->path, &b.r, NULL), 0);
  pthread_t tb;
  assert_int_equal(pthread_create(&tb, NULL, thread_b, &b), 0);
  /* Thread A (this one). */
  assert_int_equal(registry_begin(b.r, NULL), 0);
  struct registry_event ev = {.type = "from.a",
                              .soup_version_before = -1,
                              .soup_version_after = -1,
                              .outcome = REGISTRY_OUTCOME_OK};
  assert_int_equal(registry_event_append(b.r, &ev, NULL, NULL), 0);
  atomic_store(&b.a_in_tx, 1);
  usleep(100 * 1000); /* B is now blocked on the registry mutex */
  atomic_store(&b.a_ending, 1);
  assert_int_equal(registry_rollback(b.r), 0);
  assert_int_equal(pthread_join(tb, NULL), 0);
  assert_int_equal(b.b_rc, 0);
  assert_true(b.b_saw_a_ending);
  assert_int_equal(raw_int(b.r->db, "SELECT count(*) FROM events WHERE type = 'from.a'"), 0);
  assert_int_equal(raw_int(b.r->db, "SELECT count(*) FROM events WHERE type = 'from.b'"), 1);
  registry_close(b.r);
}

#define WRITERS 4
#define PER_WRITER 25

struct worker {
  struct registry *r;
  int idx;
  int failures;
  atomic_int *stop;
};

static void *writer(void *arg) {
  struct worker *w = arg;
  char prefix[8];
  snprintf(prefix, sizeof prefix, "%c", 'a' + w->idx);
  for (int i = 0; i < PER_WRITER; i++)
    if (register_tx(w->r, prefix, i) != 0) w->failures++;
  return NULL;
}

static void *reader(void *arg) {
  struct worker *w = arg;
  while (!atomic_load(w->stop)) {
    json_t *body = NULL;
    if (registry_shard_list_json(w->r, "active", NULL, &body, NULL) != 0) w->failures++;
    json_decref(body);
    if (registry_event_list(w->r, 0, 50, &body, NULL) != 0) w->failures++;
    json_decref(body);
  }
  return NULL;
}

static void test_threads_write_whole(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  atomic_int stop = 0;
  pthread_t th[WRITERS + 1];
  struct worker w[WRITERS + 1];
  for (int i = 0; i <= WRITERS; i++) {
    w[i] = (struct worker){.r = r, .idx = i, .stop = &stop};
    assert_int_equal(pthread_create(&th[i], NULL, i < WRITERS ? writer : reader, &w[i]), 0);
  }
  for (int i = 0; i < WRITERS; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  atomic_store(&stop, 1);
  assert_int_equal(pthread_join(th[WRITERS], NULL), 0);
  for (int i = 0; i <= WRITERS; i++) assert_int_equal(w[i].failures, 0);
  assert_int_equal(raw_int(r->db, "SELECT count(*) FROM shards"), WRITERS * PER_WRITER);
  assert_int_equal(raw_int(r->db, "SELECT count(*) FROM events e JOIN shards s ON s.id = "
                                  "e.shard_id"),
                   WRITERS * PER_WRITER);
  registry_close(r);
}

static void test_two_processes(void **state) {
  struct fx *f = *state;
  struct registry *r = NULL;
  assert_int_equal(registry_open(f->path, &r, NULL), 0); /* migrate once */
  registry_close(r);
  fflush(NULL);
  pid_t pids[2];
  for (int c = 0; c < 2; c++) {
    pids[c] = fork();
    assert_true(pids[c] >= 0);
    if (pids[c] == 0) {
      struct registry *cr = NULL;
      if (registry_open(f->path, &cr, NULL) != 0) _exit(2);
      for (int i = 0; i < 20; i++)
        if (register_tx(cr, c ? "q" : "p", i) != 0) _exit(3);
      registry_close(cr);
      _exit(0);
    }
  }
  for (int c = 0; c < 2; c++) {
    int status = 0;
    assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  assert_int_equal(registry_open(f->path, &r, NULL), 0);
  assert_int_equal(raw_int(r->db, "SELECT count(*) FROM shards"), 40);
  assert_int_equal(raw_int(r->db, "SELECT count(*) FROM events"), 40);
  assert_int_equal(registry_integrity_check(r, NULL), 0);
  registry_close(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_transaction_excludes_other_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_write_whole, setup, teardown),
      cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
