/* soup_cuda.cu: the soup ops (kernels/soup_backend.h) on the GPU.
 *
 * Same bits as kernels/cpu/soup_cpu.c, by construction:
 *  - q(w, F) is the same integer code (soup_q_parts and the decoders are the
 *    CPU's own, kernels/soup_rules.h, compiled for host and device);
 *  - materialize is __ll2double_rn, __ddiv_rn, __dmul_rn (each correctly
 *    rounded, no contraction possible) and then __double2float_rn for F32 or
 *    the CPU's integer binary64 -> F16/BF16 rounding;
 *  - convert widens exactly and rounds once, with the CPU's NaN/Inf rules;
 *  - the hash is OpenSSL SHA-256 on the host over the int64 accumulator
 *    copied back in order (the bytes are the device's little-endian int64s,
 *    the same bytes the CPU hashes);
 *  - validate runs on the host over the host source (the CPU's rule).
 * Memory from alloc is device memory (cudaMalloc, zero-filled) on the device
 * the table was first obtained for (soup_backend_cuda_for(d), or
 * soup_backend_cuda(): $SOUPD_CUDA_DEVICE, default 0; one device per
 * process): host_memory is 0 and download/upload are
 * plain synchronous cudaMemcpy. Sources are host memory, streamed through
 * pinned staging buffers by a worker slot: two CUDA streams alternate chunks
 * so that the host memcpy into pinned memory, the host->device copy, the
 * kernel and the device->host copy of the accumulator (for the hash) of
 * consecutive chunks overlap. One slot per online CPU (2..16) lets that many
 * engine threads run ops at once (parallel = slots; a slot's streams and
 * 12 MiB of pinned buffers are made on its first use); a call waits for a
 * free slot. Every chunk's hash input is complete before it is hashed
 * (events), and chunks are hashed in order. The host SHA-256 (about 2 GB/s
 * per core with SHA extensions) over 8 bytes per parameter is the largest
 * cost of an update; parallel host threads over tensors spread it.
 */
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cuda_impl.cuh"
#include "kernels/soup_rules.h"

#define SOUP_CUDA_MAX_SLOTS 16
#define SOUP_CHUNK ((int64_t)1 << 20) /* elements per pipeline step */

/* ---- the bit rules: kernels/soup_rules.h, the CPU's own copy ---- */

__device__ static inline void mat_one(void *out, int odt, int64_t i, int64_t s, double Kd,
                                      double scale) {
  double z = __dmul_rn(__ddiv_rn(__ll2double_rn((long long)s), Kd), scale);
  if (odt == DT_F32)
    ((float *)out)[i] = __double2float_rn(z);
  else if (odt == DT_F16)
    ((uint16_t *)out)[i] = soup_d_to_f16(z);
  else
    ((uint16_t *)out)[i] = soup_d_to_bf16(z);
}

/* acc[i] += kq * q(src[i], F); then, if out, out[i] = materialize(acc[i]) */
__global__ void soup_accumulate_kernel(int64_t *acc, const void *src, int sdt, int64_t n, int64_t F,
                                       int64_t kq, void *out, int odt, double Kd, double scale) {
  CU_FOR(i, n) {
    int64_t q = sdt == DT_F16    ? soup_q_f16(((const uint16_t *)src)[i], F)
                : sdt == DT_BF16 ? soup_q_bf16(((const uint16_t *)src)[i], F)
                                 : soup_q_f32(((const uint32_t *)src)[i], F);
    int64_t s = (int64_t)((uint64_t)acc[i] + (uint64_t)kq * (uint64_t)q); /* wraps as the CPU */
    acc[i] = s;
    if (out) mat_one(out, odt, i, s, Kd, scale);
  }
}

__global__ void soup_materialize_kernel(void *out, int odt, const int64_t *acc, int64_t n,
                                        double Kd, double scale) {
  CU_FOR(i, n) mat_one(out, odt, i, acc[i], Kd, scale);
}

