/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu-oracle.h"

static int run_argv(const char *cmdline, char **ret_out, char **ret_err) {
        g_auto(GStrv) argv = NULL;
        g_autoptr(GError) error = NULL;
        int status = -1;

        g_assert_true(g_shell_parse_argv(cmdline, NULL, &argv, NULL));
        /* Output nobody takes goes nowhere: stdout is the test's TAP stream. */
        if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | (ret_out ? 0 : G_SPAWN_STDOUT_TO_DEV_NULL), NULL, NULL,
                          ret_out, ret_err, &status, &error))
                g_error("could not run %s: %s", cmdline, error->message);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool oracle_available(void) {
        g_autofree char *qemu_img = g_find_program_in_path("qemu-img");

        if (!qemu_img)
                g_test_message("qemu-img is missing: install qemu-utils");
        return qemu_img;
}

char *oracle_run(const char *format, ...) {
        g_autofree char *cmdline = NULL, *err = NULL;
        char *out = NULL;
        va_list ap;

        va_start(ap, format);
        cmdline = g_strdup_vprintf(format, ap);
        va_end(ap);
        if (run_argv(cmdline, &out, &err) != 0)
                g_error("%s failed: %s%s", cmdline, out, err);
        return out;
}

int oracle_try(char **ret_out, char **ret_err, const char *format, ...) {
        g_autofree char *cmdline = NULL;
        va_list ap;

        va_start(ap, format);
        cmdline = g_strdup_vprintf(format, ap);
        va_end(ap);
        return run_argv(cmdline, ret_out, ret_err);
}

static bool json_bool(const char *obj, const char *key) {
        g_autofree char *pattern = g_strdup_printf("\"%s\": ", key);
        const char *p = strstr(obj, pattern);
        g_assert_nonnull(p);
        return g_str_has_prefix(p + strlen(pattern), "true");
}

static uint64_t json_number(const char *obj, const char *key) {
        g_autofree char *pattern = g_strdup_printf("\"%s\": ", key);
        const char *p = strstr(obj, pattern);
        g_assert_nonnull(p);
        return g_ascii_strtoull(p + strlen(pattern), NULL, 10);
}

void oracle_merge(GArray *extents) {
        guint w = 0;

        for (guint i = 0; i < extents->len; i++) {
                OracleExtent *e = &g_array_index(extents, OracleExtent, i);
                if (w > 0) {
                        OracleExtent *last = &g_array_index(extents, OracleExtent, w - 1);
                        if (last->depth == e->depth && last->present == e->present && last->zero == e->zero &&
                            last->data == e->data && last->start + last->length == e->start) {
                                last->length += e->length;
                                continue;
                        }
                }
                g_array_index(extents, OracleExtent, w++) = *e;
        }
        g_array_set_size(extents, w);
}

GArray *oracle_map(const char *image) {
        g_autofree char *json = oracle_run("qemu-img map --output=json -U %s", image);
        GArray *extents = g_array_new(FALSE, FALSE, sizeof(OracleExtent));

        /* One object per line: { "start": N, "length": N, "depth": N, "present": B, "zero": B, "data": B ... } */
        for (char *obj = strchr(json, '{'); obj; obj = strchr(obj + 1, '{')) {
                char *end = strchr(obj, '}');
                g_assert_nonnull(end);
                *end = 0;
                OracleExtent e = {
                        .start = json_number(obj, "start"),
                        .length = json_number(obj, "length"),
                        .depth = (int) json_number(obj, "depth"),
                        .present = json_bool(obj, "present"),
                        .zero = json_bool(obj, "zero"),
                        .data = json_bool(obj, "data"),
                };
                g_array_append_val(extents, e);
                obj = end;
        }
        oracle_merge(extents);
        return extents;
}

GBytes *oracle_read_all(const char *image, const char *dir) {
        g_autofree char *out = g_build_filename(dir, "oracle.raw", NULL), *contents = NULL;
        gsize length;

        g_free(oracle_run("qemu-img convert -U -O raw %s %s", image, out));
        g_assert_true(g_file_get_contents(out, &contents, &length, NULL));
        g_unlink(out);
        return g_bytes_new_take(g_steal_pointer(&contents), length);
}

static const char bitmap_list_script[] =
        "import json, subprocess, sys\n"
        "d = json.loads(subprocess.check_output(['qemu-img', 'info', '-U', '--output=json', sys.argv[1]]))\n"
        "bitmaps = d.get('format-specific', {}).get('data', {}).get('bitmaps', [])\n"
        "print(' '.join('%s:%d:%s' % (b['name'], b['granularity'], ','.join(b['flags'])) for b in bitmaps), end='')\n";

char *oracle_bitmap_list(const char *image) {
        g_autofree char *script = g_shell_quote(bitmap_list_script);
        return oracle_run("/usr/bin/python3 -c %s %s", script, image);
}

/* Has 'pid', not our child, exited? A zombie has: it holds no files and no locks any more, and
 * whoever reaps it (init, here a slow one) may take a while. */
static bool process_exited(pid_t pid) {
        g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int) pid), *stat = NULL;
        const char *state;

        if (!g_file_get_contents(stat_path, &stat, NULL, NULL))
                return kill(pid, 0) < 0 && errno == ESRCH;
        /* "pid (comm) S ...": comm may hold anything, the state follows its last ')'. */
        state = strrchr(stat, ')');
        return state && (state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X'));
}

