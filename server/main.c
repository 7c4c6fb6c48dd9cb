/* main.c: the command line (API.md), then
 * config -> registry -> base model -> soup -> HTTP -> wait for a signal ->
 * drain -> close. SIGTERM and SIGINT are blocked in every thread and taken
 * synchronously here, so shutdown runs in normal code, never in a handler. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#if __has_include("diffusion/tokenizer.h")
#include "diffusion/tokenizer.h"
#define HAVE_TOKENIZER 1
#endif
#include "core/app.h"
#include "engine/engine.h"
#include "http/server.h"
#include "log.h"
#include "proofs/cli.h"
#include "registry/registry.h"
#include "kernels/backends.h"
#include "version.h"

#ifndef SOUPD_DEFAULT_MODEL_DIR
#define SOUPD_DEFAULT_MODEL_DIR "model"
#endif

static void usage(FILE *f) {
  fprintf(f, "usage:\n"
             "  soupd [--config FILE] [--listen ADDR:PORT] [--data-dir DIR] [--model DIR]\n"
             "        [--device auto|cpu|cuda[:N]] [--log-level LEVEL] [--<option> VALUE ...]\n"
             "  soupd token create --data-dir DIR --role admin|provider|client [--provider NAME]\n"
             "  soupd tokenize --model DIR TEXT\n"
             "  soupd key rotate --data-dir DIR\n"
             "  soupd audit verify --data-dir DIR\n"
             "  soupd verify-receipt FILE (--key PUBKEY | --keys KEYS_JSON | --data-dir DIR)\n"
             "  soupd version\n"
             "  soupd config        print every option with its default\n");
}

static int cmd_token(int argc, char **argv) {
  const char *dir = "./var", *role = NULL, *provider = NULL, *v;
  if (argc < 3 || strcmp(argv[2], "create") != 0) {
    usage(stderr);
    return 2;
  }
  for (int i = 3; i < argc; i++) {
    if ((v = config_flag_value(argc, argv, &i, "--data-dir")))
      dir = v;
    else if ((v = config_flag_value(argc, argv, &i, "--role")))
      role = v;
    else if ((v = config_flag_value(argc, argv, &i, "--provider")))
      provider = v;
    else {
      fprintf(stderr, "soupd token create: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!role) {
    fprintf(stderr, "soupd token create: --role is required\n");
    return 2;
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/soupd.db", dir);
  struct registry *reg = NULL;
  char *err = NULL, *tok = NULL;
  if (registry_open(path, &reg, &err) != 0 ||
      registry_token_create(reg, role, provider, &tok, NULL, &err) != 0) {
    fprintf(stderr, "soupd token create: %s\n", err ? err : "failed");
    free(err);
    registry_close(reg);
    return 1;
  }
  printf("%s\n", tok);
  memset(tok, 0, strlen(tok));
  free(tok);
  registry_close(reg);
  return 0;
}

/* soupd audit verify --data-dir DIR: walks the audit log's hash chain in the
 * SQLite file (no daemon needed); exit 1 at the first broken link. */
