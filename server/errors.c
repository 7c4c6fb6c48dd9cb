/* errors.c: names of the domain error codes (errors.h). */
#include "errors.h"

const char *err_code_name(enum err_code c) {
  static const char *n[] = {"none", "invalid",     "not_found", "conflict", "forbidden",
                            "busy", "unavailable", "no_space",  "internal"};
  return (unsigned)c < sizeof n / sizeof n[0] ? n[c] : "?";
}
