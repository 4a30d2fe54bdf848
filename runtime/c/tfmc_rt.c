/*
 * tfmc C runtime: linked into every AOT-compiled CPU artifact (a shared library).
 *
 * Owns the artifact's thread pool:
 *
 *   void    tfmc_parallel_for(void (*body)(void *ctx, int64_t lo, int64_t hi),
 *                             void *ctx, int64_t n);
 *   void    tfmc_set_num_threads(int32_t n);
 *   int32_t tfmc_get_num_threads(void);
 *
 * Contract of tfmc_parallel_for (the same as the host's, runtime/src/parallel.rs): runs
 * body(ctx, lo, hi) over disjoint chunks [lo, hi) covering [0, n) exactly once each, possibly
 * concurrently, and returns when every chunk has finished (all the body's writes are then
 * visible to the caller). n <= 0 does nothing.
 *
 * Design and invariants:
 * - The pool is created lazily on first use (pthread_once). Its size (threads including the
 *   caller) is TFMC_NUM_THREADS when that is a whole number in 1..TFMC_MAX_THREADS, else the
 *   number of online processors. tfmc_set_num_threads changes it later (n <= 0 restores the
 *   default); workers are only ever added, surplus ones sleep.
 * - One job runs at a time. A call made while another is running (from a worker, i.e. a
 *   nested parallel loop, or from any other thread) runs serially on its caller: no deadlock,
 *   no waiting.
 * - The caller participates. Chunks (about 16 per thread, at least one iteration each) are
 *   claimed with an atomic counter: dynamic load balancing.
 * - A worker registers for a job (under the mutex, while it is open) before claiming chunks
 *   and deregisters after (an atomic count, release); the caller closes the job once the
 *   counter is exhausted and waits until no worker is registered (acquire), so no worker can
 *   touch a job's body, ctx or counter after the call returns.
 * - Waiting threads watch for 50 us (TFMC_SPIN_NS) before sleeping on a condition variable:
 *   a kernel's parallel loops come back to back, and a futex wake-up costs more than a small
 *   loop's work.
 * - No allocation per call; the per-call synchronisation is a mutex/condvar handshake (or a
 *   watched generation) per participating worker.
 * - Not fork-safe: a child of a fork must not call into the pool (as with OpenMP runtimes).
 * - Never unloaded once the pool exists: workers run this library's code forever, so before
 *   starting them the library pins itself (dlopen of its own file with RTLD_NODELETE); a
 *   dlclose after that leaves it mapped. Link with -pthread (and -ldl on glibc < 2.34).
 *
 * Also owns the artifact's heap buffers (the same contract as runtime/src/heap.rs):
 *
 *   void *tfmc_calloc(int64_t n, int64_t size);  n*size zeroed bytes, NULL on overflow/OOM
 *   void *tfmc_malloc(int64_t n, int64_t size);  the same with any contents (a buffer the
 *                                                kernel writes before reading)
 *   void  tfmc_free(void *p);
 *   void  tfmc_heap_trim(void);                  frees every cached block
 *
 * Blocks of at least 1 MiB are kept after tfmc_free in a process-wide cache (at most 8
 * blocks, TFMC_HEAP_CACHE_MB MiB, default 1024, 0 disables) and handed out again (zeroed
 * by tfmc_calloc, as left by tfmc_malloc) to a later request they fit (at most twice its
 * size): a kernel called in a loop reuses its intermediates instead of faulting in fresh
 * pages each call. Each block starts with a 64-byte header holding its capacity. With
 * TFMC_HEAP_POISON=1 in the environment, tfmc_malloc fills its blocks with 0xFF bytes (NaN
 * floats), so a plan that reads such a buffer before writing it shows in tests.
 *
 * Plain C11 + pthreads; compiles cleanly with -Wall -Wextra.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sysconf(_SC_NPROCESSORS_ONLN) under -std=c11 */
#endif

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Upper bound on the pool size (threads including the caller). */
#define TFMC_MAX_THREADS 1024
/* Chunks handed out per participating thread. */
#define TFMC_CHUNKS_PER_THREAD 16

typedef void (*tfmc_body_fn)(void *ctx, int64_t lo, int64_t hi);

static pthread_once_t tfmc_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t tfmc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tfmc_wake = PTHREAD_COND_INITIALIZER; /* workers wait for a job */
static pthread_cond_t tfmc_idle = PTHREAD_COND_INITIALIZER; /* caller waits for workers */

/* Pool size wanted (threads including the caller); read without the mutex. */
static atomic_int tfmc_num_threads = 1;
/* Worker threads started so far (guarded by tfmc_mu). */
static int tfmc_spawned = 0;
/* Set while a job runs: later calls run serially. */
static atomic_flag tfmc_busy = ATOMIC_FLAG_INIT;
/* True on pool workers: nested calls run serially. */
static _Thread_local int tfmc_in_worker = 0;

