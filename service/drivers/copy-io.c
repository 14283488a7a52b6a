/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "copy-io.h"
#include "log.h"
#include "macro.h"

#define BUFFER_ALIGN 4096U
#define GRANULE_MIN 4096U

/* ---- the thread's buffer --------------------------------------------------------------------- */

/* The pointer lives in a thread-local variable, for speed, and in a pthread key, whose destructor
 * frees it when the thread exits (C11's _Thread_local has no destructors). */
static _Thread_local void *thread_buffer;
static _Thread_local size_t thread_buffer_size;
static pthread_key_t buffer_key;
static pthread_once_t buffer_key_once = PTHREAD_ONCE_INIT;

static void buffer_destroy(void *p) {
        free(p);
}

static void buffer_key_init(void) {
        assert_se(pthread_key_create(&buffer_key, buffer_destroy) == 0);
}

void *copy_io_buffer(size_t size) {
        void *p;

        if (size <= thread_buffer_size)
                return thread_buffer;

        size = (size + BUFFER_ALIGN - 1) / BUFFER_ALIGN * BUFFER_ALIGN;
        if (posix_memalign(&p, BUFFER_ALIGN, size) != 0)
                return NULL;
        assert_se(pthread_once(&buffer_key_once, buffer_key_init) == 0);
        if (pthread_setspecific(buffer_key, p) != 0) {
                free(p);
                return NULL;
        }
        /* Nothing is kept across calls: the old content need not move. */
        free(thread_buffer);
        thread_buffer = p;
        thread_buffer_size = size;
        return p;
}

void copy_io_buffer_release(void) {
        if (!thread_buffer)
                return;
        assert_se(pthread_setspecific(buffer_key, NULL) == 0);
        free(thread_buffer);
        thread_buffer = NULL;
        thread_buffer_size = 0;
}

size_t copy_io_buffer_size(void) {
        return thread_buffer_size;
}

/* ---- zeroes ---------------------------------------------------------------------------------- */