/* base value -> out dtype, one rounding (the CPU's cpu_convert) */
__global__ void soup_convert_kernel(void *out, int odt, const void *src, int sdt, int64_t n) {
  CU_FOR(i, n) {
    float f = cu_load(src, sdt, i); /* exact widening */
    double z = (double)f;
    if (odt == DT_F32)
      ((float *)out)[i] = f;
    else if (!isfinite(z))
      ((uint16_t *)out)[i] = odt == DT_F16 ? f32_to_f16(f) : f32_to_bf16(f);
    else if (odt == DT_F16)
      ((uint16_t *)out)[i] = soup_d_to_f16(z);
    else
      ((uint16_t *)out)[i] = soup_d_to_bf16(z);
  }
}

/* ---- device, slots ---- */

struct soup_slot {
  int busy, ready;
  cudaStream_t st[2];
  cudaEvent_t done[2];
  void *hin[2];     /* pinned: source chunk */
  int64_t *hacc[2]; /* pinned: accumulator chunk for the hash */
  void *din[2];     /* device: source chunk */
};

/* set once, under mu, before the first table is handed out; every op is
 * reached through a table, so ops read device without the lock */
static struct {
  int inited;
  int device; /* -1: none */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int nslots;
  struct soup_slot slot[SOUP_CUDA_MAX_SLOTS];
  struct soup_backend be;
  char name[32];
} g = {0, -1, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {}, {}, {}};

static void soup_cuda_fill(struct soup_backend *be);

/* binds the soup ops to device d on the first successful call; 1 if the
 * table is bound to d */
static int soup_cuda_init(int d) {
  pthread_mutex_lock(&g.mu);
  if (!g.inited && d >= 0 && d < backend_cuda_device_count()) {
    g.device = d;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g.nslots = cpus < 2 ? 2 : cpus > SOUP_CUDA_MAX_SLOTS ? SOUP_CUDA_MAX_SLOTS : (int)cpus;
    snprintf(g.name, sizeof g.name, "cuda:%d", g.device);
    soup_cuda_fill(&g.be);
    g.inited = 1;
  }
  int ok = g.inited && g.device == d;
  pthread_mutex_unlock(&g.mu);
  return ok;
}

static void slot_teardown(struct soup_slot *s) {
  for (int k = 0; k < 2; k++) {
    if (s->st[k]) cudaStreamDestroy(s->st[k]);
    if (s->done[k]) cudaEventDestroy(s->done[k]);
    if (s->hin[k]) cudaFreeHost(s->hin[k]);
    if (s->hacc[k]) cudaFreeHost(s->hacc[k]);
    if (s->din[k]) cudaFree(s->din[k]);
    s->st[k] = NULL;
    s->done[k] = NULL;
    s->hin[k] = s->hacc[k] = NULL;
    s->din[k] = NULL;
  }
  s->ready = 0;
}

static int slot_setup(struct soup_slot *s) {
  if (s->ready) return 0;
  for (int k = 0; k < 2; k++) {
    if (cudaStreamCreateWithFlags(&s->st[k], cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&s->done[k], cudaEventDisableTiming) != cudaSuccess ||
        cudaHostAlloc(&s->hin[k], (size_t)SOUP_CHUNK * 4, cudaHostAllocDefault) != cudaSuccess ||
        cudaHostAlloc((void **)&s->hacc[k], (size_t)SOUP_CHUNK * 8, cudaHostAllocDefault) !=
            cudaSuccess ||
        cudaMalloc(&s->din[k], (size_t)SOUP_CHUNK * 4) != cudaSuccess) {
      (void)cudaGetLastError();
      slot_teardown(s);
      return -1;
    }
  }
  s->ready = 1;
  return 0;
}

