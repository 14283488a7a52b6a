/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A backup's target-backing: a qcow2 target made an overlay of an earlier backup, so that
 * incremental backups form a chain (full <- inc1 <- inc2) that reads as the source did at each
 * time. The name is recorded in the target as given (a relative one is relative to the target,
 * as QEMU reads it); the file and its own chain come as descriptors, opened read-only with the
 * caller's rights, and must have the source's size. The target is opened on top of that chain,
 * from those descriptors, with QEMU's reader locks on it: nobody writes the earlier backups while
 * a later one is made. */

#include "image.h"
#include "target-file.h"

typedef struct BackupBacking {
        const char *name;               /* as recorded in the target */
        const char *path;               /* where it was opened (messages) */
        ImageFormat format;             /* PROBE: as the file is */
        const ImageChainFds *chain;     /* the file, then its own backing files */
} BackupBacking;

/* Makes the qcow2 image in the adopted target 't' ('format': PROBE means the source's, which must
 * then be qcow2), backed by 'backing', of the size of 'source', and opens it for writing. With
 * 'resume' (a job built again after a restart) the image the job was writing is opened instead,
 * and must be that (target_image_reopen()). */
int backup_backing_create(TargetFile *t, Image *source, const BackupBacking *backing, ImageFormat format, bool resume,
                          Image **ret_writer, char **ret_error);
