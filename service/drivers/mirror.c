/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <endian.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <time.h>

#include "copy-io.h"
#include "fd-util.h"
#include "job.h"
#include "lock.h"
#include "log.h"
#include "error-message.h"
#include "macro.h"
#include "mirror.h"
#include "siphash24.h"
#include "step-budget.h"
#include "target-file.h"

#define GRANULARITY_MIN 512U
#define GRANULARITY_MAX (UINT32_C(64) << 20)
#define BLOCKS_MAX (MIRROR_TABLE_MAX / sizeof(uint64_t))
#define POLL_DEFAULT_NS (100 * NSEC_PER_MSEC)
#define MAX_INTERVAL_DEFAULT_NS (10 * NSEC_PER_SEC)
#define BLOCK_DEVICE_POLL_NS NSEC_PER_SEC
#define INOTIFY_READS_MAX 64U
/* Blocks between looks at the clock: reading it costs about as much as a block that needs no read. */
#define BLOCKS_PER_CLOCK 64U
/* The largest read request: large enough that a request costs little against the data it moves
 * (qemu-img convert reads 2 MiB at a time), small enough for a worker thread's buffer. */
#define SPAN_MAX (UINT64_C(8) << 20)
/* How far ahead of the span it reads the source is read ahead, in spans of the same size. One span
 * ahead, the device had not finished it by the time the pass asked for it: a first pass spent
 * half its time waiting in pread() (strace -T, the bench's 1 GiB mirror, its writes going out
 * meanwhile). Four ahead (16 MiB by default), the bench's mirror to ready took 0.98 s min and
 * 1.10 s median against 1.01 s and 1.25 s one ahead (15 runs each, in turns, a busy machine);
 * eight ahead was no better (1.10 s and 1.40 s against 1.03 s and 1.24 s, 12 runs). It is only a
 * hint to the page cache: it costs no memory of ours, and a throttled step, which reads short
 * spans, reads ahead as little. */
#define READ_AHEAD_SPANS 4U

/* What a block of the target holds, beyond the hashes of data: nothing known (a device written in
 * place, before the first pass; a block whose write failed, which may hold some of it), and, with
 * sync=top, nothing of its own (it reads through to the backing file). A data hash that happens
 * to be one of these is moved off them. */
#define HASH_UNKNOWN UINT64_C(0)
#define HASH_UNALLOCATED UINT64_C(1)

struct Mirror {
        Image *source;                  /* read-only, shared with whoever writes it */
        uint64_t size;                  /* the source's virtual size at the start */
        TargetFile target;
        Image *writer;                  /* the image in the target */
        bool sync_top;

        uint32_t granularity;
        uint64_t chunk;
        uint64_t poll_ns;
        uint64_t max_interval_ns;
        CopyIo io;                      /* read-ahead; the block buffer is the thread's (copy-io.h) */

        uint64_t n_blocks;
        uint64_t **pages;               /* what the target holds, block by block (see held_hash) */
        uint64_t n_pages;
        uint8_t key[SIPHASH_KEY_SIZE];  /* of the block hashes, random, for this job only */
        uint64_t zero_hash;             /* of a full block of zeroes */
        uint64_t zero_hash_tail;        /* of the last block of zeroes, which may be shorter */

        /* The pass in progress. */
        bool in_pass;
        bool final_pass;
        bool ready;
        uint64_t offset;
        uint64_t extent_end;            /* the source's status is known up to here ... */
        uint64_t extent_hash;           /* ... and reads as this (zeroes, or unallocated) */
        uint64_t pass_written;
        uint64_t pass_ended_ns;

        int inotify_fd;
        atomic_uint_fast64_t passes;
};

/* ---- block hashes --------------------------------------------------------------------------- */

/* SipHash (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012; siphash24.h): a keyed
 * PRF. The guest writes the blocks we compare, so an unkeyed hash would let it craft a block that
 * hashes like zeroes (written as zeroes) or like what the block held before (not copied at all).
 * With a random key that never leaves the process, a guest can only guess, at a chance of 2^-64
 * per block. */

/* SipHash-1-3 rather than the paper's SipHash-2-4: it hashes at about 5 GiB/s where 2-4 makes
 * 3 GiB/s (one core, -O2), and a pass reads and then hashes on one thread, so 2-4 would cost a
 * fast disk's mirror as much time as its reads. 1-3 has no known attack; it is the variant that
 * Rust's and Python's hash tables use against inputs chosen by an attacker, which is our case:
 * the guest chooses blocks but never sees a hash. */
static uint64_t block_hash(const Mirror *m, const void *data, size_t n) {
        uint64_t h = siphash13(data, n, m->key);
        return h <= HASH_UNALLOCATED ? h + 2 : h;
}