/* The current job (fields other than next_chunk guarded by tfmc_mu). */
static uint64_t tfmc_generation = 0; /* bumped for every job */
static int tfmc_job_open = 0;        /* workers may still register */
static int tfmc_job_workers = 0;     /* workers with id < this take part */
static atomic_int tfmc_active = 0;   /* registered workers (registration under tfmc_mu) */
static atomic_uint_fast64_t tfmc_posted = 0; /* the last generation, read without the mutex */
static tfmc_body_fn tfmc_job_body = NULL;
static void *tfmc_job_ctx = NULL;
static int64_t tfmc_job_n = 0;
static int64_t tfmc_job_chunk = 1;
static int64_t tfmc_job_nchunks = 0;
static atomic_int_fast64_t tfmc_next_chunk = 0;

/* How long a thread watches for what it waits on before sleeping (ns). */
#define TFMC_SPIN_NS 50000

static int64_t tfmc_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void tfmc_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A new job was posted since generation seen. */
static int tfmc_posted_since(uint64_t seen) {
    return atomic_load_explicit(&tfmc_posted, memory_order_acquire) != seen;
}

/* No worker is registered for the current job (the argument is unused). */
static int tfmc_no_worker(uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&tfmc_active, memory_order_acquire) == 0;
}

/* Spins until done(arg) holds or TFMC_SPIN_NS have passed (the caller then sleeps on its
 * condition variable). A kernel's parallel loops come back to back: a futex wake-up costs more
 * than a small loop's work. */
static void tfmc_spin_until(int (*done)(uint64_t), uint64_t arg) {
    int64_t start = tfmc_now_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (done(arg)) {
                return;
            }
            tfmc_pause();
        }
        if (tfmc_now_ns() - start >= TFMC_SPIN_NS) {
            return;
        }
    }
}

/* Claims and runs chunks of the current job until none is left. */
static void tfmc_run_chunks(tfmc_body_fn body, void *ctx, int64_t n, int64_t chunk,
                            int64_t nchunks) {
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&tfmc_next_chunk, 1, memory_order_relaxed);
        if (i >= nchunks) {
            return;
        }
        int64_t lo = i * chunk;
        int64_t hi = (n - lo < chunk) ? n : lo + chunk;
        body(ctx, lo, hi);
    }
}

static void *tfmc_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    tfmc_in_worker = 1;
    pthread_mutex_lock(&tfmc_mu);
    uint64_t seen = tfmc_generation;
    pthread_mutex_unlock(&tfmc_mu);
    for (;;) {
        tfmc_spin_until(tfmc_posted_since, seen);
        pthread_mutex_lock(&tfmc_mu);
        while (tfmc_generation == seen) {
            pthread_cond_wait(&tfmc_wake, &tfmc_mu);
        }
        seen = tfmc_generation;
        if (!tfmc_job_open || id >= tfmc_job_workers) {
            pthread_mutex_unlock(&tfmc_mu);
            continue;
        }
        tfmc_body_fn body = tfmc_job_body;
        void *ctx = tfmc_job_ctx;
        int64_t n = tfmc_job_n, chunk = tfmc_job_chunk, nchunks = tfmc_job_nchunks;
        atomic_fetch_add_explicit(&tfmc_active, 1, memory_order_relaxed);
        pthread_mutex_unlock(&tfmc_mu);
        tfmc_run_chunks(body, ctx, n, chunk, nchunks);
        if (atomic_fetch_sub_explicit(&tfmc_active, 1, memory_order_release) == 1) {
            /* The caller may be asleep: wake it under the mutex (no lost wake-up). */
            pthread_mutex_lock(&tfmc_mu);
            pthread_cond_signal(&tfmc_idle);
            pthread_mutex_unlock(&tfmc_mu);
        }
    }
    return NULL;
}

/* Starts workers until tfmc_spawned == want - 1 (or thread creation fails). Holds tfmc_mu. */
static void tfmc_spawn_locked(int want) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) {
        return;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (tfmc_spawned < want - 1) {
        pthread_t t;
        if (pthread_create(&t, &attr, tfmc_worker, (void *)(intptr_t)tfmc_spawned) != 0) {
            break;
        }
        tfmc_spawned++;
    }
    pthread_attr_destroy(&attr);
}

static int tfmc_clamp_threads(long n) {
    if (n < 1) {
        return 1;
    }
    if (n > TFMC_MAX_THREADS) {
        return TFMC_MAX_THREADS;
    }
    return (int)n;
}

/* TFMC_NUM_THREADS if valid, else the online processor count. */
static int tfmc_default_threads(void) {
    const char *s = getenv("TFMC_NUM_THREADS");
    if (s != NULL && *s != '\0') {
        char *end = NULL;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno == 0 && end != NULL && *end == '\0' && v >= 1 && v <= TFMC_MAX_THREADS) {
            return (int)v;
        }
    }
    return tfmc_clamp_threads(sysconf(_SC_NPROCESSORS_ONLN));
}

