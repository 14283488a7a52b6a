/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "backing-name.h"
#include "chain-copy.h"
#include "commit.h"
#include "image.h"
#include "job.h"
#include "error-message.h"
#include "macro.h"

#define READY_IDLE_NS (100 * NSEC_PER_MSEC)

struct Commit {
        Image *upper;                   /* the image, its chain down to the layer above base */
        Image *top;                     /* a layer of upper */
        Image *above_top;               /* the layer whose header names top; NULL for active commit */
        Image *base;                    /* opened on its own, for writing */
        char *backing_file;             /* what the header above base records at the end */
        bool active;
        bool rewritten;                 /* resumed on a chain that commit_prepare() already shortened */
        bool ready;
        bool soft_cancelled;            /* the run ended on a soft cancel: no pivot */
        ChainCopy copy;
};

void commit_free(Commit *c) {
        if (!c)
                return;
        chain_copy_done(&c->copy);
        image_close(c->upper);
        image_close(c->base);
        free(c->backing_file);
        free(c);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Commit *, commit_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_close);

static Image *chain_bottom(Image *img) {
        while (image_backing(img))
                img = image_backing(img);
        return img;
}

/* Which layers are top and base, as the chain is now. */
typedef struct CommitPlan {
        struct stat top, base, above_top;
        bool active;
        bool rewritten;
        bool above_top_is_image;        /* top is the image's own backing file */
        int base_depth;
        char *base_path;
        ImageFormat base_format;
        ImageFormat image_format;
} CommitPlan;

/* The layer 'depth' below the top of 'chain' (0: the image itself). */
static Image *chain_layer(Image *chain, int depth) {
        for (int d = 0; d < depth; d++)
                chain = image_backing(chain);
        return chain;
}

/* What the plan keeps of base, found either way (a chain as it was, or as prepare left it). */
static int plan_set_base(CommitPlan *plan, Image *chain, Image *base, int base_depth) {
        plan->base = *image_stat(base);
        plan->base_depth = base_depth;
        plan->base_path = strdup(image_path(base));
        plan->base_format = image_format(base);
        plan->image_format = image_format(chain);
        return plan->base_path ? 0 : -ENOMEM;
}

/* A job resumed after a restart whose top is no longer in the chain: the chain must be what
 * commit_prepare() leaves (the layer above top now names base), else the job cannot continue.
 * Top and the layers between are not opened: they are out of the chain, and nothing names them.
 * What tells this apart from a chain that someone else shortened while blockjobd was stopped is
 * the restore layer's identity check of the image and base (then the chain reads the same
 * either way); here: base is still in the chain, below the image, and recorded with its format
 * (as the rewrite records it) and, if the job was given one, the very name it writes. */
static int plan_rewritten(const CommitParams *p, Image *chain, Image *base, int base_depth, CommitPlan *plan,
                          char **ret_error) {
        Image *above;

        if (base_depth < 1)
                return error_message(ret_error, -EINVAL, "Top image file '%s' is not in the backing chain of '%s'",
                                     p->top, p->image);
        above = chain_layer(chain, base_depth - 1);
        if (image_backing_format(above) != image_format(base) ||
            (p->backing_file && strcmp(p->backing_file, strempty(image_backing_name(above))) != 0))
                return error_message(ret_error, -EINVAL,
                                     "Top image file '%s' is no longer in the backing chain of '%s', which is not what the commit left: the chain changed while blockjobd was stopped",
                                     p->top, p->image);
        plan->above_top = *image_stat(above);
        return plan_set_base(plan, chain, base, base_depth);
}

static int plan(const CommitParams *p, CommitPlan *plan, char **ret_error) {
        _cleanup_(image_closep) Image *chain = NULL;
        Image *top, *base;
        int top_depth = 0, base_depth, r;

        ImageChainFds fds = { .fds = p->files->chain, .n = p->files->n_chain };
        ImageOpenOptions o = { .fds = &fds, .memory_max = p->memory_max };
        r = image_open_full(p->image, IMAGE_FORMAT_QCOW2, 0, &o, &chain, ret_error);
        if (r < 0)
                return r;
        if (image_chain_depth(chain) < 2)
                return error_message(ret_error, -ENOENT, "Image '%s' has no backing file to commit into", p->image);

        top = chain;
        if (p->top) {
                r = image_chain_lookup(chain, p->top, &top, &top_depth);
                if (r == 0 && !p->resume.resume)
                        return error_message(ret_error, -EINVAL,
                                             "Top image file '%s' is not in the backing chain of '%s'", p->top,
                                             p->image);
                /* Resumed, and top has gone from the chain: prepare rewrote it before the
                 * restart (checked below). */
                plan->rewritten = r == 0;
        }
        base_depth = image_chain_depth(chain) - 1;
        base = chain_layer(chain, base_depth);
        if (p->base) {
                r = image_chain_lookup(chain, p->base, &base, &base_depth);
                if (r == 0)
                        return error_message(ret_error, -EINVAL, "Can't find '%s' in the backing chain of '%s'",
                                             p->base, p->image);
        }
        if (p->base_format != IMAGE_FORMAT_PROBE && p->base_format != image_format(base))
                return error_message(ret_error, -EINVAL, "Base '%s' is recorded as %s, not %s", image_path(base),
                                     image_format_to_string(image_format(base)),
                                     image_format_to_string(p->base_format));
        if (plan->rewritten)
                return plan_rewritten(p, chain, base, base_depth, plan, ret_error);
        if (base_depth == top_depth)
                return error_message(ret_error, -EINVAL, "cannot commit an image into itself");
        if (base_depth < top_depth)
                return error_message(ret_error, -EINVAL, "Base '%s' is not below top '%s' in the backing chain",
                                     image_path(base), image_path(top));
        if (top_depth == 0 && p->backing_file)
                return error_message(ret_error, -EINVAL, "'backing-file' specified, but 'top' is the active layer");
        if (image_size(base) < image_size(top))
                return error_message(ret_error, -EINVAL,
                                     "Base '%s' (%" PRIu64 " bytes) is smaller than top '%s' (%" PRIu64 " bytes)",
                                     image_path(base), image_size(base), image_path(top), image_size(top));

        plan->top = *image_stat(top);
        plan->active = top_depth == 0;
        plan->above_top_is_image = top_depth == 1;
        if (!plan->active)
                plan->above_top = *image_stat(chain_layer(chain, top_depth - 1));
        return plan_set_base(plan, chain, base, base_depth);
}

