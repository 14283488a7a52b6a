/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdlib.h>
#include <string.h>

#include "chain-copy.h"
#include "copy-io.h"
#include "job.h"
#include "macro.h"
#include "step-budget.h"

/* A chunk is what one read and one write move. A qcow2 target allocates a chunk's new clusters as
 * one run and writes them with one call, and starts their writeback at once (write-behind), so
 * the device writes one chunk while the next is read. Larger chunks measured slower (stream of
 * 512 MiB, cold cache: 1-2 MiB 0.61-0.80 s, 4 MiB 0.91-0.97 s, 8 MiB 0.79-1.08 s): the buffer no
 * longer stays in the CPU's cache (1 MiB of L2 here) between the read that fills it and the write
 * that empties it, and each pread waits for more than the kernel's readahead has ready. */
#define CHAIN_COPY_CHUNK (UINT64_C(1) << 20)

/* The copy buffer is the worker thread's (copy_io_buffer()), not the job's: a paused or
 * throttled job keeps no buffer between its steps. */

int chain_copy_init(ChainCopy *c, Image *from, int min_depth, int stop_depth, Image *to, uint64_t below_size,
                    uint64_t offset) {
        if (offset > image_size(from))
                return -ERANGE;
        *c = (ChainCopy) {
                .from = from,
                .min_depth = min_depth,
                .stop_depth = stop_depth,
                .to = to,
                .below_size = below_size,
                .offset = offset,
                .chunk = CHAIN_COPY_CHUNK,
        };
        return 0;
}

void chain_copy_done(ChainCopy *c) {
}

typedef enum RangeAction {
        RANGE_SKIP,
        RANGE_COPY,
        RANGE_ZERO,
} RangeAction;

static RangeAction decide(const ChainCopy *c, const ImageExtent *e, uint64_t offset) {
        int bottom = image_chain_depth(c->from) - 1;

        if (e->depth < c->min_depth || e->depth >= c->stop_depth)
                return RANGE_SKIP;
        if (e->present)
                return e->data && !e->zero ? RANGE_COPY : RANGE_ZERO;
        /* Nothing allocated: either nothing anywhere (fine as it is), or a layer ended above what
         * stays below, which must not show through where it reaches. */
        if (e->depth == bottom || offset >= c->below_size)
                return RANGE_SKIP;
        return RANGE_ZERO;
}

static void read_error(ChainCopy *c, Job *j, JobStepResult *out, int r) {
        job_step_io_error(j, out, true, true, r, "%s", image_error(c->from) ?: strerror(-r));
}

static void write_error(ChainCopy *c, Job *j, JobStepResult *out, int r) {
        job_step_io_error(j, out, false, false, r, "%s", image_error(c->to) ?: strerror(-r));
}

bool chain_copy_checkpoint(ChainCopy *c, Job *j, JobStepResult *out) {
        int r;

        /* Everything below offset is written; the flush makes it durable, qcow2 metadata
         * included, so that an image opened after a crash reads it. */
        r = image_flush(c->to);
        if (r < 0) {
                write_error(c, j, out, r);
                return false;
        }
        out->checkpoint = true;
        out->checkpoint_value = c->offset;
        return true;
}

bool chain_copy_step(ChainCopy *c, Job *j, const JobStepInput *in, JobStepResult *out) {
        StepBudget budget = step_budget_start(in);
        uint64_t size = image_size(c->from), done = 0, dispatched = 0;
        int r;

        if (in->checkpoint_only) {
                (void) chain_copy_checkpoint(c, j, out);
                return false;
        }

        for (unsigned i = 0; c->offset < size && i < STEP_SKIPS_MAX && step_budget_left(&budget); i++) {
                ImageExtent e;
                RangeAction action;
                uint64_t n;

                r = image_block_status(c->from, c->offset, size - c->offset, &e);
                if (r < 0) {
                        read_error(c, j, out, r);
                        break;
                }
                action = decide(c, &e, c->offset);
                n = e.length;

                if (action == RANGE_ZERO) {
                        /* A bounded range at a time; past 'to's end there is nothing to zero (a
                         * smaller base keeps its size), and nothing to come back for. */
                        n = MIN(n, STEP_ZEROES_MAX);
                        uint64_t z = MIN(n, image_size(c->to) > c->offset ? image_size(c->to) - c->offset : 0);
                        if (z > 0 && (r = image_write_zeroes(c->to, c->offset, z)) < 0) {
                                write_error(c, j, out, r);
                                break;
                        }
                } else if (action == RANGE_COPY) {
                        void *buffer;

                        n = step_budget_clamp(&budget, MIN(n, c->chunk));
                        buffer = copy_io_buffer((size_t) c->chunk);
                        if (!buffer) {
                                /* As a failed write: the job's policy for the target decides,
                                 * and a retry may find the memory. */
                                job_step_io_error(j, out, false, false, -ENOMEM, "Out of memory for a copy buffer of %" PRIu64 " bytes",
                                                  c->chunk);
                                break;
                        }
                        r = image_read(c->from, buffer, c->offset, (size_t) n);
                        if (r < 0) {
                                read_error(c, j, out, r);
                                break;
                        }
                        r = image_write(c->to, buffer, c->offset, (size_t) n);
                        if (r < 0) {
                                write_error(c, j, out, r);
                                break;
                        }
                        dispatched += n;
                        step_budget_spend(&budget, n);
                }

                c->offset += n;
                done += n;
        }

        out->progress = done;
        out->dispatched = dispatched;
        out->has_remaining = true;
        out->remaining = size - c->offset;
        if (out->io_error.set)
                return false;
        if (c->offset >= size || in->checkpoint)
                return chain_copy_checkpoint(c, j, out) && c->offset >= size;
        return false;
}

int chain_set_backing(Image *holder, const char *name, ImageFormat format) {
        const char *now = image_backing_name(holder);

        if (name ? now && strcmp(now, name) == 0 && image_backing_format(holder) == format : !now)
                return 0;
        return image_set_backing(holder, name, format);
}
