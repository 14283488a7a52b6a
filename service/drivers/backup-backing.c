/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>

#include "backup-backing.h"
#include "error-message.h"
#include "job-files.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_close);

/* The backing file's format and size, from its header alone: nothing below it is followed here
 * (the chain is opened with the target, from its descriptors). */
static int look_at_backing(const BackupBacking *bb, ImageFormat *ret_format, uint64_t *ret_size, char **ret_error) {
        _cleanup_(image_closep) Image *img = NULL;
        ImageChainFds top = { .fds = bb->chain->fds, .n = 1 };
        ImageOpenOptions o = { .fds = &top };
        int r;

        r = image_open_full(bb->path, bb->format, IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_HEADERS_ONLY,
                            &o, &img, ret_error);
        if (r < 0)
                return r;
        *ret_format = image_format(img);
        *ret_size = image_size(img);
        return 0;
}

int backup_backing_create(TargetFile *t, Image *source, const BackupBacking *bb, ImageFormat format, bool resume,
                          Image **ret_writer, char **ret_error) {
        ImageFormat backing_format;
        uint64_t size;
        int r;

        if (format == IMAGE_FORMAT_PROBE)
                format = image_format(source);
        if (t->device || format != IMAGE_FORMAT_QCOW2)
                return error_message(ret_error, -EINVAL, "Option 'target-backing' needs a qcow2 target");
        if (!bb->chain || bb->chain->n == 0)
                return error_message(ret_error, -EINVAL, "Target backing file '%s' was not given", bb->path);
        if (bb->chain->n >= JOB_FILES_CHAIN_MAX)
                return error_message(ret_error, -E2BIG, "Backing chain of '%s' is too deep", bb->path);

        r = look_at_backing(bb, &backing_format, &size, ret_error);
        if (r < 0)
                return r;
        if (size != image_size(source))
                return error_message(ret_error, -EINVAL,
                                     "Target backing file '%s' has %" PRIu64 " bytes, the source %" PRIu64 ": an incremental backup rests on a backup of the same disk",
                                     bb->path, size, image_size(source));
        if (resume)
                return target_image_reopen(t, source, IMAGE_FORMAT_QCOW2, bb->name, backing_format, bb->chain, ret_writer,
                                           ret_error);

        r = target_file_prepare_image(t, ret_error);
        if (r < 0)
                return r;
        int fd = target_file_fd(t);
        ImageCreateParams cp = {
                .format = IMAGE_FORMAT_QCOW2,
                .size = image_size(source),
                .backing_name = bb->name,
                .backing_format = backing_format,
        };
        r = image_create_fd(fd, t->path, &cp, ret_error);
        if (r < 0)
                return r;

        /* Opened on the backing files' descriptors: the recorded name only labels them. */
        int fds[JOB_FILES_CHAIN_MAX];
        ImageChainFds chain = { .fds = fds, .n = bb->chain->n + 1 };
        fds[0] = fd;
        for (size_t i = 0; i < bb->chain->n; i++)
                fds[i + 1] = bb->chain->fds[i];
        ImageOpenOptions o = { .fds = &chain };
        return image_open_full(t->path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_BORROW_FD, &o, ret_writer,
                               ret_error);
}
