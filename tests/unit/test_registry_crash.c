/* test_registry_crash.c: real crashes (fork + SIGKILL) against a real
 * registry file (reliability items 4, 5 and 10; SQLite's own crash tests).
 *  - a child commits a withdrawal transaction (shard + audit event + soup
 *    version) and SIGKILLs itself right after the commit: the parent
 *    re-opens and sees all of it;
 *  - a child SIGKILLs itself inside an uncommitted transaction: nothing of it
 *    is visible;
 *  - a child commits registrations in a loop, acknowledging each commit on a
 *    pipe, and the parent SIGKILLs it at a random moment: every acknowledged
 *    commit is present, and every registration is whole or absent.
 * integrity_check passes after each crash. The parent never holds a
 * connection across fork(); each child opens its own. Children report
 * failure with _exit(2..), never through cmocka. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
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
  if (fx_make(state, "regcrash") != 0) return -1;
  return 0;
}

static int teardown(void **state) {
  return fx_remove(state);
}

static void fake_sha(char out[65], int seed) {
  snprintf(out, 65, "%064x", seed);
}

/* Registers shard `name` with its event and soup version `version` in one
 * transaction. Returns 0 or a negative code (child-safe: no cmocka). */
static int register_tx(struct registry *r, const char *name, int seed, int64_t version) {
  char sha[65];
  fake_sha(sha, seed);
  struct registry_shard_new in = {.name = name,
                                  .provider = "acme",
                                  .weight_q = REGISTRY_WEIGHT_ONE,
                                  .sha256 = sha,
                                  .size_bytes = 10,
                                  .dtype = "F32",
                                  .tensors = 1,
                                  .params = 2};
  int64_t id = 0, ev_id = 0;
  int rc = registry_begin(r, NULL);
  if (rc) return rc;
  if ((rc = registry_shard_insert(r, &in, &id, NULL))) goto fail;
  struct registry_event ev = {.type = "shard.registered",
                              .principal = "provider:acme",
                              .shard_id = id,
                              .sha256 = sha,
                              .soup_version_before = version - 1,
                              .soup_version_after = version,
                              .outcome = REGISTRY_OUTCOME_OK};
  if ((rc = registry_event_append(r, &ev, &ev_id, NULL))) goto fail;
  if ((rc = registry_soup_version_insert(r, version, sha, ev_id, NULL, NULL))) goto fail;
  return registry_commit(r, NULL);
fail:
  registry_rollback(r);
  return rc;
}

/* Withdraws shard `id` with its event and soup version; commit or not. */
static int withdraw_tx(struct registry *r, int64_t id, int64_t version, int commit) {
  int rc = registry_begin(r, NULL);
  if (rc) return rc;
  if ((rc = registry_shard_withdraw(r, id, "consent withdrawn", NULL))) goto fail;
  struct registry_event ev = {.type = "shard.withdrawn",
                              .principal = "provider:acme",
                              .shard_id = id,
                              .soup_version_before = version - 1,
                              .soup_version_after = version,
                              .outcome = REGISTRY_OUTCOME_OK};
  int64_t ev_id = 0;
  if ((rc = registry_event_append(r, &ev, &ev_id, NULL))) goto fail;
  char h[65];
  fake_sha(h, 1000 + (int)version);
  if ((rc = registry_soup_version_insert(r, version, h, ev_id, NULL, NULL))) goto fail;
  if (commit) return registry_commit(r, NULL);
  return 0; /* left open on purpose */
fail:
  registry_rollback(r);
  return rc;
}

/* Creates the file with shard "a" registered as soup version 1. */
static void seed_db(const char *path) {
  struct registry *r = NULL;
  char *err = NULL;
  assert_int_equal(registry_open(path, &r, &err), 0);
  assert_int_equal(register_tx(r, "a", 1, 1), 0);
  registry_close(r);
}

/* Forks a child running fn(path, arg); expects it to die by SIGKILL. */
static void run_child_expect_kill(const char *path, int (*fn)(const char *, int), int arg) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(fn(path, arg)); /* fn only returns on failure */
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status)) fprintf(stderr, "child exited with %d\n", WEXITSTATUS(status));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
}

static int child_withdraw(const char *path, int commit) {
  struct registry *r = NULL;
  if (registry_open(path, &r, NULL) != 0) return 2;
  if (withdraw_tx(r, 1, 2, commit) != 0) return 3;
  kill(getpid(), SIGKILL); /* right after COMMIT returned (or inside the tx) */
  return 4;
}