/* qemu-nbd exporting 'names' of 'image' on a socket in 'dir', forked; its pid. Persistent: it
 * serves one client after another until it is stopped. */
static pid_t nbd_start(const char *image, const char *const *names, const char *dir, bool persistent) {
        g_autofree char *sock = g_build_filename(dir, "nbd.sock", NULL), *pid_text = NULL;
        g_autofree char *pid_file = g_build_filename(dir, "nbd.pid", NULL);
        g_autoptr(GString) bitmaps = g_string_new(NULL);
        pid_t pid;

        for (const char *const *n = names; *n; n++)
                g_string_append_printf(bitmaps, " -B %s", *n);
        g_free(oracle_run("qemu-nbd -r -f qcow2%s%s -k %s --pid-file=%s --fork %s", bitmaps->str,
                          persistent ? " --persistent" : "", sock, pid_file, image));
        g_assert_true(g_file_get_contents(pid_file, &pid_text, NULL, NULL));
        pid = (pid_t) g_ascii_strtoll(pid_text, NULL, 10);
        g_assert_cmpint(pid, >, 1);
        return pid;
}

/* The dirty ranges of 'name' that the qemu-nbd of nbd_start() exports, merged. The NBD client
 * reports dirty areas as not data ("data": false). */
static GArray *nbd_dirty(const char *name, const char *dir) {
        g_autofree char *sock = g_build_filename(dir, "nbd.sock", NULL), *json = NULL;
        GArray *ranges = g_array_new(FALSE, FALSE, sizeof(OracleRange));

        json = oracle_run("qemu-img map --output=json --image-opts driver=nbd,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:%s",
                          sock, name);
        for (char *obj = strchr(json, '{'); obj; obj = strchr(obj + 1, '{')) {
                char *end = strchr(obj, '}');
                *end = 0;
                OracleRange r = { g_ascii_strtoull(strstr(obj, "\"start\": ") + 9, NULL, 10),
                                  g_ascii_strtoull(strstr(obj, "\"length\": ") + 10, NULL, 10) };
                bool dirty = strstr(obj, "\"data\": false");
                obj = end;
                if (!dirty)
                        continue;
                if (ranges->len > 0) {
                        OracleRange *last = &g_array_index(ranges, OracleRange, ranges->len - 1);
                        if (last->start + last->length == r.start) {
                                last->length += r.length;
                                continue;
                        }
                }
                g_array_append_val(ranges, r);
        }
        return ranges;
}

/* Until it is gone, qemu-nbd holds the image's read lock, and the next qemu-img that writes the
 * image would fail to get the write lock. It is not our child (--fork), so wait for it. */
static void nbd_wait_gone(pid_t pid, const char *dir) {
        g_autofree char *sock = g_build_filename(dir, "nbd.sock", NULL);
        g_autofree char *pid_file = g_build_filename(dir, "nbd.pid", NULL);

        for (unsigned i = 0; !process_exited(pid); i++) {
                if (i >= 3000)
                        g_error("qemu-nbd (pid %d) did not exit", (int) pid);
                g_usleep(10 * 1000);
        }
        g_unlink(sock);
        g_unlink(pid_file);
}

GArray *oracle_dirty(const char *image, const char *name, const char *dir) {
        /* Not persistent: it exits once its one client, qemu-img map, is gone. */
        pid_t pid = nbd_start(image, (const char *const[]) { name, NULL }, dir, false);
        GArray *ranges = nbd_dirty(name, dir);

        nbd_wait_gone(pid, dir);
        return ranges;
}

GHashTable *oracle_dirty_all(const char *image, const char *const *names, const char *dir) {
        GHashTable *all = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_array_unref);
        pid_t pid;

        if (!names[0])
                return all;
        /* One qemu-nbd for all: starting one costs more than a qemu-img map. Stopped with
         * SIGTERM; it only reads. */
        pid = nbd_start(image, names, dir, true);
        for (const char *const *n = names; *n; n++)
                g_hash_table_insert(all, g_strdup(*n), nbd_dirty(*n, dir));
        g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
        nbd_wait_gone(pid, dir);
        return all;
}

bool oracle_lock_byte_held(const char *path, int offset) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1 };

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
        close(fd);
        return fl.l_type != F_UNLCK;
}

GSubprocess *oracle_qemu_io_hold(const char *path, const char *format, bool read_only) {
        g_autoptr(GError) error = NULL;
        bool qcow2 = g_str_equal(format, "qcow2");
        GSubprocess *p;

        p = g_subprocess_new(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                     G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                             &error, "qemu-io", "-f", format, read_only ? "-r" : path, read_only ? path : NULL, NULL);
        g_assert_no_error(error);
        for (int i = 0; !oracle_lock_byte_held(path, read_only ? 100 : 101) ||
                        (qcow2 && !oracle_lock_byte_held(path, 201)); i++) {
                g_assert_cmpint(i, <, 1000);
                g_usleep(10 * 1000);
        }
        return p;
}

void oracle_qemu_io_release(GSubprocess *p) {
        g_autoptr(GError) error = NULL;

        g_assert_true(g_output_stream_close(g_subprocess_get_stdin_pipe(p), NULL, &error));
        g_assert_true(g_subprocess_wait(p, NULL, &error));
        g_object_unref(p);
}