/* Eight blocks at once. SipHash is a chain of dependent additions, rotations and xors, so one
 * block at a time leaves most of a core's execution units idle, and a first pass spent over a
 * third of its CPU time there (perf: 38 % of the daemon's, 1 GiB raw to raw). The same rounds over eight blocks side by side, one block per 64-bit lane of an
 * AVX-512 register (where vprolq makes each rotation one instruction), give the same hashes at
 * 15 to 18 GB/s against 5 GB/s (this machine, 64 KiB blocks; test-mirror-hash checks they are
 * equal). Not with AVX2: without a rotate instruction, and with the lanes filled word by word,
 * eight lanes in two 256-bit halves made 3.6 GB/s, slower than one block at a time, so anything
 * else hashes block by block. GCC's vector extensions, not intrinsics: the same code is plain C
 * to read and to check against siphash13(). */
#if defined(__x86_64__) && defined(__GNUC__)
#define HASH_LANES 8U
typedef uint64_t HashLanes __attribute__((vector_size(HASH_LANES * sizeof(uint64_t))));

#define LANES_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define LANES_SIPROUND(v0, v1, v2, v3)                                                                  \
        do {                                                                                            \
                v0 += v1; v1 = LANES_ROTL(v1, 13); v1 ^= v0; v0 = LANES_ROTL(v0, 32);                   \
                v2 += v3; v3 = LANES_ROTL(v3, 16); v3 ^= v2;                                            \
                v0 += v3; v3 = LANES_ROTL(v3, 21); v3 ^= v0;                                            \
                v2 += v1; v1 = LANES_ROTL(v1, 17); v1 ^= v2; v2 = LANES_ROTL(v2, 32);                   \
        } while (0)

static uint64_t le64_at(const uint8_t *p) {
        uint64_t w;
        memcpy(&w, p, sizeof(w));
        return le64toh(w);
}

/* siphash13() of the HASH_LANES blocks of n bytes at data, data + stride, ...: the same steps, lane
 * by lane (siphash24.c). */
__attribute__((target("avx512f"))) static void siphash13_lanes(const uint8_t *data, size_t stride, size_t n,
                                                                 const uint8_t key[SIPHASH_KEY_SIZE],
                                                                 uint64_t ret[static HASH_LANES]) {
        uint64_t k0 = le64_at(key), k1 = le64_at(key + 8);
        HashLanes v0 = (HashLanes) {} + (k0 ^ UINT64_C(0x736f6d6570736575)),
                  v1 = (HashLanes) {} + (k1 ^ UINT64_C(0x646f72616e646f6d)),
                  v2 = (HashLanes) {} + (k0 ^ UINT64_C(0x6c7967656e657261)),
                  v3 = (HashLanes) {} + (k1 ^ UINT64_C(0x7465646279746573)), w;
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                for (unsigned l = 0; l < HASH_LANES; l++)
                        w[l] = le64_at(data + l * stride + i);
                v3 ^= w;
                LANES_SIPROUND(v0, v1, v2, v3);
                v0 ^= w;
        }
        /* The last word carries the length's low byte in its top byte. */
        for (unsigned l = 0; l < HASH_LANES; l++) {
                uint64_t x = (uint64_t) n << 56;
                for (size_t k = 0; i + k < n; k++)
                        x |= (uint64_t) data[l * stride + i + k] << (8 * k);
                w[l] = x;
        }
        v3 ^= w;
        LANES_SIPROUND(v0, v1, v2, v3);
        v0 ^= w;

        v2 ^= (HashLanes) {} + 0xff;
        for (unsigned r = 0; r < 3; r++)
                LANES_SIPROUND(v0, v1, v2, v3);
        w = v0 ^ v1 ^ v2 ^ v3;
        memcpy(ret, &w, sizeof(w));
}
#else
#define HASH_LANES 1U
#endif

bool mirror_hash_vectorized(void) {
#if HASH_LANES > 1
        return __builtin_cpu_supports("avx512f");
#else
        return false;
#endif
}

void mirror_siphash13_blocks(const void *data, size_t length, size_t block_size, const uint8_t key[SIPHASH_KEY_SIZE],
                             uint64_t *ret) {
        const uint8_t *p = data;
        size_t n = length / block_size + (length % block_size != 0), b = 0;

        assert(block_size > 0);
        /* Whole groups of full blocks in lanes; the rest (and the short last block) one by one. */
#if HASH_LANES > 1
        if (mirror_hash_vectorized())
                for (; b + HASH_LANES <= n && (b + HASH_LANES) * block_size <= length; b += HASH_LANES)
                        siphash13_lanes(p + b * block_size, block_size, block_size, key, ret + b);
#endif
        for (; b < n; b++)
                ret[b] = siphash13(p + b * block_size, MIN(block_size, length - b * block_size), key);
}

static int random_key(uint8_t key[SIPHASH_KEY_SIZE]) {
        ssize_t n = getrandom(key, SIPHASH_KEY_SIZE, 0);
        if (n < 0)
                return negative_errno();
        return n == SIPHASH_KEY_SIZE ? 0 : -EIO;
}

/* The hash of a block of zeroes: a full one, or the shorter last one. */
static uint64_t zero_hash(const Mirror *m, size_t n) {
        return n == m->granularity ? m->zero_hash : m->zero_hash_tail;
}

/* ---- open and free ---------------------------------------------------------------------------- */