/* Makes dlclose leave this library mapped: its workers' code must stay. */
static void tfmc_pin_library(void) {
    Dl_info info;
    if (dladdr((const void *)&tfmc_once, &info) != 0 && info.dli_fname != NULL) {
        /* The handle is kept on purpose: RTLD_NODELETE pins the object for good. */
        (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    }
}

static void tfmc_init(void) {
    tfmc_pin_library();
    int n = tfmc_default_threads();
    pthread_mutex_lock(&tfmc_mu);
    tfmc_spawn_locked(n);
    atomic_store(&tfmc_num_threads, tfmc_spawned + 1);
    pthread_mutex_unlock(&tfmc_mu);
}

void tfmc_set_num_threads(int32_t n) {
    pthread_once(&tfmc_once, tfmc_init);
    int want = n <= 0 ? tfmc_default_threads() : tfmc_clamp_threads(n);
    pthread_mutex_lock(&tfmc_mu);
    tfmc_spawn_locked(want);
    atomic_store(&tfmc_num_threads, want <= tfmc_spawned + 1 ? want : tfmc_spawned + 1);
    pthread_mutex_unlock(&tfmc_mu);
}

int32_t tfmc_get_num_threads(void) {
    pthread_once(&tfmc_once, tfmc_init);
    return atomic_load(&tfmc_num_threads);
}

void tfmc_parallel_for(tfmc_body_fn body, void *ctx, int64_t n) {
    if (n <= 0) {
        return;
    }
    if (tfmc_in_worker) {
        body(ctx, 0, n);
        return;
    }
    pthread_once(&tfmc_once, tfmc_init);
    int threads = atomic_load(&tfmc_num_threads);
    if (threads <= 1 || n == 1 || atomic_flag_test_and_set(&tfmc_busy)) {
        body(ctx, 0, n);
        return;
    }
    int64_t want_chunks = (int64_t)threads * TFMC_CHUNKS_PER_THREAD;
    int64_t chunk = n / want_chunks + (n % want_chunks != 0);
    int64_t nchunks = (n - 1) / chunk + 1;
    int workers = threads - 1;
    if ((int64_t)workers > nchunks - 1) {
        workers = (int)(nchunks - 1);
    }

    pthread_mutex_lock(&tfmc_mu);
    tfmc_job_body = body;
    tfmc_job_ctx = ctx;
    tfmc_job_n = n;
    tfmc_job_chunk = chunk;
    tfmc_job_nchunks = nchunks;
    tfmc_job_workers = workers;
    atomic_store_explicit(&tfmc_next_chunk, 0, memory_order_relaxed);
    tfmc_job_open = 1;
    tfmc_generation++;
    atomic_store_explicit(&tfmc_posted, tfmc_generation, memory_order_release);
    pthread_cond_broadcast(&tfmc_wake);
    pthread_mutex_unlock(&tfmc_mu);

    tfmc_run_chunks(body, ctx, n, chunk, nchunks);

    /* Every chunk is claimed: close the job (no worker registers after this) and wait for the
     * registered workers, watching a little while before sleeping. */
    pthread_mutex_lock(&tfmc_mu);
    tfmc_job_open = 0;
    pthread_mutex_unlock(&tfmc_mu);
    tfmc_spin_until(tfmc_no_worker, 0);
    pthread_mutex_lock(&tfmc_mu);
    while (atomic_load_explicit(&tfmc_active, memory_order_acquire) > 0) {
        pthread_cond_wait(&tfmc_idle, &tfmc_mu);
    }
    tfmc_job_body = NULL;
    tfmc_job_ctx = NULL;
    pthread_mutex_unlock(&tfmc_mu);
    atomic_flag_clear(&tfmc_busy);
}

/* ---- heap buffers ---- */

#define TFMC_HEAP_HEADER 64
#define TFMC_HEAP_MIN_CACHED ((size_t)1 << 20)
#define TFMC_HEAP_MAX_BLOCKS 8

static pthread_mutex_t tfmc_heap_mu = PTHREAD_MUTEX_INITIALIZER;
/* Cached blocks (header addresses and capacities), oldest first; guarded by tfmc_heap_mu. */
static unsigned char *tfmc_heap_block[TFMC_HEAP_MAX_BLOCKS + 1];
static size_t tfmc_heap_cap[TFMC_HEAP_MAX_BLOCKS + 1];
static int tfmc_heap_count = 0;
static size_t tfmc_heap_bytes = 0;
static pthread_once_t tfmc_heap_once = PTHREAD_ONCE_INIT;
static size_t tfmc_heap_limit = (size_t)1024 << 20;
static int tfmc_heap_poison = 0;

static void tfmc_heap_init(void) {
    const char *p = getenv("TFMC_HEAP_POISON");
    tfmc_heap_poison = p != NULL && strcmp(p, "1") == 0;
    const char *v = getenv("TFMC_HEAP_CACHE_MB");
    if (v != NULL && *v != '\0') {
        char *end = NULL;
        unsigned long long mb = strtoull(v, &end, 10);
        if (end != NULL && *end == '\0' && mb <= (SIZE_MAX >> 20)) {
            tfmc_heap_limit = (size_t)mb << 20;
        }
    }
}

static void tfmc_heap_remove(int i) {
    tfmc_heap_bytes -= tfmc_heap_cap[i];
    for (int j = i; j + 1 < tfmc_heap_count; j++) {
        tfmc_heap_block[j] = tfmc_heap_block[j + 1];
        tfmc_heap_cap[j] = tfmc_heap_cap[j + 1];
    }
    tfmc_heap_count--;
}

/* tfmc_calloc (zero) or tfmc_malloc. */
static void *tfmc_heap_alloc(int64_t n, int64_t size, int zero) {
    if (n < 0 || size < 0) {
        return NULL;
    }
    size_t bytes;
    if (__builtin_mul_overflow((size_t)n, (size_t)size, &bytes)) {
        return NULL;
    }
    if (bytes >= TFMC_HEAP_MIN_CACHED) {
        unsigned char *hit = NULL;
        pthread_mutex_lock(&tfmc_heap_mu);
        int best = -1;
        for (int i = 0; i < tfmc_heap_count; i++) {
            size_t cap = tfmc_heap_cap[i];
            if (cap >= bytes && cap / 2 <= bytes && (best < 0 || cap < tfmc_heap_cap[best])) {
                best = i;
            }
        }
        if (best >= 0) {
            hit = tfmc_heap_block[best];
            tfmc_heap_remove(best);
        }
        pthread_mutex_unlock(&tfmc_heap_mu);
        if (hit != NULL) {
            if (zero) {
                memset(hit + TFMC_HEAP_HEADER, 0, bytes);
            }
            return hit + TFMC_HEAP_HEADER;
        }
    }
    if (bytes > SIZE_MAX - TFMC_HEAP_HEADER) {
        return NULL;
    }
    unsigned char *base = zero ? calloc(1, bytes + TFMC_HEAP_HEADER) : malloc(bytes + TFMC_HEAP_HEADER);
    if (base == NULL) {
        return NULL;
    }
    memcpy(base, &bytes, sizeof bytes);
    return base + TFMC_HEAP_HEADER;
}

void *tfmc_calloc(int64_t n, int64_t size) {
    return tfmc_heap_alloc(n, size, 1);
}

void *tfmc_malloc(int64_t n, int64_t size) {
    void *p = tfmc_heap_alloc(n, size, 0);
    pthread_once(&tfmc_heap_once, tfmc_heap_init);
    if (p != NULL && tfmc_heap_poison) {
        memset(p, 0xFF, (size_t)n * (size_t)size);
    }
    return p;
}

void tfmc_free(void *p) {
    if (p == NULL) {
        return;
    }
    pthread_once(&tfmc_heap_once, tfmc_heap_init);
    unsigned char *base = (unsigned char *)p - TFMC_HEAP_HEADER;
    size_t cap;
    memcpy(&cap, base, sizeof cap);
    if (cap < TFMC_HEAP_MIN_CACHED || cap > tfmc_heap_limit) {
        free(base);
        return;
    }
    unsigned char *evict[TFMC_HEAP_MAX_BLOCKS + 1];
    int nevict = 0;
    pthread_mutex_lock(&tfmc_heap_mu);
    tfmc_heap_block[tfmc_heap_count] = base;
    tfmc_heap_cap[tfmc_heap_count] = cap;
    tfmc_heap_count++;
    tfmc_heap_bytes += cap;
    while (tfmc_heap_count > 0 && (tfmc_heap_bytes > tfmc_heap_limit || tfmc_heap_count > TFMC_HEAP_MAX_BLOCKS)) {
        evict[nevict++] = tfmc_heap_block[0];
        tfmc_heap_remove(0);
    }
    pthread_mutex_unlock(&tfmc_heap_mu);
    for (int i = 0; i < nevict; i++) {
        free(evict[i]);
    }
}

void tfmc_heap_trim(void) {
    unsigned char *all[TFMC_HEAP_MAX_BLOCKS + 1];
    int n = 0;
    pthread_mutex_lock(&tfmc_heap_mu);
    while (tfmc_heap_count > 0) {
        all[n++] = tfmc_heap_block[0];
        tfmc_heap_remove(0);
    }
    pthread_mutex_unlock(&tfmc_heap_mu);
    for (int i = 0; i < n; i++) {
        free(all[i]);
    }
}
