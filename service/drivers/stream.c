/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "backing-name.h"
#include "chain-copy.h"
#include "image.h"
#include "job.h"
#include "error-message.h"
#include "macro.h"
#include "stream.h"

struct Stream {
        Image *image;
        Image *base;                    /* a layer of image's chain, or NULL */
        char *backing_file;             /* what image records at the end; NULL: none */
        ChainCopy copy;
};

void stream_free(Stream *s) {
        if (!s)
                return;
        chain_copy_done(&s->copy);
        image_close(s->image);
        free(s->backing_file);
        free(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Stream *, stream_free);

int stream_open(const StreamParams *p, Stream **ret, char **ret_error) {
        _cleanup_(stream_freep) Stream *s = NULL;
        int base_depth, r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;

        ImageChainFds fds = { .fds = p->files->chain, .n = p->files->n_chain };
        ImageOpenOptions o = { .fds = &fds, .memory_max = p->memory_max };
        r = image_open_full(p->image, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &o, &s->image, ret_error);
        if (r < 0)
                return r;

        base_depth = image_chain_depth(s->image);
        if (p->base) {
                r = image_chain_lookup(s->image, p->base, &s->base, &base_depth);
                if (r == 0)
                        return error_message(ret_error, -EINVAL, "Can't find '%s' in the backing chain of '%s'",
                                             p->base, p->image);
                if (base_depth == 0)
                        return error_message(ret_error, -EINVAL, "Node '%s' is not a backing image of '%s'", p->base,
                                             p->image);
                if (p->base_format != IMAGE_FORMAT_PROBE && p->base_format != image_format(s->base))
                        return error_message(ret_error, -EINVAL, "Base '%s' is recorded as %s, not %s", p->base,
                                             image_format_to_string(image_format(s->base)),
                                             image_format_to_string(p->base_format));
        } else if (p->base_format != IMAGE_FORMAT_PROBE)
                return error_message(ret_error, -EINVAL, "base-format specified, but streaming the entire chain");
        else if (p->backing_file)
                return error_message(ret_error, -EINVAL, "backing file specified, but streaming the entire chain");

        if (p->backing_file && !(s->backing_file = strdup(p->backing_file)))
                return -ENOMEM;
        if (!p->backing_file && s->base) {
                Image *above_base = s->image;
                for (int d = 1; d < base_depth; d++)
                        above_base = image_backing(above_base);
                r = backing_name_for(s->image, above_base, s->base, &s->backing_file);
                if (r < 0)
                        return r;
        }

        /* Resumed: everything below the checkpoint is in the image for good (copying is
         * idempotent, chain-copy.h: what was written after it is written again). If prepare
         * already rewrote the chain before the restart, nothing lies between the image and base
         * any more and there is nothing to copy (stream_rewrite_done()). */
        r = chain_copy_init(&s->copy, s->image, 1, base_depth, s->image, s->base ? image_size(s->base) : 0,
                            p->resume.resume ? p->resume.offset : 0);
        if (r < 0)
                return error_message(ret_error, r, "The job's checkpoint (%" PRIu64 ") lies beyond the end of '%s'",
                                     p->resume.offset, p->image);

        *ret = TAKE_PTR(s);
        return 0;
}

uint64_t stream_size(const Stream *s) {
        return image_size(s->image);
}

bool stream_rewrite_done(const Stream *s) {
        /* Nothing to copy from: the layers between the image and base are gone. */
        return s->copy.stop_depth <= s->copy.min_depth;
}

uint64_t stream_memory(const Stream *s) {
        /* The copy buffer is the worker thread's, not the job's (chain-copy.c). */
        return sizeof(*s) + image_memory_estimate(s->image);
}

void stream_list_files(const Stream *s, FileUseFunc f, void *userdata) {
        f(image_fd(s->image), NULL, image_path(s->image), FILE_USE_WRITE, userdata);
        image_chain_list_files(image_backing(s->image), NULL, FILE_USE_READ, f, userdata);
}

static void stream_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Stream *s = data;
        if (chain_copy_step(&s->copy, j, in, out))
                out->finished = true;
}

static int stream_prepare(Job *j, void *data, char **ret_error) {
        Stream *s = data;
        const char *name = s->backing_file;    /* NULL with no base: the image stands alone */
        int r;

        /* Everything copied and durable first: from then on the shorter chain reads the same.
         * Then one header write (chain_set_backing()); run again after a restart, it finds the
         * name recorded already and writes nothing. */
        r = image_flush(s->image);
        if (r >= 0)
                r = chain_set_backing(s->image, name, s->base ? image_format(s->base) : IMAGE_FORMAT_PROBE);
        if (r < 0)
                *ret_error = strdup(strempty(image_error(s->image)));
        return r;
}

static void stream_clean(Job *j, void *data) {
        Stream *s = data;
        /* Flushes what an aborted run wrote (the chain reads the same with it) and unlocks. */
        s->image = image_close(s->image);
}

static void stream_free_data(void *data) {
        stream_free(data);
}

const JobDriver stream_driver = {
        .type = JOB_TYPE_STREAM,
        /* The backing file is rewritten at prepare: a cancel from then on is too late. */
        .prepare_is_final = true,
        .step = stream_step,
        .prepare = stream_prepare,
        .clean = stream_clean,
        .free = stream_free_data,
};
