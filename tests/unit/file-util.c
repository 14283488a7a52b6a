/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "file-util.h"

/* A file of 'size' bytes with random data in the given extents and holes elsewhere. */
void make_sparse_file(const char *path, uint64_t size, const Extent *extents, size_t n, guint32 seed) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, size), ==, 0);
        for (size_t i = 0; i < n; i++) {
                g_autofree guint32 *buf = g_new(guint32, extents[i].length / 4 + 1);
                for (uint64_t k = 0; k < extents[i].length / 4 + 1; k++)
                        buf[k] = g_rand_int(rand);
                g_assert_cmpint(pwrite(fd, buf, extents[i].length, extents[i].offset), ==, extents[i].length);
        }
        g_assert_cmpint(close(fd), ==, 0);
}

void make_data_file(const char *path, uint64_t size) {
        Extent all = { 0, size };
        make_sparse_file(path, size, &all, 1, 7);
}

void assert_same_content(const char *a, const char *b) {
        g_autofree char *ca = NULL, *cb = NULL;
        gsize la, lb;

        g_assert_true(g_file_get_contents(a, &ca, &la, NULL));
        g_assert_true(g_file_get_contents(b, &cb, &lb, NULL));
        g_assert_cmpuint(la, ==, lb);
        g_assert_true(memcmp(ca, cb, la) == 0);
}

/* No data may be allocated in the target where the source has a hole. */
void assert_holes(const char *path, uint64_t size, const Extent *data, size_t n) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t pos = 0;

        g_assert_cmpint(fd, >=, 0);
        for (size_t i = 0; i <= n; i++) {
                uint64_t hole_end = i < n ? data[i].offset : size;
                if (hole_end > pos) {
                        off_t d = lseek(fd, pos, SEEK_DATA);
                        if (d >= 0)
                                g_assert_cmpuint(d, >=, hole_end);
                        else
                                g_assert_cmpint(errno, ==, ENXIO);
                }
                if (i < n)
                        pos = data[i].offset + data[i].length;
        }
        close(fd);
}

static gint compare_names(gconstpointer a, gconstpointer b) {
        return g_strcmp0(*(const char *const *) a, *(const char *const *) b);
}

/* The directory holds exactly these names (no temporary files left over). */
void assert_dir_holds(const char *dir, const char *const *names) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
        const char *name;

        while ((name = g_dir_read_name(d)))
                g_ptr_array_add(found, g_strdup(name));
        g_ptr_array_sort(found, compare_names);
        g_ptr_array_add(found, NULL);
        g_autofree char *got = g_strjoinv(" ", (char **) found->pdata);
        g_autofree char *want = g_strjoinv(" ", (char **) names);
        g_assert_cmpstr(got, ==, want);
}


void write_at(const char *path, uint64_t offset, const void *data, size_t n) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, data, n, offset), ==, (ssize_t) n);
        g_assert_cmpint(close(fd), ==, 0);
}
