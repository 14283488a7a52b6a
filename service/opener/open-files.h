/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Resolving a job's names into descriptors (job-files.h), with the rights of the process that
 * runs this: blockjobd-opener, once it has become the caller. The only place where a job's files
 * are looked up by name: everything after this works on the descriptors. */

#include <stdbool.h>

#include "image.h"
#include "job-files.h"

/* Called with each layer (its file, open), before the names it records are followed: may lower
 * the rights they are followed with (blockjobd-opener, for root, drops to the layer's owner), or
 * refuse with a negative errno and a message. */
typedef int (*BeforeFollowing)(const struct stat *layer, char **ret_error);

/* The image at 'path' and every backing file its chain names, as this process can open them:
 * read-only, or for 'write' the image itself read-write and each backing file read-write where
 * this process may write it (commit writes into one of them) when it opens it, read-only
 * otherwise. 'format' is the image's format, or IMAGE_FORMAT_PROBE; the image layer's format
 * rules apply (a backing file without a recorded format is refused, so is a probed qcow2 image
 * that names one). Only the headers are read. */
int open_chain_files(const char *path, ImageFormat format, bool write, BeforeFollowing before_following,
                     JobFiles *f, char **ret_error);

/* The target at 'path' as this process could make it: an existing block device to write in
 * place (with 'overwrite'), or a new, empty file (mode 0600) in the directory of 'path', hidden
 * until published (unnamed where the file system allows, unless 'named_temp_file'), whose name
 * may replace what is there only with 'overwrite' and only as this process's user could
 * (sticky directories). */
int open_target_files(const char *path, bool overwrite, bool named_temp_file, JobFiles *f, char **ret_error);

/* The same target of a job that continues after a restart: the file it was building, left under
 * the hidden name 'hidden' next to 'path' (tmpfile_reopen()), not a new one; the checks on the
 * final name are a new target's. A block device at 'path' is opened in place, as for a new job. */
int open_resumed_target_files(const char *path, bool overwrite, const char *hidden, JobFiles *f, char **ret_error);