void mirror_free(Mirror *m) {
        if (!m)
                return;
        image_close(m->writer);
        image_close(m->source);
        target_file_discard(&m->target);
        safe_close(m->inotify_fd);
        for (uint64_t i = 0; m->pages && i < m->n_pages; i++)
                free(m->pages[i]);
        free(m->pages);
        free(m);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Mirror *, mirror_free);

/* What every block of the target holds before the first pass. */
static uint64_t initial_hash(const Mirror *m, uint64_t block) {
        /* A device's old content; or what a mirror resumed after a restart wrote into its target
         * before (mirror.h): of a source that may have changed since, so all of it is written
         * again, zeroes included. */
        if (target_file_in_place(&m->target) || m->target.resumed)
                return HASH_UNKNOWN;
        if (m->sync_top)
                return HASH_UNALLOCATED;        /* a new image reads through, or zeroes if raw */
        return block + 1 == m->n_blocks ? m->zero_hash_tail : m->zero_hash;
}

/* ---- what the target holds, block by block -------------------------------------------------- */

/* One hash per block, in pages of PAGE_ENTRIES. A page is allocated only when one of its blocks
 * first comes to hold something else than before the first pass; until then it reads as
 * initial_hash(). So memory follows what was copied, not the size that the source's header
 * claims: a new target's zeroes, and whatever the source has no data in, cost nothing. (A device
 * written in place starts out unknown everywhere, and costs the worst case: BLOCKS_MAX at most.) */
#define PAGE_SHIFT 12
#define PAGE_ENTRIES (UINT64_C(1) << PAGE_SHIFT)

static uint64_t held_hash(const Mirror *m, uint64_t block) {
        const uint64_t *page = m->pages[block >> PAGE_SHIFT];
        return page ? page[block & (PAGE_ENTRIES - 1)] : initial_hash(m, block);
}

/* Before a block is written: the page that will record it, so that once the block is written,
 * recording it cannot fail. */
static int held_page(Mirror *m, uint64_t block) {
        uint64_t i = block >> PAGE_SHIFT, first = i << PAGE_SHIFT, n = MIN(PAGE_ENTRIES, m->n_blocks - first);
        uint64_t *page;

        if (m->pages[i])
                return 0;
        page = malloc(n * sizeof(uint64_t));
        if (!page)
                return -ENOMEM;
        for (uint64_t k = 0; k < n; k++)
                page[k] = initial_hash(m, first + k);
        m->pages[i] = page;
        return 0;
}

static void set_held_hash(Mirror *m, uint64_t block, uint64_t h) {
        m->pages[block >> PAGE_SHIFT][block & (PAGE_ENTRIES - 1)] = h;
}

static uint64_t blocks_of(uint64_t size, uint64_t granularity) {
        return size / granularity + (size % granularity != 0);
}

/* Sizes for messages: "64 GiB", "1.5 MiB". */
static const char *format_size(char buf[static 32], uint64_t bytes) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        unsigned u = 0;

        while (u + 1 < ELEMENTSOF(units) && bytes >= UINT64_C(1) << (10 * (u + 1)))
                u++;
        if (bytes % (UINT64_C(1) << (10 * u)) == 0)
                (void) snprintf(buf, 32, "%" PRIu64 " %s", bytes >> (10 * u), units[u]);
        else
                (void) snprintf(buf, 32, "%.1f %s", (double) bytes / (double) (UINT64_C(1) << (10 * u)), units[u]);
        return buf;
}

/* The granularity, such that the table stays within MIRROR_TABLE_MAX even when every page of it
 * is allocated: the source's header may claim any size, and a guest may write every block. By
 * default the blocks grow with the source (64 KiB up to 512 GiB, then the finest power of 2 that
 * fits); a granularity asked for that is too fine is refused, naming the finest that fits. */
static int choose_granularity(Mirror *m, uint32_t requested, char **ret_error) {
        char size[32], need[32], cap[32], gran[32], fit_text[32];
        uint64_t fit = GRANULARITY_MIN, g;

        while (blocks_of(m->size, fit) > BLOCKS_MAX)
                fit <<= 1;
        g = requested ?: MAX((uint64_t) MIRROR_GRANULARITY_DEFAULT, fit);

        if (fit > GRANULARITY_MAX)
                return error_message(ret_error, -E2BIG,
                                     "Mirroring '%s' (%s) in blocks of %s (the largest granularity) would take up to %s "
                                     "of memory to track them, more than the %s allowed",
                                     image_path(m->source), format_size(size, m->size),
                                     format_size(gran, GRANULARITY_MAX),
                                     format_size(need, blocks_of(m->size, GRANULARITY_MAX) * sizeof(uint64_t)),
                                     format_size(cap, MIRROR_TABLE_MAX));
        if (g < fit)
                return error_message(ret_error, -E2BIG,
                                     "Mirroring '%s' (%s) in blocks of %s would take up to %s of memory to track them, "
                                     "more than the %s allowed: use a granularity of at least %s",
                                     image_path(m->source), format_size(size, m->size), format_size(gran, g),
                                     format_size(need, blocks_of(m->size, g) * sizeof(uint64_t)),
                                     format_size(cap, MIRROR_TABLE_MAX), format_size(fit_text, fit));

        m->granularity = (uint32_t) g;
        m->n_blocks = blocks_of(m->size, g);
        m->n_pages = blocks_of(m->n_blocks, PAGE_ENTRIES);
        m->pages = calloc(MAX(m->n_pages, UINT64_C(1)), sizeof(uint64_t *));
        return m->pages ? 0 : -ENOMEM;
}

