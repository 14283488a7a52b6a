/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What files a job uses, and how: for the reservations that keep jobs from writing what another
 * job reads or writes. Each driver lists its files through a FileUseFunc. */

#include "image.h"

typedef enum FileUse {
        FILE_USE_READ,
        FILE_USE_WRITE,
} FileUse;

/* One file: the one behind 'fd', or, with 'entry', the name 'entry' in the directory behind
 * 'fd' (a target not published yet). 'label' is what messages call it. */
typedef void (*FileUseFunc)(int fd, const char *entry, const char *label, FileUse use, void *userdata);

/* Every layer of 'img' from the top down to, not including, 'stop' (NULL: the whole chain). */
static inline void image_chain_list_files(Image *img, const Image *stop, FileUse use, FileUseFunc f, void *userdata) {
        for (; img && img != stop; img = image_backing(img))
                f(image_fd(img), NULL, image_path(img), use, userdata);
}