static int cmd_audit(int argc, char **argv) {
  const char *dir = "./var", *v;
  if (argc < 3 || strcmp(argv[2], "verify") != 0) {
    usage(stderr);
    return 2;
  }
  for (int i = 3; i < argc; i++) {
    if ((v = config_flag_value(argc, argv, &i, "--data-dir")))
      dir = v;
    else {
      fprintf(stderr, "soupd audit verify: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/soupd.db", dir);
  struct registry *reg = NULL;
  char *err = NULL;
  json_t *out = NULL;
  char kpath[1200];
  snprintf(kpath, sizeof kpath, "%s/keys/keys.json", dir);
  json_t *keys = json_load_file(kpath, 0, NULL); /* the public keys; NULL: none yet */
  if (registry_open(path, &reg, &err) != 0 ||
      app_audit_verify(reg, json_object_get(keys, "keys"), &out, &err) != 0) {
    json_decref(keys);
    fprintf(stderr, "soupd audit verify: %s\n", err ? err : "failed");
    free(err);
    registry_close(reg);
    return 1;
  }
  registry_close(reg);
  json_decref(keys);
  json_t *broken = json_object_get(out, "first_broken");
  const char *cp_problem = json_string_value(json_object_get(out, "checkpoint_problem"));
  int rc = 0;
  if (json_is_object(broken)) {
    printf("audit log BROKEN at event %lld: %s\n",
           (long long)json_integer_value(json_object_get(broken, "event_id")),
           json_string_value(json_object_get(broken, "reason")));
    rc = 1;
  }
  if (cp_problem) {
    printf("audit log BROKEN: %s\n", cp_problem);
    rc = 1;
  }
  if (rc == 0) {
    printf("audit log intact: %lld events, %lld in the hash chain, head %s, %lld signed "
           "checkpoints valid\n",
           (long long)json_integer_value(json_object_get(out, "events")),
           (long long)json_integer_value(json_object_get(out, "chained")),
           json_string_value(json_object_get(out, "head_hash")),
           (long long)json_integer_value(json_object_get(out, "checkpoints")));
  }
  json_decref(out);
  return rc;
}

static int cmd_tokenize(int argc, char **argv) {
  const char *model = SOUPD_DEFAULT_MODEL_DIR, *text = NULL, *v;
  for (int i = 2; i < argc; i++) {
    if ((v = config_flag_value(argc, argv, &i, "--model")))
      model = v;
    else if (!text)
      text = argv[i];
    else {
      fprintf(stderr, "soupd tokenize: give the text as one argument\n");
      return 2;
    }
  }
  if (!text) {
    usage(stderr);
    return 2;
  }
  char *err = NULL;
#ifndef HAVE_TOKENIZER
  err = strdup("this build has no tokenizer");
  if (1) {
#else
  if (tokenizer_cli_print(model, text, stdout, &err) != 0) {
#endif
    fprintf(stderr, "soupd tokenize: %s\n", err ? err : "failed");
    free(err);
    return 1;
  }
  return 0;
}

static int cmd_serve(int argc, char **argv) {
  static struct app app;
  app_init(&app);
  const char *config_path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = config_flag_value(argc, argv, &i, "--config");
    if (v) config_path = v;
  }
  char *err = NULL;
  if (config_load(&app.cfg, config_path, &err) != 0) goto fail;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (strncmp(a, "--", 2) != 0) {
      fprintf(stderr, "soupd: unexpected argument %s\n", a);
      usage(stderr);
      return 2;
    }
    char name[64];
    const char *eq = strchr(a, '='), *val;
    size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, a + 2, n);
    name[n] = 0;
    if (eq)
      val = eq + 1;
    else if (i + 1 < argc)
      val = argv[++i];
    else {
      fprintf(stderr, "soupd: option --%s needs a value\n", name);
      return 2;
    }
    if (strcmp(name, "config") == 0) continue;
    if (config_set(&app.cfg, name, val, &err) != 0) goto fail;
  }
  log_set_level((enum log_level)log_level_parse(app.cfg.log_level)); /* an enum option */
  snprintf(app.model_root, sizeof app.model_root, "%s",
           app.cfg.model[0] ? app.cfg.model : SOUPD_DEFAULT_MODEL_DIR);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  log_info("soupd %s starting (backends: %s)", SOUPD_VERSION, backends_built());
  /* Listen first: /healthz answers and /readyz says 503 while the registry
   * is checked and the soup rebuilt (minutes for a large store). */
  struct http_server *http = NULL;
  if (engine_start(&app, (int)app.cfg.queue_max, (int)app.cfg.max_batch, &app.engine, &err) != 0)
    goto fail_app;
  if (http_start(&app, &http, &err) != 0) goto fail_app;
  if (app_open(&app, &err) != 0) {
    http_stop(http);
    goto fail_app;
  }
  atomic_store(&app.ready, 1);
  log_info("ready");

  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  log_info("received %s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  atomic_store(&app.stopping, 1);
  http_quiesce(http);
  engine_stop(app.engine, (int)app.cfg.shutdown_grace_s);
  app.engine = NULL;
  http_stop(http);
  app_snapshot_save(&app);
  app_close(&app);
  log_info("stopped cleanly");
  return 0;

fail_app:
  log_error("cannot start: %s", err ? err : "unknown error");
  free(err);
  engine_stop(app.engine, 0);
  app_close(&app);
  return 1;
fail:
  fprintf(stderr, "soupd: %s\n", err ? err : "invalid arguments");
  free(err);
  return 2;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "version") == 0) {
    printf("soupd %s\nbackends: %s\n", SOUPD_VERSION, backends_built());
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "config") == 0) {
    config_print_reference(stdout);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "token") == 0) return cmd_token(argc, argv);
  if (argc > 1 && strcmp(argv[1], "tokenize") == 0) return cmd_tokenize(argc, argv);
  if (argc > 1 && strcmp(argv[1], "audit") == 0) return cmd_audit(argc, argv);
  if (argc > 1 && strcmp(argv[1], "key") == 0) return proofs_cli_key(argc, argv);
  if (argc > 1 && strcmp(argv[1], "verify-receipt") == 0)
    return proofs_cli_verify_receipt(argc, argv);
  return cmd_serve(argc, argv);
}