/* A qcow2 source that another process writes cannot be mirrored consistently: QEMU keeps its L2
 * and refcount updates in its cache and writes them back when it sees fit, not atomically, so
 * the file's metadata is not what its guest sees, and a cluster it frees and reuses may be read
 * under the old mapping. A raw source has no metadata: being written is what a mirror is for.
 * Writers are found by QEMU's lock protocol, so a writer that takes no locks goes unseen. */
static int check_qcow2_writer(Mirror *m, char **ret_error) {
        int r;

        if (image_format(m->source) != IMAGE_FORMAT_QCOW2)
                return 0;
        r = image_lock_held_by_others(image_fd(m->source), IMAGE_PERM_WRITE);
        if (r < 0)
                return error_message(ret_error, r, "Could not test the locks of image '%s': %m", image_path(m->source));
        if (r > 0)
                return error_message(ret_error, -EBUSY,
                                     "Image '%s' is a qcow2 image that another process (a running QEMU?) is writing; "
                                     "its metadata lives in that process's memory, so a mirror of it cannot be "
                                     "consistent: mirror it from inside QEMU (drive-mirror), or stop the writer",
                                     image_path(m->source));
        return 0;
}

int mirror_open(const MirrorParams *p, Mirror **ret, char **ret_error) {
        _cleanup_(mirror_freep) Mirror *m = NULL;
        uint32_t g = p->granularity;
        int r;

        if (g != 0 && (g < GRANULARITY_MIN || g > GRANULARITY_MAX || (g & (g - 1))))
                return error_message(ret_error, -EINVAL,
                                     "Parameter 'granularity' expects a power of 2 in range [512B, 64MB]");
        if (!p->copy.target || !*p->copy.target || !p->copy.files)
                return error_message(ret_error, -EINVAL, "No target given");

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->target = (TargetFile) TARGET_FILE_NULL;
        m->inotify_fd = -EBADF;
        m->poll_ns = p->poll_ns ?: POLL_DEFAULT_NS;
        m->max_interval_ns = p->max_interval_ns ?: MAX_INTERVAL_DEFAULT_NS;

        /* The source, with its chain: someone else may keep writing it, which is the point. */
        r = copy_open_source(&p->copy, IMAGE_OPEN_SHARE_WRITE, &m->source, ret_error);
        if (r < 0)
                return r;
        m->size = image_size(m->source);
        /* As QEMU's drive-mirror: sync=top of an image without backing file is sync=full. */
        m->sync_top = p->copy.sync_top && image_backing(m->source);

        r = check_qcow2_writer(m, ret_error);
        if (r < 0)
                return r;
        r = choose_granularity(m, g, ret_error);
        if (r < 0)
                return r;
        g = m->granularity;
        /* A step reads at least one block. */
        m->chunk = MAX(p->buf_size ?: MIRROR_CHUNK_DEFAULT, (uint64_t) g);

        r = copy_open_target(&p->copy, m->source, m->sync_top, &m->target, &m->writer, ret_error);
        if (r < 0)
                return r;

        /* The mirror hashes what it copies, so it reads every block itself: no offload. */
        copy_io_init(&m->io, m->source, m->writer, m->chunk, COPY_IO_NO_OFFLOAD);

        r = random_key(m->key);
        if (r < 0)
                return error_message(ret_error, r, "Could not get a random key for the mirror of '%s': %m",
                                     image_path(m->source));
        _cleanup_free_ void *zeroes = calloc(1, g);
        if (!zeroes)
                return -ENOMEM;
        m->zero_hash = block_hash(m, zeroes, g);
        m->zero_hash_tail = block_hash(m, zeroes, m->size % g ?: g);

        /* Files tell us when they change; devices are polled. */
        if (S_ISREG(image_stat(m->source)->st_mode)) {
                /* The file we have open, whatever its name is now (and nothing looked up by
                 * name: it may have come as a descriptor). */
                char proc_path[PROC_FD_PATH_MAX];
                m->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                if (m->inotify_fd >= 0 && inotify_add_watch(m->inotify_fd, proc_fd_path(proc_path, image_fd(m->source)),
                                                            IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE) < 0)
                        m->inotify_fd = safe_close(m->inotify_fd);
        } else
                m->poll_ns = MAX(m->poll_ns, BLOCK_DEVICE_POLL_NS);

        m->in_pass = true;              /* the first pass is the copy */
        *ret = TAKE_PTR(m);
        return 0;
}

uint64_t mirror_size(const Mirror *m) {
        return m->size;
}

