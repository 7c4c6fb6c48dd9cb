/* config.c: the option table and its three sources (file, environment,
 * flags). Every option is one row; nothing else knows option names. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT };

struct opt {
  const char *name;
  enum opt_type type;
  size_t off, size; /* field offset and (for strings) capacity */
  int64_t min, max;
  const char *def;
  const char *help;
};

#define S(f, d, h)                                                                                 \
  { #f, OPT_STR, offsetof(struct config, f), sizeof(((struct config *)0)->f), 0, 0, d, h }
#define I(f, lo, hi, d, h)                                                                         \
  { #f, OPT_INT, offsetof(struct config, f), 0, lo, hi, d, h }

static const struct opt opts[] = {
    S(listen, "127.0.0.1:8600", "address and port to listen on (loopback by default)"),
    S(data_dir, "./var", "registry, shard store, admin token"),
    S(model, "", "base model folder (diffusers layout); empty = the embedded default model"),
    S(device, "auto", "auto | cpu | cuda[:N]"),
    S(log_level, "info", "debug | info | warn | error"),
    S(import_dirs, "", "colon-separated directories admins may register shards from by path"),
    S(infer_dtype, "auto",
      "dtype of the live soup weights: auto (F32 on the CPU, F16 on a GPU) | F32 | F16 | BF16"),
    I(threads, 1, 256, "4", "HTTP thread pool size"),
    I(compute_threads, 0, 1024, "0", "compute threads (0 = every core)"),
    I(max_connections, 1, 100000, "256", "concurrent connections"),
    I(per_ip_connections, 1, 100000, "64", "concurrent connections per client address"),
    I(connection_timeout_s, 1, 86400, "30", "idle connection timeout (seconds)"),
    I(connection_memory_kib, 16, 65536, "64", "per-connection memory limit (KiB)"),
    I(json_body_max, 1024, 1073741824, "1048576", "largest JSON request body (bytes)"),
    I(upload_max_bytes, 1024, INT64_MAX, "8589934592", "largest shard upload (bytes)"),
    I(queue_max, 1, 100000, "16", "queued jobs before 429"),
    I(max_batch, 1, 64, "1",
      "images of compatible queued requests run as one batch (1 = no batching)"),
    I(job_timeout_s, 1, 86400, "600", "per-job time limit (seconds)"),
    I(max_width, 64, 4096, "1024", "largest image width"),
    I(max_height, 64, 4096, "1024", "largest image height"),
    I(max_steps, 1, 1000, "150", "largest number of denoising steps"),
    I(max_n, 1, 64, "4", "most images per request"),
    I(max_prompt_chars, 1, 100000, "4000", "longest prompt (characters)"),
    I(shutdown_grace_s, 0, 3600, "10", "seconds to finish running jobs on SIGTERM"),
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static char *fmt_err(const char *fmt, const char *a, const char *b) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, a, b);
  return strdup(buf);
}

static const struct opt *opt_find(const char *name) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (strcmp(opts[i].name, name) == 0) return &opts[i];
  return NULL;
}

static int opt_set(struct config *c, const struct opt *o, const char *v, char **err) {
  char *field = (char *)c + o->off;
  if (o->type == OPT_STR) {
    if (strlen(v) >= o->size) {
      *err = fmt_err("option %s: value too long (%s)", o->name, "");
      return -1;
    }
    memcpy(field, v, strlen(v) + 1);
    return 0;
  }
  errno = 0;
  char *end;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < o->min || x > o->max) {
    char range[96];
    snprintf(range, sizeof range, "an integer in [%lld, %lld]", (long long)o->min,
             (long long)o->max);
    *err = fmt_err("option %s: expected %s", o->name, range);
    return -1;
  }
  *(int64_t *)field = x;
  return 0;
}

int config_set(struct config *c, const char *name, const char *value, char **err) {
  char key[64];
  snprintf(key, sizeof key, "%s", name);
  for (char *p = key; *p; p++)
    if (*p == '-') *p = '_';
  const struct opt *o = opt_find(key);
  if (!o) {
    *err = fmt_err("unknown option '%s'%s", name, "");
    return -1;
  }
  return opt_set(c, o, value, err);
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
  return s;
}

static int config_file_load(struct config *c, const char *path, char **err) {
  FILE *f = fopen(path, "r");
  if (!f) {
    *err = fmt_err("cannot open config file %s: %s", path, strerror(errno));
    return -1;
  }
  char line[4096];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *s = trim(line);
    if (!*s || *s == '#') continue;
    char *eq = strchr(s, '=');
    char where[64];
    snprintf(where, sizeof where, "%d", lineno);
    if (!eq) {
      *err = fmt_err("%s:%s: expected 'key = value'", path, where);
      rc = -1;
      break;
    }
    *eq = 0;
    char *k = trim(s), *v = trim(eq + 1);
    size_t vl = strlen(v);
    if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
      v[vl - 1] = 0;
      v++;
    }
    char *e2 = NULL;
    if (config_set(c, k, v, &e2) != 0) {
      char buf[700];
      snprintf(buf, sizeof buf, "%s:%d: %s", path, lineno, e2);
      free(e2);
      *err = strdup(buf);
      rc = -1;
      break;
    }
  }
  fclose(f);
  return rc;
}

int config_load(struct config *c, const char *path, char **err) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < N_OPTS; i++)
    if (opt_set(c, &opts[i], opts[i].def, err) != 0) return -1;
  if (path && config_file_load(c, path, err) != 0) return -1;
  for (size_t i = 0; i < N_OPTS; i++) {
    char env[80];
    snprintf(env, sizeof env, "SOUPD_%s", opts[i].name);
    for (char *p = env; *p; p++) *p = (char)toupper((unsigned char)*p);
    const char *v = getenv(env);
    if (v) {
      char *e2 = NULL;
      if (opt_set(c, &opts[i], v, &e2) != 0) {
        *err = fmt_err("environment %s: %s", env, e2);
        free(e2);
        return -1;
      }
    }
  }
  return 0;
}

void config_print_reference(void *fp) {
  FILE *f = fp;
  fprintf(f, "# soupd.conf: every option with its default. Format: key = value.\n"
             "# Each option may also be set by the environment variable SOUPD_<KEY>\n"
             "# and by the flag --<key> (dashes or underscores).\n");
  for (size_t i = 0; i < N_OPTS; i++)
    fprintf(f, "\n# %s\n%s = %s\n", opts[i].help, opts[i].name, opts[i].def);
}
