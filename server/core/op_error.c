/* op_error.c: filling a struct op_error (app.h), one way for every use case. */
#include <stdarg.h>
#include <stdio.h>

#include "app.h"

int op_fail(struct op_error *e, enum err_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->detail, sizeof e->detail, fmt, ap);
  va_end(ap);
  e->code = code;
  return -1;
}

int op_field_error(struct op_error *e, enum err_code code, const char *field, const char *msg) {
  if (!e->errors) e->errors = json_array();
  json_array_append_new(e->errors, json_pack("{s:s,s:s}", "field", field, "message", msg));
  if (!e->detail[0]) snprintf(e->detail, sizeof e->detail, "%s: %s", field, msg);
  e->code = code;
  return -1;
}