ImageFormat mirror_source_format(const Mirror *m) {
        return image_format(m->source);
}

TargetFile *mirror_target_file(Mirror *m) {
        return &m->target;
}

uint64_t mirror_memory(const Mirror *m) {
        return mirror_memory_estimate(m) + image_memory_estimate(m->source) + image_memory_estimate(m->writer);
}

void mirror_list_files(const Mirror *m, FileUseFunc f, void *userdata) {
        image_chain_list_files(m->source, NULL, FILE_USE_READ, f, userdata);
        target_file_list(&m->target, f, userdata);
}

uint32_t mirror_granularity(const Mirror *m) {
        return m->granularity;
}

uint64_t mirror_memory_estimate(const Mirror *m) {
        /* Every page allocated, the page index; the block buffer is the worker thread's. */
        return sizeof(*m) + m->n_blocks * sizeof(uint64_t) + m->n_pages * sizeof(uint64_t *);
}

uint64_t mirror_passes(const Mirror *m) {
        return atomic_load(&((Mirror *) m)->passes);
}

/* ---- passes ----------------------------------------------------------------------------------- */

static uint64_t now_ns(void) {
        struct timespec ts;
        assert_se(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

/* Drains the inotify queue; true if the source was touched since last time. A bounded number of
 * reads: a writer that never stops could otherwise keep the queue from ever running dry. What is
 * left is read next time, and says "changed" again, which is true. */
static bool source_changed(Mirror *m) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool changed = false;

        if (m->inotify_fd < 0)
                return false;
        for (unsigned i = 0; i < INOTIFY_READS_MAX && read(m->inotify_fd, buf, sizeof(buf)) > 0; i++)
                changed = true;
        return changed;
}

static bool should_start_pass(Mirror *m, const JobStepInput *in) {
        uint64_t since = now_ns() - m->pass_ended_ns;

        if (in->complete_requested || in->cancel_requested)
                return true;
        if (source_changed(m))
                return true;
        if (m->inotify_fd < 0)
                return since >= m->poll_ns;
        return since >= m->max_interval_ns;
}

/* Ends the run with an error and a message. */
_printf_(3, 4) static int step_fail(JobStepResult *out, int r, const char *format, ...) {
        va_list ap;

        out->finished = true;
        out->ret = r;
        va_start(ap, format);
        out->error = error_message_format(r, format, ap);
        va_end(ap);
        return r;
}

/* The last pass is the copy that gets published: a qcow2 writer that came after mirror_open must
 * not overlap it either. Checked as it begins and as it ends; a writer that comes and goes in
 * between, or takes no locks, goes unseen. */
static int check_final_pass(Mirror *m, JobStepResult *out) {
        _cleanup_free_ char *error = NULL;
        int r;

        if (!m->final_pass)
                return 0;
        r = check_qcow2_writer(m, &error);
        if (r < 0) {
                out->finished = true;
                out->ret = r;
                out->error = TAKE_PTR(error);
        }
        return r;
}

static void source_error(Mirror *m, Job *j, JobStepResult *out, int r) {
        job_step_io_error(j, out, true, true, r, "%s", image_error(m->source) ?: strerror(-r));
}

/* What the source holds at 'off' by block status, asked once per extent, not once per block:
 * m->extent_end and m->extent_hash say it up to where it changes (zeroes, with sync=top what the
 * top does not allocate, or data to read). Offsets only grow within a pass, and a pass starts
 * with extent_end = 0, so the one extent kept is always the one at or after what was asked last. */
static int source_extent(Mirror *m, uint64_t off) {
        uint64_t length;
        bool readable;
        int r;

        if (off < m->extent_end)
                return 0;

        m->extent_hash = HASH_UNKNOWN;
        if (m->sync_top) {
                LayerKind kind;
                r = image_layer_status(m->source, off, m->size - off, &kind, &length);
                readable = kind == LAYER_DATA;
                if (r >= 0 && kind == LAYER_UNALLOCATED)
                        m->extent_hash = HASH_UNALLOCATED;
        } else {
                ImageExtent e;
                r = image_block_status(m->source, off, m->size - off, &e);
                length = e.length;
                readable = !e.zero;
        }
        if (r < 0)
                return r;
        m->extent_end = off + length;
        if (readable)
                m->extent_hash = HASH_UNKNOWN;  /* data: read it */
        else if (m->extent_hash == HASH_UNKNOWN)
                m->extent_hash = m->zero_hash;  /* zeroes; fixed up for the tail by zero_hash() */
        return 0;
}

/* Must the block [off, off + len) be read to know what it holds? Data, or a block of mixed
 * content (an extent that needs no read ends inside it). source_extent(off) was asked. */
static bool block_needs_read(const Mirror *m, uint64_t off, size_t len) {
        return m->extent_hash == HASH_UNKNOWN || off + len > m->extent_end;
}

/* The hash of a block that needs no read, from block status. */
static uint64_t block_known_hash(const Mirror *m, size_t len) {
        return m->extent_hash == HASH_UNALLOCATED ? HASH_UNALLOCATED : zero_hash(m, len);
}

/* Makes the target's block hold what block status says the source's does, without reading it:
 * zeroes, or (sync=top) nothing of its own. */
static int write_known_block(Mirror *m, uint64_t off, size_t len, uint64_t h, void *buffer) {
        if (h == HASH_UNALLOCATED && m->granularity >= image_cluster_size(m->writer))
                return image_discard(m->writer, off, len);
        if (h == HASH_UNALLOCATED) {
                /* Smaller than the target's clusters, so it cannot drop the block: it gets what
                 * the source reads there instead, which is the same. */
                int r = image_read(m->source, buffer, off, len);
                if (r < 0)
                        return r;
                return image_write(m->writer, buffer, off, len);
        }
        assert(h == zero_hash(m, len));
        return image_write_zeroes(m->writer, off, len);
}

/* At the start of a pass: see what others wrote since the last one, at the same size. */
static int refresh_source(Mirror *m, Job *j, JobStepResult *out) {
        int r;

        m->extent_end = 0;
        r = image_refresh(m->source);
        if (r < 0) {
                source_error(m, j, out, r);
                return r;
        }
        if (image_size(m->source) == m->size)
                return 0;

        return step_fail(out, -EIO, "Source '%s' changed its size from %" PRIu64 " to %" PRIu64 " bytes",
                         image_path(m->source), m->size, image_size(m->source));
}

static void mirror_end_pass(Mirror *m, Job *j, JobStepResult *out) {
        if (m->pass_written > 0 || !m->ready) {
                /* Ready means flushed: the target holds the source as of this pass. */
                int r = image_flush(m->writer);
                if (r < 0) {
                        job_step_io_error(j, out, false, false, r, "%s", image_error(m->writer) ?: strerror(-r));
                        return;         /* the pass is repeated after a retry */
                }
        }

        atomic_fetch_add(&m->passes, 1);
        m->in_pass = false;
        m->pass_ended_ns = now_ns();
        if (!m->ready) {
                m->ready = true;
                out->ready = true;
        }
        if (m->final_pass) {
                out->finished = true;
                return;
        }
        out->idle_ns = m->poll_ns;
}

/* The most bytes a span reads in one request: the chunk (buf_size), but at most SPAN_MAX, since
 * the span is held in the worker thread's buffer and buf_size may be up to 1 GiB; in whole
 * blocks, at least one. */
static uint64_t span_max(const Mirror *m) {
        return MAX(MIN(m->chunk, SPAN_MAX) / m->granularity, UINT64_C(1)) * m->granularity;
}

/* A block that block status says needs no read (zeroes, or unallocated with sync=top): made so
 * in the target if the target holds something else. Returns 0 or a negative errno (reported). */
static int mirror_known_block(Mirror *m, Job *j, JobStepResult *out, uint64_t *progress) {
        uint64_t off = m->offset, b = off / m->granularity;
        size_t len = (size_t) MIN((uint64_t) m->granularity, m->size - off);
        uint64_t h = block_known_hash(m, len);
        int r;

        if (h != held_hash(m, b)) {
                r = held_page(m, b);
                if (r < 0)
                        return step_fail(out, r, "Out of memory to track the blocks of '%s'", image_path(m->source));
                /* The thread's buffer only for a block that must be read after all (see
                 * write_known_block()): a pass over nothing touches no memory. */
                void *buffer = NULL;
                if (h == HASH_UNALLOCATED && m->granularity < image_cluster_size(m->writer)) {
                        buffer = copy_io_buffer(len);
                        if (!buffer)
                                return step_fail(out, -ENOMEM, "Out of memory for a block of '%s'",
                                                 image_path(m->source));
                }
                r = write_known_block(m, off, len, h, buffer);
                if (r < 0) {
                        set_held_hash(m, b, HASH_UNKNOWN);      /* see mirror_write_run() */
                        job_step_io_error(j, out, false, false, r, "%s", image_error(m->writer) ?: strerror(-r));
                        return r;
                }
                set_held_hash(m, b, h);
                m->pass_written += len;
                if (m->ready)
                        *progress += len;       /* a change: more work, and done */
        }
        if (!m->ready)
                *progress += len;               /* the copy: every block counts */
        m->offset += len;
        return 0;
}

/* Writes the blocks [first, first + n) of the span read at 'start' into 'buffer', whose hashes
 * are 'hashes', and records them. One request for the run (copy_io_write() splits it where
 * zeroes begin or end), so that a first pass writes in large requests as it reads. */
static int mirror_write_run(Mirror *m, Job *j, JobStepResult *out, const uint8_t *buffer, const uint64_t *hashes,
                            uint64_t start, uint64_t first, uint64_t n, uint64_t *progress) {
        uint64_t g = m->granularity, off = first * g, end = MIN((first + n) * g, m->size);
        int r;

        /* Every page that will record the run first, so that once it is written, recording it
         * cannot fail. */
        for (uint64_t b = first; b < first + n; b++) {
                r = held_page(m, b);
                if (r < 0)
                        return step_fail(out, r, "Out of memory to track the blocks of '%s'", image_path(m->source));
        }
        r = copy_io_write(&m->io, buffer + (off - start), off, (size_t) (end - off));
        if (r < 0) {
                /* Some of the run may have been written (copy-io writes it in several requests
                 * where zeroes begin or end, and a failed write may leave part of its bytes): the
                 * run's blocks hold neither what the table said nor surely what was read. Were
                 * the table left as it was, a block whose source went back to what the table
                 * says would never be written again, and the target published would differ. */
                for (uint64_t b = first; b < first + n; b++)
                        set_held_hash(m, b, HASH_UNKNOWN);
                job_step_io_error(j, out, false, false, r, "%s", image_error(m->writer) ?: strerror(-r));
                return r;
        }
        for (uint64_t b = first; b < first + n; b++)
                set_held_hash(m, b, hashes[b - start / g]);
        /* Its write-back on its way while the next span is read. */
        copy_io_write_behind(&m->io, off, end - off);
        m->pass_written += end - off;
        if (m->ready)
                *progress += end - off;
        return 0;
}

/* Reads the span of blocks that need a read from m->offset on, at most 'max' bytes (whole
 * blocks, at least one), in one request; hashes each of its blocks and writes the runs of those
 * the target does not hold. The source may change meanwhile, before the read, during it or
 * after: what is written is what was hashed, from the same buffer, so the table says what the
 * target holds, and a block that changed after it was read hashes differently in a later pass.
 * Sets *ret_read to the bytes read. Returns 0 or a negative errno (reported). */
static int mirror_span(Mirror *m, Job *j, JobStepResult *out, uint64_t max, uint64_t *ret_read, uint64_t *progress) {
        uint64_t g = m->granularity, start = m->offset, end = start, first = start / g, run = 0, full = span_max(m);
        uint64_t *hashes;
        uint8_t *buffer;
        int r;

        *ret_read = 0;

        /* The thread's buffer, taken only when there is something to read (a pass over what
         * needs no read touches no memory), and as large as the largest span, so that it does
         * not grow span after span: a span's data, then its blocks' hashes, kept until its runs
         * are written and recorded. A span is a whole number of blocks, so the hashes are
         * aligned. */
        buffer = copy_io_buffer((size_t) (full + full / g * sizeof(uint64_t)));
        if (!buffer)
                return step_fail(out, -ENOMEM, "Out of memory for a span of '%s'", image_path(m->source));
        hashes = (uint64_t *) (buffer + full);

        /* Block after block that needs a read, across extents (a file system's, a qcow2 image's
         * clusters), up to 'max'. */
        do {
                size_t len = (size_t) MIN(g, m->size - end);
                r = source_extent(m, end);
                if (r < 0) {
                        source_error(m, j, out, r);
                        return r;
                }
                if (!block_needs_read(m, end, len))
                        break;
                end += len;
        } while (end < m->size && end - start < max);
        assert(end > start);

        /* The next spans on their way from the device while this one is hashed and written:
         * only data, since read-ahead of a hole fills the page cache with zeroes. One request a
         * span: the kernel cuts a readahead() down to the device's read-ahead size (8 MiB here),
         * and copy-io asks for each range once, so after the first span each asks for one more. */
        if (m->extent_hash == HASH_UNKNOWN && m->extent_end > end) {
                uint64_t ahead_end = MIN(m->extent_end, end + READ_AHEAD_SPANS * (end - start));
                for (uint64_t o = end; o < ahead_end; o += end - start)
                        copy_io_read_ahead(&m->io, o, MIN(end - start, ahead_end - o));
        }
        r = image_read(m->source, buffer, start, (size_t) (end - start));
        if (r < 0) {
                source_error(m, j, out, r);
                return r;
        }
        *ret_read = end - start;

        /* As block_hash(), several blocks at once (see siphash13_lanes()). */
        mirror_siphash13_blocks(buffer, (size_t) (end - start), g, m->key, hashes);
        for (uint64_t i = 0; i < (end - start + g - 1) / g; i++)
                if (hashes[i] <= HASH_UNALLOCATED)
                        hashes[i] += 2;

        /* Runs of blocks whose hash is not what the target holds, each one write. A failure
         * leaves m->offset at the run that failed: what came before it is done and recorded, and
         * the step is tried again from there (or the pass goes on, if the error is ignored). */
        for (uint64_t b = first, off = start; off < end; b++, off += g) {
                if (hashes[b - first] != held_hash(m, b)) {
                        run++;
                        continue;
                }
                if (run > 0) {
                        m->offset = (b - run) * g;
                        r = mirror_write_run(m, j, out, buffer, hashes, start, b - run, run, progress);
                        if (r < 0)
                                goto finish;
                        run = 0;
                }
        }
        if (run > 0) {
                uint64_t b = blocks_of(end, g);
                m->offset = (b - run) * g;
                r = mirror_write_run(m, j, out, buffer, hashes, start, b - run, run, progress);
                if (r < 0)
                        goto finish;
        }
        m->offset = end;
        r = 0;
finish:
        if (!m->ready)
                *progress += m->offset - start; /* the copy: every block done counts */
        return r;
}

static void mirror_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        StepBudget budget = step_budget_start(in);
        Mirror *m = data;
        uint64_t read_bytes = 0, progress = 0, max = span_max(m);

        /* A mirror keeps no checkpoints (mirror.h): stopping, it has nothing to make durable. */
        if (in->checkpoint_only)
                return;

        /* buf_size bounds the bytes a step reads (mirror.h): by default, one span per step. */
        budget.bytes_left = MIN(budget.bytes_left, m->chunk);

        if (!m->in_pass) {
                if (!should_start_pass(m, in)) {
                        out->idle_ns = m->poll_ns;
                        return;
                }
                m->in_pass = true;
                m->offset = 0;
                m->pass_written = 0;
        }
        /* Once asked to finish, the pass that begins after the request is the last one. */
        if ((in->complete_requested || in->cancel_requested) && !m->final_pass && m->offset == 0)
                m->final_pass = true;
        if (m->offset == 0 && (refresh_source(m, j, out) < 0 || check_final_pass(m, out) < 0))
                return;
        if (m->offset == 0)
                m->io.readahead_end = 0;        /* a new pass reads from the start again */
        /* Spans of data read in one request each, and blocks that need no read one by one, while
         * the step's budget lasts. Blocks that need no read (zeroes, unallocated, unchanged) spend
         * none of the byte budget, so time bounds the step too, looked at every BLOCKS_PER_CLOCK
         * of them or after each span: a source whose header claims a huge empty size must not hold
         * a worker, and the job's pause and cancel, for a whole pass. */
        for (unsigned work = 0; m->offset < m->size;) {
                size_t len = (size_t) MIN((uint64_t) m->granularity, m->size - m->offset);
                int r;

                if (budget.bytes_left == 0)
                        break;
                if (work >= BLOCKS_PER_CLOCK) {
                        if (!step_budget_left(&budget))
                                break;
                        work = 0;
                }

                r = source_extent(m, m->offset);
                if (r < 0) {
                        source_error(m, j, out, r);
                        break;
                }
                if (block_needs_read(m, m->offset, len)) {
                        uint64_t n;

                        /* At least one block, however small the throttled step's quota. */
                        r = mirror_span(m, j, out,
                                        MAX(step_budget_clamp(&budget, max) / m->granularity, UINT64_C(1)) * m->granularity,
                                        &n, &progress);
                        read_bytes += n;
                        step_budget_spend(&budget, n);
                        if (r < 0)
                                break;
                        work = BLOCKS_PER_CLOCK;        /* I/O: look at the clock */
                } else {
                        if (mirror_known_block(m, j, out, &progress) < 0)
                                break;
                        work++;
                }
        }

        out->dispatched = read_bytes;
        out->progress = progress;
        out->has_remaining = true;
        out->remaining = m->ready ? 0 : m->size - m->offset;

        if (!out->io_error.set && !out->finished && m->offset >= m->size && check_final_pass(m, out) >= 0)
                mirror_end_pass(m, j, out);
}

