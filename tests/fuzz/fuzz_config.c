/* fuzz_config.c: libFuzzer target for the config file reader
 * (server/config.c: "key = value" lines, '#' comments, quoted values).
 *
 * For every input (written to a memfd and read by path, as the daemon reads
 * --config): no crash; a refusal comes with a message; an accepted file
 * leaves every option valid by its type (the address and the device parse,
 * the enums hold one of their choices, the integers lie in their bounds,
 * every text field is terminated inside its buffer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <netinet/in.h>

#include "server/config.h"
#include "tests/fuzz/fuzz_check.h"

#define TERMINATED(f) CHECK(memchr(c.f, 0, sizeof c.f) != NULL)

static int one_of(const char *v, const char *const *set) {
  for (; *set; set++)
    if (!strcmp(v, *set)) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("soupd.conf", 0);
  CHECK(fd >= 0);
  CHECK(write(fd, data, size) == (ssize_t)size);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  struct config c;
  char *err = NULL;
  int rc = config_load(&c, path, &err);
  close(fd);
  if (rc != 0) {
    CHECK(err && *err);
    free(err);
    return 0;
  }
  TERMINATED(listen);
  TERMINATED(data_dir);
  TERMINATED(model);
  TERMINATED(variant);
  TERMINATED(device);
  TERMINATED(log_level);
  TERMINATED(import_dirs);
  TERMINATED(infer_dtype);
  struct sockaddr_in sa;
  int gpu;
  CHECK(config_listen_addr(c.listen, &sa) == 0);
  CHECK(config_device_parse(c.device, &gpu) >= 0);
  static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
  static const char *const dtypes[] = {"auto", "F32", "F16", "BF16", NULL};
  CHECK(one_of(c.log_level, levels) && one_of(c.infer_dtype, dtypes));
  CHECK(c.threads >= 1 && c.threads <= 256 && c.queue_max >= 1 && c.max_batch >= 1 &&
        c.max_batch <= 64 && c.json_body_max >= 1024 && c.upload_max_bytes >= 1024);
  return 0;
}
