/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>

#include "job.h"
#include "log.h"
#include "macro.h"
#include "mirror.h"
#include "raw-image.h"

#define GRANULARITY_MIN 512U
#define GRANULARITY_MAX (UINT32_C(64) << 20)
#define POLL_DEFAULT_NS (100 * NSEC_PER_MSEC)
#define MAX_INTERVAL_DEFAULT_NS (10 * NSEC_PER_SEC)
#define BLOCK_DEVICE_POLL_NS NSEC_PER_SEC

struct Mirror {
        RawSource source;
        RawTarget target;

        uint32_t granularity;
        uint64_t chunk;
        uint64_t poll_ns;
        uint64_t max_interval_ns;
        void *buffer;                   /* one block */

        uint64_t n_blocks;
        uint64_t *hashes;               /* what the target holds, block by block */
        uint64_t zero_hash;             /* of a full block of zeroes */
        uint64_t zero_hash_tail;        /* of the last block of zeroes, which may be shorter */

        /* The pass in progress. */
        bool in_pass;
        bool final_pass;
        bool ready;
        uint64_t offset;
        uint64_t data_start, data_end;  /* the source's data extent around offset, from SEEK_DATA */
        uint64_t pass_written;
        uint64_t pass_ended_ns;

        int inotify_fd;
        atomic_uint_fast64_t passes;
};

/* ---- block hashes --------------------------------------------------------------------------- */

static inline uint64_t rotl64(uint64_t x, unsigned r) {
        return (x << r) | (x >> (64 - r));
}

/* A 64-bit multiply-rotate hash over 8-byte words: fast enough to hash at memory speed, and a
 * collision (a changed block taken for unchanged) has a chance of 2^-64 per block. */
static uint64_t block_hash(const void *data, size_t n) {
        const uint64_t m1 = UINT64_C(0x87c37b91114253d5), m2 = UINT64_C(0x4cf5ad432745937f);
        const uint8_t *p = data;
        uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ (n * m2);
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                uint64_t k;
                memcpy(&k, p + i, 8);
                k = rotl64(k * m1, 31) * m2;
                h = rotl64(h ^ k, 27) * 5 + UINT64_C(0x52dce729);
        }
        if (i < n) {
                uint64_t k = 0;
                memcpy(&k, p + i, n - i);
                h ^= rotl64(k * m1, 31) * m2;
        }
        h ^= h >> 33;
        h *= UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h *= UINT64_C(0xc4ceb9fe1a85ec53);
        return h ^ (h >> 33);
}

/* The hash of a block of zeroes: a full one, or the shorter last one. */
static uint64_t zero_hash(const Mirror *m, size_t n) {
        return n == m->granularity ? m->zero_hash : m->zero_hash_tail;
}

/* ---- open and free ---------------------------------------------------------------------------- */

void mirror_free(Mirror *m) {
        if (!m)
                return;
        raw_source_close(&m->source);
        raw_target_discard(&m->target);
        safe_close(m->inotify_fd);
        free(m->hashes);
        free(m->buffer);
        free(m);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Mirror *, mirror_free);