/* a ready slot for this call (waits for a free one); NULL on failure */
static struct soup_slot *slot_get(void) {
  if (g.device < 0 || cudaSetDevice(g.device) != cudaSuccess) return NULL;
  pthread_mutex_lock(&g.mu);
  struct soup_slot *s = NULL;
  for (;;) {
    for (int i = 0; i < g.nslots && !s; i++)
      if (!g.slot[i].busy) s = &g.slot[i];
    if (s) break;
    pthread_cond_wait(&g.cv, &g.mu);
  }
  s->busy = 1;
  pthread_mutex_unlock(&g.mu);
  if (slot_setup(s)) {
    pthread_mutex_lock(&g.mu);
    s->busy = 0;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
  }
  return s;
}

static void slot_put(struct soup_slot *s) {
  pthread_mutex_lock(&g.mu);
  s->busy = 0;
  pthread_cond_signal(&g.cv);
  pthread_mutex_unlock(&g.mu);
}

static unsigned soup_blocks(int64_t n) {
  return cu_blocks(n, 256);
}

/* ---- the pipeline ----
 * For each chunk c (slot half h = c % 2): wait until half h is free (its
 * previous chunk's copies and kernel are done; hash that chunk now, which
 * keeps chunks in order), stage the source in pinned memory, queue H2D,
 * the kernel and (for the hash) the D2H of the new accumulator chunk on
 * stream h, record done[h]. */
enum pipe_op { PIPE_ACC, PIPE_CONVERT, PIPE_HASH };

struct pipe {
  enum pipe_op op;
  int64_t *acc;
  const void *src;
  enum dtype sdt;
  int64_t n, F, kq;
  void *out;
  enum dtype odt;
  double Kd, scale;
  EVP_MD_CTX *md;
};

static int pipe_run(struct soup_slot *s, struct pipe *p) {
  size_t isz = dtype_size(p->sdt), osz = dtype_size(p->odt);
  int64_t pend_off[2] = {-1, -1}, pend_len[2] = {0, 0};
  int rc = 0;
  int64_t chunks = (p->n + SOUP_CHUNK - 1) / SOUP_CHUNK;
  for (int64_t c = 0; c < chunks + 2 && rc == 0; c++) {
    int h = (int)(c % 2);
    if (pend_off[h] >= 0 || c >= chunks) {
      if (cudaEventSynchronize(s->done[h]) != cudaSuccess) {
        rc = -1;
        break;
      }
      if (p->md && pend_off[h] >= 0 &&
          EVP_DigestUpdate(p->md, s->hacc[h], (size_t)pend_len[h] * 8) != 1)
        rc = -1;
      pend_off[h] = -1;
    }
    if (c >= chunks) continue;
    int64_t off = c * SOUP_CHUNK, m = p->n - off < SOUP_CHUNK ? p->n - off : SOUP_CHUNK;
    cudaStream_t st = s->st[h];
    cudaError_t e = cudaSuccess;
    if (p->op != PIPE_HASH) {
      memcpy(s->hin[h], (const uint8_t *)p->src + (size_t)off * isz, (size_t)m * isz);
      e = cudaMemcpyAsync(s->din[h], s->hin[h], (size_t)m * isz, cudaMemcpyHostToDevice, st);
    }
    if (e == cudaSuccess && p->op == PIPE_ACC) {
      soup_accumulate_kernel<<<soup_blocks(m), 256, 0, st>>>(
          p->acc + off, s->din[h], (int)p->sdt, m, p->F, p->kq,
          p->out ? (uint8_t *)p->out + (size_t)off * osz : NULL, (int)p->odt, p->Kd, p->scale);
      e = cudaGetLastError();
    } else if (e == cudaSuccess && p->op == PIPE_CONVERT) {
      soup_convert_kernel<<<soup_blocks(m), 256, 0, st>>>((uint8_t *)p->out + (size_t)off * osz,
                                                          (int)p->odt, s->din[h], (int)p->sdt, m);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess && p->md)
      e = cudaMemcpyAsync(s->hacc[h], p->acc + off, (size_t)m * 8, cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaEventRecord(s->done[h], st);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      rc = -1;
      break;
    }
    pend_off[h] = off;
    pend_len[h] = m;
  }
  /* on failure make sure nothing queued still uses the staging buffers */
  cudaStreamSynchronize(s->st[0]);
  cudaStreamSynchronize(s->st[1]);
  return rc;
}

