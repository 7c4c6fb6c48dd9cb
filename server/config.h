/* config.h: every daemon option, from one table (name, type, bounds,
 * default, environment variable). Precedence: built-in default < config file
 * < SOUPD_<NAME> environment variable < command-line flag. Unknown keys in the
 * file are errors with the line number; every value is checked by its type
 * (enum, address, device, integer, size) when it is set, so nothing
 * malformed reaches the daemon. */
#pragma once

#include <stdint.h>

#define CONFIG_MAX_IMPORT_DIRS 8

struct config {
  char listen[128]; /* ADDR:PORT */
  char data_dir[1024];
  char model[1024]; /* "" = the embedded default model */
  char variant[64]; /* weights variant ("fp16"), "" = the plain files */
  char device[32];  /* auto | cpu | cuda[:N] */
  char log_level[16];
  char import_dirs[2048]; /* colon-separated absolute directories */
  int64_t threads;        /* HTTP pool threads */
  int64_t compute_threads;
  int64_t max_connections;
  int64_t per_ip_connections;
  int64_t connection_timeout_s;
  int64_t connection_memory_kib;
  int64_t json_body_max;
  int64_t upload_max_bytes;
  int64_t queue_max;
  int64_t max_batch;
  int64_t job_timeout_s;
  int64_t max_width, max_height, max_steps, max_n, max_prompt_chars;
  int64_t shutdown_grace_s;
  char infer_dtype[8]; /* F32 | F16 | BF16 */
};

/* Fills defaults; then file (if path non-NULL), then environment. Returns 0 or
 * -1 with *err (malloc'd). */
int config_load(struct config *c, const char *path, char **err);
/* Sets one option by name from a string (flags use it). */
int config_set(struct config *c, const char *name, const char *value, char **err);
/* Prints every option with its default and description (for --help and the
 * reference file config/soupd.conf). */
void config_print_reference(void *fp);
/* The command line: "--name VALUE" or "--name=VALUE" at argv[*i] gives
 * VALUE (advancing *i past a separate value), else NULL. */
const char *config_flag_value(int argc, char **argv, int *i, const char *name);

struct sockaddr_in;
/* "IPV4:PORT" (or localhost:PORT) into *sa. Returns 0, or -1 if malformed. */
int config_listen_addr(const char *listen, struct sockaddr_in *sa);
/* "auto" -> 0, "cpu" -> 1, "cuda" or "cuda:N" -> 2 with *gpu = N; -1 if
 * malformed. */
int config_device_parse(const char *dev, int *gpu);
