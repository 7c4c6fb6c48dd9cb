/* embedded.h: files compiled into the binary by cmake/embed.cmake
 * (schema migrations). Each table ends with a {NULL, NULL, 0} entry and
 * every data block is NUL-terminated (len excludes the NUL). */
#pragma once

#include <stddef.h>

struct embedded_file {
  const char *name;
  const unsigned char *data;
  size_t len;
};

extern const struct embedded_file embedded_schema[];
extern const size_t embedded_schema_count;