int commit_open(const CommitParams *p, Commit **ret, char **ret_error) {
        _cleanup_(commit_freep) Commit *c = NULL;
        CommitPlan pl = {};
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;

        /* First see what the chain is, then open each part as it is to be used: base for
         * writing (its own chain below it only read), the rest down to just above base. */
        r = plan(p, &pl, ret_error);
        if (r < 0)
                goto finish;
        c->active = pl.active;
        c->rewritten = pl.rewritten;

        /* Base and its chain are the tail of the image's. */
        ImageChainFds fds = { .fds = p->files->chain, .n = p->files->n_chain };
        ImageChainFds base_fds = { p->files->chain + pl.base_depth, p->files->n_chain - (size_t) pl.base_depth };
        ImageOpenOptions bo = { .fds = &base_fds, .memory_max = p->memory_max };
        r = image_open_full(pl.base_path, pl.base_format, IMAGE_OPEN_WRITE, &bo, &c->base, ret_error);
        if (r < 0)
                goto finish;
        /* Written: the image itself for active commit, or the layer above top (which may be the
         * image itself) for its header. */
        ImageOpenOptions o = {
                .stop_before = &pl.base,
                .writable = pl.active || pl.above_top_is_image || pl.rewritten ? NULL : &pl.above_top,
                .fds = &fds,
                .memory_max = p->memory_max,
        };
        r = image_open_full(p->image, pl.image_format,
                            (pl.active || pl.above_top_is_image) && !pl.rewritten ? IMAGE_OPEN_WRITE : 0, &o,
                            &c->upper, ret_error);
        if (r < 0)
                goto finish;

        if (pl.rewritten) {
                /* Nothing left to copy: the copy only holds base and the position, for the
                 * checkpoint of the step that finishes. */
                r = chain_copy_init(&c->copy, c->base, 0, 0, c->base, image_size(c->base), p->resume.offset);
                if (r < 0)
                        r = error_message(ret_error, r,
                                          "The job's checkpoint (%" PRIu64 ") lies beyond the end of base '%s'",
                                          p->resume.offset, image_path(c->base));
                if (r >= 0)
                        *ret = TAKE_PTR(c);
                goto finish;
        }

        int depth;
        c->top = image_chain_find(c->upper, &pl.top, &depth);
        if (!c->top || (!pl.active && !(c->above_top = image_chain_find(c->upper, &pl.above_top, NULL)))) {
                r = error_message(ret_error, -EAGAIN, "The backing chain of '%s' changed while it was being opened",
                                  p->image);
                goto finish;
        }
        if (p->backing_file) {
                c->backing_file = strdup(p->backing_file);
                if (!c->backing_file) {
                        r = -ENOMEM;
                        goto finish;
                }
        } else {
                /* upper stops just above base: its last layer names base. */
                r = backing_name_for(pl.active ? c->upper : c->above_top, chain_bottom(c->upper), c->base,
                                     &c->backing_file);
                if (r < 0)
                        goto finish;
        }

        /* Resumed: everything below the checkpoint is in base for good (copying is idempotent,
         * chain-copy.h: what was written after it is written again). */
        r = chain_copy_init(&c->copy, c->top, 0, image_chain_depth(c->top), c->base, image_size(c->base),
                            p->resume.resume ? p->resume.offset : 0);
        if (r < 0) {
                r = error_message(ret_error, r, "The job's checkpoint (%" PRIu64 ") lies beyond the end of '%s'",
                                  p->resume.offset, image_path(c->top));
                goto finish;
        }

        *ret = TAKE_PTR(c);
finish:
        free(pl.base_path);
        return r;
}

uint64_t commit_size(const Commit *c) {
        /* Top has gone with its size: what is left is nothing, from where the job stood. */
        return c->rewritten ? c->copy.offset : image_size(c->top);
}