/* ---- lifecycle hooks ------------------------------------------------------------------------ */

static bool mirror_cancel(Job *j, void *data, bool force) {
        /* As QEMU's mirror: before ready every cancel is a force cancel; in ready a soft cancel
         * finishes with a last pass, and the target stays a point-in-time copy. */
        return force || !job_status_is_ready(job_status(j));
}

static int mirror_complete(Job *j, void *data, char **ret_error) {
        if (!job_status_is_ready(job_status(j))) {
                if (ret_error && asprintf(ret_error, "The active block job '%s' cannot be completed", job_id(j)) < 0)
                        *ret_error = NULL;
                return -EBUSY;
        }
        return 0;
}

static int mirror_prepare(Job *j, void *data, char **ret_error) {
        Mirror *m = data;
        int r;

        r = image_flush(m->writer);
        if (r < 0) {
                *ret_error = strdup(strempty(image_error(m->writer)));
                return r;
        }
        return target_file_prepare(&m->target, ret_error);
}

static void mirror_commit(Job *j, void *data) {
        Mirror *m = data;
        target_file_commit(&m->target, j);
}

static void mirror_abort(Job *j, void *data) {
        Mirror *m = data;
        m->writer = image_close(m->writer);
        target_file_discard(&m->target);
}

static void mirror_clean(Job *j, void *data) {
        Mirror *m = data;

        m->source = image_close(m->source);
        m->writer = image_close(m->writer);
        target_file_discard(&m->target);
        m->inotify_fd = safe_close(m->inotify_fd);
}

static void mirror_free_data(void *data) {
        mirror_free(data);
}

const JobDriver mirror_driver = {
        .type = JOB_TYPE_MIRROR,
        .step = mirror_step,
        .prepare = mirror_prepare,
        .commit = mirror_commit,
        .abort = mirror_abort,
        .clean = mirror_clean,
        .cancel = mirror_cancel,
        .complete = mirror_complete,
        .free = mirror_free_data,
};