static EVP_MD_CTX *md_new(void) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    md = NULL;
  }
  return md;
}

static int md_final(EVP_MD_CTX *md, uint8_t *digest) {
  unsigned int len = 0;
  int ok = EVP_DigestFinal_ex(md, digest, &len) == 1 && len == 32;
  EVP_MD_CTX_free(md);
  return ok ? 0 : -1;
}

static int out_ok(enum dtype dt) {
  return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16;
}

static int cuda_soup_accumulate(int64_t *acc, const void *src, enum dtype src_dt, int64_t n, int F,
                                int64_t kq, void *out, enum dtype out_dt, int64_t K,
                                uint8_t *digest) {
  if (!out_ok(src_dt) || n < 0) return -1;
  if (out && (!out_ok(out_dt) || K <= 0)) return -1;
  struct pipe p;
  memset(&p, 0, sizeof p);
  p.op = PIPE_ACC;
  p.acc = acc;
  p.src = src;
  p.sdt = src_dt;
  p.n = n;
  p.F = F;
  p.kq = kq;
  p.out = out;
  p.odt = out ? out_dt : DT_F32;
  p.Kd = out ? (double)K : 1.0;
  p.scale = ldexp(1.0, -F);
  if (digest && !(p.md = md_new())) return -1;
  struct soup_slot *s = slot_get();
  if (!s) {
    if (p.md) EVP_MD_CTX_free(p.md);
    return -1;
  }
  int rc = pipe_run(s, &p);
  slot_put(s);
  if (p.md) {
    if (rc == 0)
      rc = md_final(p.md, digest);
    else
      EVP_MD_CTX_free(p.md);
  }
  return rc;
}

static int cuda_soup_materialize(void *out, enum dtype out_dt, const int64_t *acc, int64_t n, int F,
                                 int64_t K) {
  if (K <= 0 || !out_ok(out_dt) || n < 0) return -1;
  if (n == 0) return 0;
  struct soup_slot *s = slot_get();
  if (!s) return -1;
  soup_materialize_kernel<<<soup_blocks(n), 256, 0, s->st[0]>>>(out, (int)out_dt, acc, n, (double)K,
                                                                ldexp(1.0, -F));
  int rc =
      cudaGetLastError() == cudaSuccess && cudaStreamSynchronize(s->st[0]) == cudaSuccess ? 0 : -1;
  slot_put(s);
  return rc;
}

static int cuda_soup_convert(void *out, enum dtype out_dt, const void *src, enum dtype src_dt,
                             int64_t n) {
  if (!out_ok(out_dt) || !out_ok(src_dt) || n < 0) return -1;
  if (n == 0) return 0;
  struct soup_slot *s = slot_get();
  if (!s) return -1;
  int rc;
  if (src_dt == out_dt) {
    rc = cudaMemcpyAsync(out, src, (size_t)n * dtype_size(src_dt), cudaMemcpyHostToDevice,
                         s->st[0]) == cudaSuccess &&
                 cudaStreamSynchronize(s->st[0]) == cudaSuccess
             ? 0
             : -1;
  } else {
    struct pipe p;
    memset(&p, 0, sizeof p);
    p.op = PIPE_CONVERT;
    p.src = src;
    p.sdt = src_dt;
    p.n = n;
    p.out = out;
    p.odt = out_dt;
    rc = pipe_run(s, &p);
  }
  slot_put(s);
  return rc;
}

static int cuda_soup_hash(const int64_t *acc, int64_t n, uint8_t digest[32]) {
  if (n < 0) return -1;
  struct pipe p;
  memset(&p, 0, sizeof p);
  p.op = PIPE_HASH;
  p.acc = (int64_t *)acc;
  p.n = n;
  p.sdt = DT_I64;
  p.odt = DT_F32;
  if (!(p.md = md_new())) return -1;
  struct soup_slot *s = slot_get();
  if (!s) {
    EVP_MD_CTX_free(p.md);
    return -1;
  }
  int rc = pipe_run(s, &p);
  slot_put(s);
  if (rc) {
    EVP_MD_CTX_free(p.md);
    return rc;
  }
  return md_final(p.md, digest);
}