int mirror_open(const MirrorParams *p, Mirror **ret, char **ret_error) {
        _cleanup_(mirror_freep) Mirror *m = NULL;
        uint32_t g = p->granularity ?: MIRROR_GRANULARITY_DEFAULT;
        int r;

        if (g < GRANULARITY_MIN || g > GRANULARITY_MAX || (g & (g - 1))) {
                if (ret_error)
                        *ret_error = strdup("Parameter 'granularity' expects a power of 2 in range [512B, 64MB]");
                return -EINVAL;
        }

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->source = (RawSource) RAW_SOURCE_NULL;
        m->target = (RawTarget) RAW_TARGET_NULL;
        m->inotify_fd = -EBADF;
        m->granularity = g;
        /* A step reads at least one block. */
        m->chunk = MAX(p->buf_size ?: MIRROR_CHUNK_DEFAULT, (uint64_t) g);
        m->poll_ns = p->poll_ns ?: POLL_DEFAULT_NS;
        m->max_interval_ns = p->max_interval_ns ?: MAX_INTERVAL_DEFAULT_NS;

        r = raw_source_open(&m->source, p->source, ret_error);
        if (r < 0)
                return r;
        if (!p->target || !*p->target) {
                if (ret_error)
                        *ret_error = strdup("No target given");
                return -EINVAL;
        }
        r = raw_target_open(&m->target, p->target, &m->source.st, m->source.size, p->overwrite, p->named_temp_file,
                            ret_error);
        if (r < 0)
                return r;

        if (posix_memalign(&m->buffer, 4096, g) != 0)
                return -ENOMEM;

        /* The target starts as a sparse file: every block of it holds zeroes. */
        m->n_blocks = (m->source.size + g - 1) / g;
        m->hashes = calloc(MAX(m->n_blocks, UINT64_C(1)), sizeof(uint64_t));
        if (!m->hashes)
                return -ENOMEM;
        memset(m->buffer, 0, g);
        m->zero_hash = block_hash(m->buffer, g);
        m->zero_hash_tail = block_hash(m->buffer, m->source.size % g ?: g);
        for (uint64_t b = 0; b < m->n_blocks; b++)
                m->hashes[b] = b + 1 == m->n_blocks ? m->zero_hash_tail : m->zero_hash;

        /* Files tell us when they change; devices are polled. */
        if (S_ISREG(m->source.st.st_mode)) {
                m->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                if (m->inotify_fd >= 0 &&
                    inotify_add_watch(m->inotify_fd, m->source.path, IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE) < 0)
                        m->inotify_fd = safe_close(m->inotify_fd);
        } else
                m->poll_ns = MAX(m->poll_ns, BLOCK_DEVICE_POLL_NS);

        m->in_pass = true;              /* the first pass is the copy */
        *ret = TAKE_PTR(m);
        return 0;
}

