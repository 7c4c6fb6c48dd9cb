/* safetensors.h: strict reader (every check of the reference implementation)
 * and a small writer for the safetensors format.
 *
 * File: u64 LE header length N, N bytes of UTF-8 JSON, then the data buffer.
 * After st_parse/st_open succeeds, every tensor's [begin, end) lies inside
 * the data buffer, the tensors tile it exactly, and numel * dtype size ==
 * end - begin without overflow. Tensors are kept sorted by name.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../../kernels/tensor.h"

#define ST_MAX_HEADER_SIZE 100000000ULL /* reference MAX_HEADER_SIZE */
#define ST_MAX_DIMS 8

enum st_dtype {
  ST_BOOL = 0,
  ST_U8,
  ST_I8,
  ST_F8_E5M2,
  ST_F8_E4M3,
  ST_I16,
  ST_U16,
  ST_F16,
  ST_BF16,
  ST_I32,
  ST_U32,
  ST_F32,
  ST_F64,
  ST_I64,
  ST_U64,
  ST_DTYPE_COUNT
};

struct st_tensor {
  char *name;
  enum st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  uint64_t begin, end; /* relative to the data buffer */
  uint64_t numel;
  const void *data; /* points into the mapping (or the parsed buffer) */
};

struct st_file {
  size_t n_tensors;
  struct st_tensor *tensors; /* sorted by name */
  json_t *metadata;          /* string -> string object, or NULL */
  uint64_t header_len;
  const uint8_t *base; /* whole file bytes */
  size_t size;
  int mapped; /* 1 if base is an mmap owned by the file */
  /* Sharded weights (st_open_index): the part files, in file-name order,
   * that own the tensor data; base is NULL then. */
  size_t n_parts;
  struct st_file **parts;
  char **part_paths;
};

/* Negative statuses of st_parse/st_open (one per error class; the message
 * in *err says what exactly is wrong and names the tensor). */
enum st_status {
  ST_E_IO = -1,          /* open/stat/mmap/write failed */
  ST_E_TOO_SMALL = -2,   /* fewer than 8 bytes (HeaderTooSmall) */
  ST_E_HEADER_SIZE = -3, /* N above ST_MAX_HEADER_SIZE (HeaderTooLarge) */
  ST_E_HEADER_LEN = -4,  /* N + 8 beyond the file (InvalidHeaderLength) */
  ST_E_UTF8 = -5,        /* header not UTF-8 (InvalidHeader) */
  ST_E_JSON = -6,        /* not JSON, not an object, duplicate key */
  ST_E_ENTRY = -7,       /* a tensor entry or __metadata__ malformed */
  ST_E_OVERFLOW = -8,    /* numel or byte size overflows (ValidationOverflow) */
  ST_E_OFFSET = -9,      /* gap, overlap or begin > end (InvalidOffset) */
  ST_E_SPAN = -10,       /* end - begin != numel * size (TensorInvalidInfo) */
  ST_E_INCOMPLETE = -11, /* data past EOF or trailing bytes (MetadataIncompleteBuffer) */
  ST_E_NOMEM = -12,
  ST_E_ARG = -13 /* writer: invalid argument */
};

/* Parses a whole file image held in memory (not copied: buf must outlive f).
 * On failure returns a negative status and *err (malloc'd, caller frees). */
int st_parse(const uint8_t *buf, size_t len, struct st_file **out, char **err);
/* Opens, validates and mmaps a file. */
int st_open(const char *path, struct st_file **out, char **err);
/* The same with a lower cap on N (0 < max_header <= ST_MAX_HEADER_SIZE): the
 * JSON parser needs about 14x the header size in memory for a header of tiny
 * entries, so servers taking uploads should cap N near what real UNets need
 * (SD 1.x: ~100 KB). N above the cap fails with ST_E_HEADER_SIZE. */
int st_parse_limit(const uint8_t *buf, size_t len, uint64_t max_header, struct st_file **out,
                   char **err);
int st_open_limit(const char *path, uint64_t max_header, struct st_file **out, char **err);
void st_close(struct st_file *f);
/* Sharded weights as transformers and diffusers save them: an index JSON
 * ({"weight_map": {tensor: part file}}) beside its part files. Opens every
 * part and presents their tensors as one file. Refused (ST_E_ENTRY with the
 * names): a part outside the index's folder, a tensor in two parts, a part
 * holding a tensor the index puts elsewhere or does not list, a listed
 * tensor missing from its part. At most ST_MAX_PARTS parts. */
#define ST_MAX_PARTS 256
int st_open_index(const char *index_path, struct st_file **out, char **err);
/* st_open_index for a path ending in ".json", else st_open. */
int st_open_weights(const char *path, struct st_file **out, char **err);

const struct st_tensor *st_find(const struct st_file *f, const char *name);
size_t st_dtype_size(enum st_dtype dt);
const char *st_dtype_name(enum st_dtype dt);
/* Maps to the compute dtype (F32, F16, BF16, I32, I64), or -1. */
int st_dtype_to_dtype(enum st_dtype dt);

/* Compatibility of a shard with the base UNet: same tensor names and shapes,
 * floating dtypes F32/F16/BF16 only. Appends up to max_errors
 * {"field", "message"} objects to errors (a JSON array). Returns 0 if
 * compatible, -1 otherwise. */
int st_check_compatible(const struct st_file *base, const struct st_file *shard, json_t *errors,
                        int max_errors);

/* NaN/Inf scan of the F32/F16/BF16 tensors (other dtypes are skipped):
 * appends up to max_errors {"field": name, "message"} objects naming the
 * first non-finite element of each bad tensor. Returns 0 if all finite,
 * -1 otherwise. Reads every byte of the floating tensors. */
int st_check_finite(const struct st_file *f, json_t *errors, int max_errors);

/* Writer: tensors are written in the given order; metadata may be NULL. */
struct st_write_tensor {
  const char *name;
  enum st_dtype dtype;
  int ndim;
  const int64_t *shape;
  const void *data; /* numel * dtype size bytes */
};
int st_write(const char *path, const struct st_write_tensor *t, size_t n, const json_t *metadata,
             char **err);
/* Writes to an open stdio stream (used by the export endpoint). */
int st_write_fp(void *fp, const struct st_write_tensor *t, size_t n, const json_t *metadata,
                char **err);
