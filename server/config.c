/* config.c: the option table and its three sources (file, environment,
 * flags). Every option is one row; nothing else knows option names. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OPT_STR: free text; OPT_ENUM: one of `choices` ("a|b|c"); OPT_ADDR:
 * IPV4:PORT; OPT_DEVICE: auto | cpu | cuda[:N]; OPT_INT: an integer in
 * [min, max]; OPT_SIZE: the same, with an optional K, M, G or T suffix
 * (binary units). Every value is checked when it is set, so a bad option
 * stops the daemon before it opens its port. */
enum opt_type { OPT_STR, OPT_ENUM, OPT_ADDR, OPT_DEVICE, OPT_INT, OPT_SIZE };

struct opt {
  const char *name;
  enum opt_type type;
  size_t off, size; /* field offset and (for strings) capacity */
  int64_t min, max;
  const char *def;
  const char *help;
  const char *choices; /* OPT_ENUM */
};

#define STR_(t, f, d, h, ch)                                                                       \
  { #f, t, offsetof(struct config, f), sizeof(((struct config *)0)->f), 0, 0, d, h, ch }
#define S(f, d, h) STR_(OPT_STR, f, d, h, NULL)
#define E(f, ch, d, h) STR_(OPT_ENUM, f, d, h, ch)
#define A(f, d, h) STR_(OPT_ADDR, f, d, h, NULL)
#define D(f, d, h) STR_(OPT_DEVICE, f, d, h, NULL)
#define I(f, lo, hi, d, h)                                                                         \
  { #f, OPT_INT, offsetof(struct config, f), 0, lo, hi, d, h, NULL }
#define Z(f, lo, hi, d, h)                                                                         \
  { #f, OPT_SIZE, offsetof(struct config, f), 0, lo, hi, d, h, NULL }

static const struct opt opts[] = {
    A(listen, "127.0.0.1:8600", "address and port to listen on (loopback by default)"),
    S(data_dir, "./var", "registry, shard store, admin token"),
    S(model, "", "base model folder (diffusers layout); empty = the embedded default model"),
    S(variant, "",
      "weights variant to read, as diffusers' variant= (e.g. fp16: *.fp16.safetensors); empty = "
      "the plain files"),
    D(device, "auto", "auto | cpu | cuda[:N]"),
    E(log_level, "debug|info|warn|error", "info", "debug | info | warn | error"),
    S(import_dirs, "", "colon-separated directories admins may register shards from by path"),
    E(infer_dtype, "auto|F32|F16|BF16", "auto",
      "dtype of the live soup weights: auto (F32 on the CPU, F16 on a GPU) | F32 | F16 | BF16"),
    I(threads, 1, 256, "4", "HTTP thread pool size"),
    I(compute_threads, 0, 1024, "0", "compute threads (0 = every core)"),
    I(max_connections, 1, 100000, "256", "concurrent connections"),
    I(per_ip_connections, 1, 100000, "64", "concurrent connections per client address"),
    I(connection_timeout_s, 1, 86400, "30", "idle connection timeout (seconds)"),
    I(connection_memory_kib, 16, 65536, "64", "per-connection memory limit (KiB)"),
    Z(json_body_max, 1024, 1073741824, "1048576", "largest JSON request body (bytes)"),
    Z(upload_max_bytes, 1024, INT64_MAX, "8589934592",
      "largest shard upload (bytes; K, M, G, T suffixes allowed)"),
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

int config_listen_addr(const char *listen, struct sockaddr_in *sa) {
  char host[128];
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host) return -1;
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = 0;
  errno = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || port < 0 || port > 65535) return -1;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
  return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

int config_device_parse(const char *dev, int *gpu) {
  if (strcmp(dev, "auto") == 0) return *gpu = -1, 0;
  if (strcmp(dev, "cpu") == 0) return *gpu = -1, 1;
  if (strncmp(dev, "cuda", 4) != 0 || (dev[4] && dev[4] != ':')) return -1;
  if (!dev[4]) return *gpu = 0, 2;
  errno = 0;
  char *end;
  long idx = strtol(dev + 5, &end, 10);
  if (errno || end == dev + 5 || *end || idx < 0 || idx > 1023 || !isdigit((unsigned char)dev[5]))
    return -1;
  return *gpu = (int)idx, 2;
}

/* "one of a, b, c" from "a|b|c"; 1 if v is one of them. */
static int enum_has(const char *choices, const char *v) {
  size_t n = strlen(v);
  if (!n || strchr(v, '|')) return 0; /* one choice, never a run of them */
  for (const char *p = choices; p; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL)
    if (strncmp(p, v, n) == 0 && (p[n] == '|' || p[n] == 0)) return 1;
  return 0;
}

static int int_parse(const struct opt *o, const char *v, int64_t *out) {
  errno = 0;
  char *end;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v) return -1;
  if (o->type == OPT_SIZE && *end && !end[1]) {
    const char *units = "KMGT";
    const char *u = strchr(units, toupper((unsigned char)*end));
    if (!u || x < 0) return -1;
    for (long i = 0; i <= u - units; i++) {
      if (x > INT64_MAX / 1024) return -1;
      x *= 1024;
    }
    end++;
  }
  if (*end || x < o->min || x > o->max) return -1;
  *out = x;
  return 0;
}

static int opt_set(struct config *c, const struct opt *o, const char *v, char **err) {
  char *field = (char *)c + o->off;
  char want[160] = "";
  int ok = 1, gpu;
  struct sockaddr_in sa;
  switch (o->type) {
  case OPT_INT:
  case OPT_SIZE:
    if (int_parse(o, v, (int64_t *)field) == 0) return 0;
    snprintf(want, sizeof want, "an integer in [%lld, %lld]%s", (long long)o->min,
             (long long)o->max, o->type == OPT_SIZE ? " (K, M, G, T suffixes allowed)" : "");
    *err = fmt_err("option %s: expected %s", o->name, want);
    return -1;
  case OPT_ENUM:
    ok = enum_has(o->choices, v);
    snprintf(want, sizeof want, "one of ");
    for (const char *p = o->choices; *p && strlen(want) + 3 < sizeof want; p++) {
      size_t n = strlen(want);
      if (*p == '|')
        memcpy(want + n, ", ", 3);
      else
        want[n] = *p, want[n + 1] = 0;
    }
    break;
  case OPT_ADDR:
    ok = config_listen_addr(v, &sa) == 0;
    snprintf(want, sizeof want, "IPV4:PORT, e.g. 127.0.0.1:8600");
    break;
  case OPT_DEVICE:
    ok = config_device_parse(v, &gpu) >= 0;
    snprintf(want, sizeof want, "auto, cpu or cuda[:N]");
    break;
  case OPT_STR:
    break;
  }
  if (!ok) {
    char buf[400];
    snprintf(buf, sizeof buf, "option %s: '%.100s' is not valid; expected %s", o->name, v, want);
    *err = strdup(buf);
    return -1;
  }
  if (strlen(v) >= o->size) {
    *err = fmt_err("option %s: value too long (%s)", o->name, "");
    return -1;
  }
  memcpy(field, v, strlen(v) + 1);
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

const char *config_flag_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n] == 0 && *i + 1 < argc) return argv[++*i];
  return NULL;
}