bool commit_rewrite_done(const Commit *c) {
        return c->rewritten;
}

uint64_t commit_memory(const Commit *c) {
        /* The copy buffer is the worker thread's, not the job's (chain-copy.c). */
        return sizeof(*c) + image_memory_estimate(c->upper) + image_memory_estimate(c->base);
}

void commit_list_files(const Commit *c, FileUseFunc f, void *userdata) {
        /* Above top: read, but for the layer whose header names the new backing file (active
         * commit: the image itself, which is emptied). Top and what lies between it and base
         * drop out of the chain; base takes their data. */
        Image *written = c->active ? c->upper : c->above_top;
        for (Image *i = c->upper; i && i != c->top; i = image_backing(i))
                f(image_fd(i), NULL, image_path(i), i == written ? FILE_USE_WRITE : FILE_USE_READ, userdata);
        if (c->top)
                image_chain_list_files(c->top, NULL, FILE_USE_WRITE, f, userdata);
        f(image_fd(c->base), NULL, image_path(c->base), FILE_USE_WRITE, userdata);
        image_chain_list_files(image_backing(c->base), NULL, FILE_USE_READ, f, userdata);
}

static void commit_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Commit *c = data;
        bool finish;

        if (!c->ready && !c->rewritten) {
                /* At the end, base holds everything, durably (the copy flushed it). */
                if (!chain_copy_step(&c->copy, j, in, out))
                        return;
                if (!c->active) {
                        out->finished = true;
                        return;
                }
                /* Ready. Nobody else can write the image meanwhile (we hold its write lock), so
                 * there is nothing to follow. */
                c->ready = true;
                out->ready = true;
                out->idle_ns = READY_IDLE_NS;
                return;
        }

        /* Nothing left to copy (ready, or the chain was rewritten before a restart): a checkpoint
         * only flushes base again and reports the end. */
        if (in->checkpoint_only) {
                (void) chain_copy_checkpoint(&c->copy, j, out);
                return;
        }
        finish = c->rewritten || in->complete_requested || in->cancel_requested;
        if ((finish || in->checkpoint) && !chain_copy_checkpoint(&c->copy, j, out))
                return;
        if (!finish) {
                out->idle_ns = READY_IDLE_NS;
                return;
        }
        c->soft_cancelled = in->cancel_requested;
        out->finished = true;
}

static int commit_prepare(Job *j, void *data, char **ret_error) {
        Commit *c = data;
        Image *failed = c->base;
        int r;

        /* Safe to run again after a restart (killed between prepare and the end of the job, or
         * during it): every change below leaves a chain that reads the same, the job opened again
         * on it finds what is left to do (commit_open()), and doing a change again changes
         * nothing. */
        r = image_flush(c->base);
        if (r >= 0 && c->rewritten) {
                /* Done before the restart: base is durable again, nothing else to do. */
        } else if (r >= 0 && c->active && !c->soft_cancelled) {
                /* The image rests on base directly (the layers between drop out, as QEMU's
                 * pivot does), then is emptied and reads through to base, which has it all. In
                 * this order a crash between the two still leaves a chain that reads the same,
                 * and the job opened on it again commits the image's data into base again (the
                 * image now rests on it directly) and empties it. A kill during the emptying may
                 * leak clusters of the image (`qemu-img check` exit 3, never corruption). */
                failed = c->upper;
                if (image_chain_depth(c->upper) > 1)
                        r = chain_set_backing(c->upper, c->backing_file, image_format(c->base));
                if (r >= 0)
                        r = image_discard(c->upper, 0, image_size(c->upper));
                if (r >= 0)
                        r = image_flush(c->upper);
        } else if (r >= 0 && !c->active) {
                /* The layers between drop out of the chain: one header write, atomic (chain-copy.h).
                 * Afterwards top is no longer in the chain, and a job opened again on it knows it
                 * is done (commit_rewrite_done()). */
                failed = c->above_top;
                r = chain_set_backing(c->above_top, c->backing_file, image_format(c->base));
        }
        if (r < 0)
                *ret_error = strdup(strempty(image_error(failed)));
        return r;
}

static void commit_clean(Job *j, void *data) {
        Commit *c = data;
        c->upper = image_close(c->upper);
        c->base = image_close(c->base);
}

static bool commit_cancel(Job *j, void *data, bool force) {
        /* As QEMU's active commit: before ready every cancel is a force cancel. */
        return force || !job_status_is_ready(job_status(j));
}

/* Complete is accepted: there is nothing to check (the verb table lets it through in ready and
 * standby only, and only an active commit gets there), and nothing to do here: the next step
 * sees complete_requested and finishes, and prepare pivots. */
static int commit_complete(Job *j, void *data, char **ret_error) {
        return 0;
}

static void commit_free_data(void *data) {
        commit_free(data);
}

const JobDriver commit_driver = {
        .type = JOB_TYPE_COMMIT,
        .prepare_is_final = true,
        .step = commit_step,
        .prepare = commit_prepare,
        .clean = commit_clean,
        .cancel = commit_cancel,
        .complete = commit_complete,
        .free = commit_free_data,
};