uint64_t mirror_size(const Mirror *m) {
        return m->source.size;
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

/* Drains the inotify queue; true if the source was touched since last time. */
static bool source_changed(Mirror *m) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool changed = false;

        if (m->inotify_fd < 0)
                return false;
        while (read(m->inotify_fd, buf, sizeof(buf)) > 0)
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

/* Is [off, off + len) all hole in the source? Keeps the SEEK_DATA result for the next blocks. */
static int block_is_hole(Mirror *m, uint64_t off, uint64_t len, bool *ret) {
        if (off < m->data_start || off >= m->data_end) {
                off_t d = lseek(m->source.fd, (off_t) off, SEEK_DATA);
                if (d < 0 && errno == ENXIO) {
                        m->data_start = m->data_end = UINT64_MAX;       /* hole to the end */
                        *ret = true;
                        return 0;
                }
                if (d < 0 && !IN_SET(errno, EINVAL, EOPNOTSUPP))
                        return negative_errno();
                if (d < 0) {
                        m->data_start = 0;
                        m->data_end = m->source.size;
                } else {
                        off_t h = lseek(m->source.fd, d, SEEK_HOLE);
                        m->data_start = (uint64_t) d;
                        m->data_end = h < 0 ? m->source.size : (uint64_t) h;
                }
                if (m->data_start == UINT64_MAX || m->data_start >= off + len) {
                        /* Keep the extent ahead: the blocks up to it are holes. */
                        *ret = true;
                        return 0;
                }
        }
        *ret = m->data_start >= off + len;
        return 0;
}

static int write_block(Mirror *m, Job *j, JobStepResult *out, uint64_t off, size_t len, bool zero) {
        if (zero) {
                /* Make it a hole in the target too, or write zeroes where that is not possible. */
                if (fallocate(m->target.file.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) >= 0)
                        return 0;
                memset(m->buffer, 0, len);
        }
        return raw_target_write(&m->target, j, out, m->buffer, len, off);
}

static int check_source_size(Mirror *m, Job *j, JobStepResult *out) {
        struct stat st;

        if (!S_ISREG(m->source.st.st_mode))
                return 0;
        if (fstat(m->source.fd, &st) < 0)
                return 0;
        if ((uint64_t) st.st_size == m->source.size)
                return 0;

        out->finished = true;
        out->ret = -EIO;
        if (asprintf(&out->error, "Source '%s' changed its size from %" PRIu64 " to %" PRIu64 " bytes",
                     m->source.path, m->source.size, (uint64_t) st.st_size) < 0)
                out->error = NULL;
        return -EIO;
}

static void mirror_end_pass(Mirror *m, Job *j, JobStepResult *out) {
        if (m->pass_written > 0 || !m->ready) {
                /* Ready means flushed: the target holds the source as of this pass. */
                if (fsync(m->target.file.fd) < 0) {
                        int r = negative_errno();
                        job_step_io_error(j, out, false, false, r, "Could not flush '%s': %s", m->target.path,
                                          strerror(-r));
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

static void mirror_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Mirror *m = data;
        uint64_t budget = m->chunk, read_bytes = 0, progress = 0;

        if (in->max_bytes > 0)
                budget = MAX(MIN(budget, in->max_bytes), (uint64_t) 1);

        if (!m->in_pass) {
                if (!should_start_pass(m, in)) {
                        out->idle_ns = m->poll_ns;
                        return;
                }
                m->in_pass = true;
                m->offset = 0;
                m->data_start = m->data_end = 0;
                m->pass_written = 0;
        }
        /* Once asked to finish, the pass that begins after the request is the last one. */
        if ((in->complete_requested || in->cancel_requested) && !m->final_pass && m->offset == 0)
                m->final_pass = true;
        if (m->offset == 0 && check_source_size(m, j, out) < 0)
                return;

        while (m->offset < m->source.size && read_bytes < budget) {
                uint64_t off = m->offset, b = off / m->granularity;
                size_t len = (size_t) MIN((uint64_t) m->granularity, m->source.size - off);
                bool hole;
                uint64_t h;
                int r;

                r = block_is_hole(m, off, len, &hole);
                if (r < 0) {
                        job_step_io_error(j, out, true, true, r, "Could not read '%s' at offset %" PRIu64 ": %s",
                                          m->source.path, off, strerror(-r));
                        break;
                }
                if (hole)
                        h = zero_hash(m, len);
                else {
                        if (raw_source_read(&m->source, j, out, m->buffer, len, off) < 0)
                                break;
                        read_bytes += len;
                        h = block_hash(m->buffer, len);
                }

                if (h != m->hashes[b]) {
                        /* A hole, or data that is all zeroes: punch rather than write. */
                        bool zero = h == zero_hash(m, len);
                        if (write_block(m, j, out, off, len, zero) < 0)
                                break;
                        m->hashes[b] = h;
                        m->pass_written += len;
                        if (m->ready)
                                progress += len;        /* a change: more work, and done */
                }
                if (!m->ready)
                        progress += len;                /* the copy: every block counts */
                m->offset += len;
        }

        out->dispatched = read_bytes;
        out->progress = progress;
        out->has_remaining = true;
        out->remaining = m->ready ? 0 : m->source.size - m->offset;

        if (!out->io_error.set && !out->finished && m->offset >= m->source.size)
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
        return raw_target_prepare(&m->target, ret_error);
}

static void mirror_commit(Job *j, void *data) {
        Mirror *m = data;
        raw_target_commit(&m->target, j);
}

static void mirror_abort(Job *j, void *data) {
        Mirror *m = data;
        raw_target_discard(&m->target);
}

static void mirror_clean(Job *j, void *data) {
        Mirror *m = data;

        raw_source_close(&m->source);
        raw_target_discard(&m->target);
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