static void check_after_crash(const char *path, int withdrawn) {
  struct registry *r = NULL;
  char *err = NULL;
  int rc = registry_open(path, &r, &err);
  if (rc) fprintf(stderr, "reopen: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(registry_integrity_check(r, NULL), 0);
  struct registry_shard s;
  assert_int_equal(registry_shard_get(r, 1, &s, NULL), 0);
  assert_int_equal(s.status, withdrawn ? REGISTRY_SHARD_WITHDRAWN : REGISTRY_SHARD_ACTIVE);
  registry_shard_clear(&s);
  assert_int_equal(raw_int(r->db, "SELECT count(*) FROM events WHERE type = 'shard.withdrawn'"),
                   withdrawn);
  struct registry_soup_version v;
  assert_int_equal(registry_soup_version_latest(r, &v, NULL), 0);
  assert_int_equal(v.version, withdrawn ? 2 : 1);
  registry_soup_version_clear(&v);
  /* The registry is usable after recovery: the uncommitted withdrawal can
   * now be done for real, the committed one is refused as a repeat. */
  assert_int_equal(withdraw_tx(r, 1, 2, 1), withdrawn ? REGISTRY_ECONFLICT : 0);
  registry_close(r);
}

static void test_kill_after_commit(void **state) {
  struct fx *f = *state;
  seed_db(f->path);
  run_child_expect_kill(f->path, child_withdraw, 1);
  check_after_crash(f->path, 1);
}

static void test_kill_inside_transaction(void **state) {
  struct fx *f = *state;
  seed_db(f->path);
  run_child_expect_kill(f->path, child_withdraw, 0);
  check_after_crash(f->path, 0);
}

/* Registers shards "s<i>" as versions i + 2 forever, writing i to fd after
 * each commit. Killed by the parent. */
static int child_register_loop(const char *path, int fd) {
  struct registry *r = NULL;
  if (registry_open(path, &r, NULL) != 0) return 2;
  struct registry_soup_version v;
  if (registry_soup_version_latest(r, &v, NULL) != 0) return 3;
  int64_t next = v.version + 1;
  registry_soup_version_clear(&v);
  for (;; next++) {
    char name[32];
    snprintf(name, sizeof name, "s%lld", (long long)next);
    if (register_tx(r, name, (int)next, next) != 0) return 4;
    int64_t done = next;
    if (write(fd, &done, sizeof done) != sizeof done) return 5;
  }
}

static int g_pipe_w = -1;
static int child_loop_entry(const char *path, int unused) {
  (void)unused;
  return child_register_loop(path, g_pipe_w);
}

static void test_kill_at_random_points(void **state) {
  struct fx *f = *state;
  seed_db(f->path);
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  for (int round = 0; round < 20; round++) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    g_pipe_w = p[1];
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      _exit(child_loop_entry(f->path, 0));
    }
    close(p[1]);
    /* Wait for a random number of acknowledged commits, then a random
     * sub-millisecond delay, then SIGKILL. */
    int want = 1 + rand() % 8;
    int64_t acked = 0, got = 0;
    for (int k = 0; k < want; k++) {
      ssize_t n = read(p[0], &got, sizeof got);
      assert_int_equal(n, sizeof got);
      acked = got;
    }
    struct timespec ts = {0, (long)(rand() % 1000) * 1000L};
    nanosleep(&ts, NULL);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    /* Acknowledgements that were still in the pipe count too. */
    while (read(p[0], &got, sizeof got) == sizeof got) acked = got;
    close(p[0]);

    struct registry *r = NULL;
    assert_int_equal(registry_open(f->path, &r, NULL), 0);
    assert_int_equal(registry_integrity_check(r, NULL), 0);
    struct registry_soup_version v;
    assert_int_equal(registry_soup_version_latest(r, &v, NULL), 0);
    assert_true(v.version >= acked); /* every acknowledged commit survived */
    /* Whole or absent: one shard, one event and one version per
     * registration, all linked, versions contiguous from 1. */
    int64_t shards = raw_int(r->db, "SELECT count(*) FROM shards");
    assert_int_equal(shards, v.version);
    assert_int_equal(raw_int(r->db, "SELECT count(*) FROM events"), shards);
    assert_int_equal(raw_int(r->db, "SELECT count(*) FROM soup_versions"), shards);
    assert_int_equal(raw_int(r->db, "SELECT count(*) FROM shards s JOIN events e ON e.shard_id = "
                                    "s.id JOIN soup_versions v ON v.event_id = e.id"),
                     shards);
    registry_soup_version_clear(&v);
    registry_close(r);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_kill_after_commit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_inside_transaction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_at_random_points, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
