/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backing-name.h"
#include "macro.h"
#include "path-util.h"

/* The directory of a layer as the chain names it: a relative name it records is relative to it. */
static char *layer_dir(const Image *img) {
        _cleanup_free_ char *copy = strdup(image_path(img));
        return copy ? strdup(dirname(copy)) : NULL;
}

int backing_name_for(const Image *holder, const Image *above_base, const Image *base, char **ret) {
        _cleanup_free_ char *old_dir = NULL, *new_dir = NULL, *target = NULL;
        const char *name = image_backing_name(above_base);
        char *s;
        int r;

        /* Where it was, or absolute: the name as recorded, byte for byte ("./b.qcow2" stays). */
        if (holder == above_base || name[0] == '/')
                goto verbatim;
        old_dir = layer_dir(above_base);
        new_dir = layer_dir(holder);
        if (!old_dir || !new_dir)
                return -ENOMEM;
        if (path_equal(old_dir, new_dir))
                goto verbatim;

        if (asprintf(&target, "%s/%s", old_dir, name) < 0)
                return -ENOMEM;
        r = path_make_relative(new_dir, target, &s);
        if (r == -EINVAL)
                /* The chain's names do not say how the two directories relate (a relative image
                 * name reaching above its start): the base's path as the chain reached it, which
                 * is what QEMU records. */
                s = strdup(image_path(base));
        else if (r < 0)
                return r;
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;

verbatim:
        s = strdup(name);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
