/* threads.h: a small fixed pthread pool with a blocking parallel_for.
 *
 * The calling thread takes part as worker 0, so a pool of n threads starts
 * n-1 pthreads. parallel_for hands out [i, i+grain) chunks of [0, n) through
 * an atomic counter and returns when every chunk is done. One parallel_for
 * runs at a time per pool (calls from inside a task run serially inline).
 * Tasks must not call multithreaded OpenBLAS: the CPU backend keeps OpenBLAS
 * at one thread and does all splitting here.
 */
#pragma once

#include <stdint.h>

struct thread_pool;

/* fn processes items [i0, i1) on worker tid (0 <= tid < threads). */
typedef void (*parallel_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* threads <= 0 means every online core. Returns NULL on failure. */
struct thread_pool *thread_pool_new(int threads);
void thread_pool_free(struct thread_pool *p);
int thread_pool_size(const struct thread_pool *p);
/* Runs fn over [0, n) in chunks of grain items (grain >= 1). */
void parallel_for(struct thread_pool *p, int64_t n, int64_t grain, parallel_fn fn, void *ctx);