bool copy_io_is_zero(const void *buf, size_t n) {
        const uint8_t *p = buf;
        const uint64_t *w;

        /* Most data is not zeroes, and says so in its first bytes: look there first. */
        if (n >= 16) {
                uint64_t a, b;
                memcpy(&a, p, 8);
                memcpy(&b, p + 8, 8);
                if (a | b)
                        return false;
        }
        for (; n > 0 && ((uintptr_t) p & 7); n--, p++)
                if (*p)
                        return false;
        /* Eight words at a time, OR'ed: one branch per 64 bytes, which the compiler vectorises. */
        for (w = (const uint64_t *) p; n >= 64; n -= 64, w += 8)
                if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
                        return false;
        for (p = (const uint8_t *) w; n > 0; n--, p++)
                if (*p)
                        return false;
        return true;
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static const char *const offload_names[] = {
        [COPY_IO_READ_WRITE] = "reading and writing",
        [COPY_IO_COPY_RANGE] = "copy_file_range()",
        [COPY_IO_CLONE] = "FICLONERANGE",
};

void copy_io_init(CopyIo *c, Image *source, Image *target, uint64_t chunk, unsigned flags) {
        bool files = image_is_raw_file(source) && image_is_raw_file(target);

        *c = (CopyIo) {
                .source = source,
                .target = target,
                .flags = flags,
                .chunk = chunk ?: COPY_IO_CHUNK_DEFAULT,
                .granule = MAX(image_cluster_size(target), GRANULE_MIN),
                .offload = files && !(flags & COPY_IO_NO_OFFLOAD) ? COPY_IO_CLONE : COPY_IO_READ_WRITE,
        };
        if (c->offload == COPY_IO_CLONE) {
                c->clone_align = image_file_block_size(target);
                if (c->clone_align == 0)
                        c->offload = COPY_IO_COPY_RANGE;
        }
        if (c->offload == COPY_IO_COPY_RANGE && (flags & COPY_IO_DETECT_ZEROES))
                c->offload = COPY_IO_READ_WRITE;
}

/* The best method after 'm' that this job may use and that was not refused. */
static CopyIoOffload next_method(const CopyIo *c, CopyIoOffload m) {
        if (m == COPY_IO_CLONE && !(c->flags & COPY_IO_DETECT_ZEROES) && !(c->refused & (1U << COPY_IO_COPY_RANGE)))
                return COPY_IO_COPY_RANGE;
        return COPY_IO_READ_WRITE;
}

/* A method the kernel refused is not tried again by this job: once is enough to know that these
 * two files cannot (a different file system, one that cannot share extents, an old kernel). */
static void refused(CopyIo *c, CopyIoOffload m, int r) {
        c->refused |= 1U << m;
        if (c->offload == m || (c->refused & (1U << c->offload)))
                c->offload = next_method(c, m);
        log_debug_errno(r, "Copying '%s' to '%s' with %s failed (%m); using %s from here on.",
                        image_path(c->source), image_path(c->target), offload_names[m],
                        offload_names[c->offload]);
}

/* ---- writing what was read ------------------------------------------------------------------- */

static uint64_t granule_end(const CopyIo *c, uint64_t pos, uint64_t end) {
        return MIN((pos / c->granule + 1) * c->granule, end);
}

static int write_run(CopyIo *c, const uint8_t *p, uint64_t offset, uint64_t length, bool zero) {
        int r;

        if (!zero) {
                r = image_write(c->target, p, offset, (size_t) length);
                if (r >= 0)
                        c->stats.written += length;
                return r;
        }
        if (c->flags & COPY_IO_TARGET_ZEROED) {
                /* A new file's hole, a new image's unallocated cluster: zeroes already. */
                c->stats.zero_skipped += length;
                return 0;
        }
        r = image_write_zeroes(c->target, offset, length);
        if (r >= 0)
                c->stats.zero_written += length;
        return r;
}

int copy_io_write(CopyIo *c, const void *buf, uint64_t offset, size_t length) {
        const uint8_t *p = buf;
        uint64_t end = offset + length, pos = offset;

        /* Runs of granules alike (data, or zeroes), each one request. Granules are aligned to
         * the target's offsets, so that a run of zeroes covers whole clusters. */
        while (pos < end) {
                uint64_t run_end = granule_end(c, pos, end);
                bool zero = copy_io_is_zero(p + (pos - offset), (size_t) (run_end - pos));
                int r;

                while (run_end < end) {
                        uint64_t next = granule_end(c, run_end, end);
                        if (copy_io_is_zero(p + (run_end - offset), (size_t) (next - run_end)) != zero)
                                break;
                        run_end = next;
                }
                r = write_run(c, p + (pos - offset), pos, run_end - pos, zero);
                if (r < 0)
                        return r;
                pos = run_end;
        }
        return 0;
}

/* ---- requests in flight ---------------------------------------------------------------------- */

void copy_io_read_ahead(CopyIo *c, uint64_t offset, uint64_t length) {
        uint64_t end = offset + length;

        /* Each range once: asking again for pages on their way costs a walk of the page cache. */
        if (length == 0 || end <= c->readahead_end)
                return;
        offset = MAX(offset, c->readahead_end);
        image_readahead(c->source, offset, end - offset);
        c->readahead_end = end;
}

void copy_io_write_behind(CopyIo *c, uint64_t offset, uint64_t length) {
        /* Batched: write-back started for each small extent of a sparse image costs more than it
         * saves (the file system allocates a little at a time), so it waits for a few chunks. */
        if (offset < c->write_behind_start || c->write_behind_end == 0)
                c->write_behind_start = offset;
        c->write_behind_end = offset + length;
        if (c->write_behind_end - c->write_behind_start < COPY_IO_WRITE_BEHIND_MIN)
                return;
        image_write_behind(c->target, c->write_behind_start, c->write_behind_end - c->write_behind_start);
        c->write_behind_start = c->write_behind_end;
}

int copy_io_flush(CopyIo *c) {
        /* Whatever write-behind had not started yet, the flush writes. */
        c->write_behind_start = c->write_behind_end = 0;
        return image_flush(c->target);
}

/* ---- the methods ----------------------------------------------------------------------------- */

/* Each returns 1 and the bytes done, 0 if this method declined the range (try the next one), or
 * a negative errno and the image it is about. */

static int copy_read_write(CopyIo *c, uint64_t offset, uint64_t length, uint64_t *ret_done, Image **ret_failed) {
        /* A piece holds whole granules (a qcow2 target's clusters): a cluster written in two
         * parts would be allocated, filled and written by the first and rewritten by the second. */
        uint64_t n = MIN(length, c->chunk), piece = MIN(n, MAX((uint64_t) COPY_IO_PIECE, (uint64_t) c->granule));
        void *buf;
        int r;

        buf = copy_io_buffer((size_t) piece);
        if (!buf) {
                *ret_failed = NULL;
                return -ENOMEM;
        }
        /* This chunk (asked for already, but for the first of a range) and the next one on their
         * way from the device while this one is copied and written; only within the range asked
         * for (data): read-ahead of a hole fills the page cache with zeroes, which cost a sparse
         * image more time than its data. */
        copy_io_read_ahead(c, offset, n + MIN(c->chunk, length - n));

        /* A piece at a time, through a buffer that stays in the CPU's cache from the read that
         * fills it to the zero check and the write that empty it (see COPY_IO_PIECE). */
        for (uint64_t pos = offset, end = offset + n; pos < end;) {
                /* Ending on a granule boundary (where the range does not end first). */
                uint64_t next = (pos + piece) / c->granule * c->granule;
                size_t k = (size_t) (MIN(end, next > pos ? next : pos + piece) - pos);

                r = image_read(c->source, buf, pos, k);
                if (r < 0) {
                        *ret_failed = c->source;
                        return r;
                }
                c->stats.read += k;
                r = copy_io_write(c, buf, pos, k);
                if (r < 0) {
                        *ret_failed = c->target;
                        return r;
                }
                pos += k;
        }
        copy_io_write_behind(c, offset, n);
        *ret_done = n;
        return 1;
}

static int copy_kernel(CopyIo *c, uint64_t offset, uint64_t length, uint64_t *ret_done, Image **ret_failed) {
        uint64_t n = MIN(length, c->chunk);
        int r;

        copy_io_read_ahead(c, offset + n, MIN(c->chunk, length - n));
        r = image_copy_range(c->source, c->target, offset, n, IMAGE_COPY_RANGE, ret_failed);
        if (r < 0 && *ret_failed)
                return r;
        if (r < 0) {
                refused(c, COPY_IO_COPY_RANGE, r);
                return 0;
        }
        c->stats.kernel_copied += (uint64_t) r;
        copy_io_write_behind(c, offset, (uint64_t) r);
        *ret_done = (uint64_t) r;
        return 1;
}

static int copy_method(CopyIo *c, CopyIoOffload m, uint64_t offset, uint64_t length, uint64_t *ret_done,
                       Image **ret_failed);

static int copy_clone(CopyIo *c, uint64_t offset, uint64_t length, uint64_t *ret_done, Image **ret_failed) {
        uint64_t a = c->clone_align, end = offset + length;
        uint64_t start = (offset + a - 1) / a * a, aligned_end = end / a * a;
        int r;

        /* Clones share whole blocks: a head or tail that is not one is copied the next way. */
        if (start != offset || aligned_end <= start)
                return copy_method(c, next_method(c, COPY_IO_CLONE), offset, MIN(start, end) - offset ?: length,
                                   ret_done, ret_failed);

        uint64_t n = MIN(aligned_end - start, COPY_IO_CLONE_MAX);
        r = image_copy_range(c->source, c->target, offset, n, IMAGE_COPY_CLONE, ret_failed);
        if (r < 0 && *ret_failed)
                return r;
        if (r < 0) {
                refused(c, COPY_IO_CLONE, r);
                return 0;
        }
        c->stats.cloned += n;
        *ret_done = n;
        return 1;
}

static int copy_method(CopyIo *c, CopyIoOffload m, uint64_t offset, uint64_t length, uint64_t *ret_done,
                       Image **ret_failed) {
        switch (m) {
        case COPY_IO_CLONE:
                return copy_clone(c, offset, length, ret_done, ret_failed);
        case COPY_IO_COPY_RANGE:
                return copy_kernel(c, offset, length, ret_done, ret_failed);
        default:
                return copy_read_write(c, offset, length, ret_done, ret_failed);
        }
}

int copy_io_copy(CopyIo *c, uint64_t offset, uint64_t length, uint64_t *ret_done, Image **ret_failed) {
        assert(length > 0);

        /* A method that declines falls back to the next one for the same range; reading and
         * writing never declines, so this ends. */
        for (;;) {
                int r = copy_method(c, c->offload, offset, length, ret_done, ret_failed);
                if (r != 0)
                        return r < 0 ? r : 0;
                assert(c->refused & (1U << COPY_IO_CLONE | 1U << COPY_IO_COPY_RANGE));
        }
}