/* ---- validate (host, the CPU's rule) ---- */

static uint32_t absmax16(const uint16_t *__restrict__ s, int64_t n) {
  uint16_t mx = 0;
  for (int64_t i = 0; i < n; i++) {
    uint16_t a = s[i] & 0x7fff;
    mx = a > mx ? a : mx;
  }
  return mx;
}
static uint32_t absmax32(const uint32_t *__restrict__ s, int64_t n) {
  uint32_t mx = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t a = s[i] & 0x7fffffffu;
    mx = a > mx ? a : mx;
  }
  return mx;
}

/* a branch-free absmax pass (vectorised) first; the scan for the first bad
 * index only when there is one */
static int cuda_soup_validate(const void *src, enum dtype dt, int64_t n, int F, int64_t *bad) {
  if (!out_ok(dt)) {
    *bad = 0;
    return 1;
  }
  uint32_t lim = soup_valid_limit(dt, F);
  uint32_t mx =
      dt == DT_F32 ? absmax32((const uint32_t *)src, n) : absmax16((const uint16_t *)src, n);
  if (mx <= lim) return 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t a = dt == DT_F32 ? ((const uint32_t *)src)[i] & 0x7fffffffu
                              : ((const uint16_t *)src)[i] & 0x7fffu;
    if (a > lim) {
      *bad = i;
      return 1;
    }
  }
  return 1; /* unreachable */
}

/* ---- memory ---- */

static void *cuda_soup_alloc(size_t bytes) {
  if (g.device < 0 || cudaSetDevice(g.device) != cudaSuccess) return NULL;
  void *p = NULL;
  if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  if (cudaMemset(p, 0, bytes ? bytes : 1) != cudaSuccess) {
    cudaFree(p);
    return NULL;
  }
  return p;
}

static void cuda_soup_free(void *p) {
  if (!p) return;
  if (g.device >= 0) cudaSetDevice(g.device);
  cudaFree(p);
}

static int cuda_soup_download(void *host, const void *mem, size_t bytes) {
  if (g.device < 0 || cudaSetDevice(g.device) != cudaSuccess) return -1;
  return cudaMemcpy(host, mem, bytes, cudaMemcpyDeviceToHost) == cudaSuccess &&
                 cudaStreamSynchronize(0) == cudaSuccess
             ? 0
             : -1;
}

static int cuda_soup_upload(void *mem, const void *host, size_t bytes) {
  if (g.device < 0 || cudaSetDevice(g.device) != cudaSuccess) return -1;
  /* a pageable H2D cudaMemcpy may return before the DMA lands: wait */
  return cudaMemcpy(mem, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                 cudaStreamSynchronize(0) == cudaSuccess
             ? 0
             : -1;
}

extern "C" const struct soup_backend *soup_backend_cuda_for(int device) {
  return soup_cuda_init(device) ? &g.be : NULL;
}

extern "C" const struct soup_backend *soup_backend_cuda(void) {
  const char *e = getenv("SOUPD_CUDA_DEVICE");
  return soup_backend_cuda_for(e ? atoi(e) : 0);
}

static void soup_cuda_fill(struct soup_backend *be_) {
  struct soup_backend &be = *be_;
  be.name = g.name;
  be.parallel = g.nslots;
  be.alloc = cuda_soup_alloc;
  be.free = cuda_soup_free;
  be.validate = cuda_soup_validate;
  be.accumulate = cuda_soup_accumulate;
  be.materialize = cuda_soup_materialize;
  be.convert = cuda_soup_convert;
  be.hash = cuda_soup_hash;
  be.host_memory = 0;
  be.download = cuda_soup_download;
  be.upload = cuda_soup_upload;
}
