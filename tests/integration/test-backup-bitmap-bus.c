/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Incremental backups over D-Bus: the options bitmap, bitmap-mode, sync=bitmap|incremental,
 * target-backing(-format), QEMU's rules for them and its texts; the chain full <- inc1 <- inc2
 * with qemu-io writing in between; a grouped transaction of two incrementals where one fails. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/wait.h>

#include "bus-fixture.h"
#include "qemu-oracle.h"

#define MiB (1024 * 1024)
#define KiB 1024
#define ERR_IMAGE "org.blockjobd.Jobs1.Error.ImageError"
#define ERR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"

static char *make_disk(BusFixture *f, const char *name) {
        char *disk = bus_fixture_path(f, name);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", disk));
        g_free(oracle_run("qemu-img bitmap --add %s b0", disk));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 6M' %s", disk));
        return disk;
}

static GVariant *with_format(GVariant *options) {
        return bus_opts_add(options, "source-format", g_variant_new_string("qcow2"));
}

/* The error of a Backup that is refused, and its message. */
static void assert_refused(BusFixture *f, const char *disk, GVariant *options, const char *error_name,
                           const char *expected) {
        g_autofree char *target = bus_fixture_path(f, "refused.qcow2");
        g_autofree char *message = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup",
                                                  g_variant_new("(ss@a{sv})", disk, target, with_format(options)),
                                                  error_name);
        if (!strstr(message, expected))
                g_error("\"%s\" does not say \"%s\"", message, expected);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
}

#define S(x) g_variant_new_string(x)

static void test_rules(BusFixture *f, gconstpointer data) {
        g_autofree char *disk = make_disk(f, "disk.qcow2");

        /* QEMU's rules, QEMU's texts (blockdev.c, do_backup_common()). */
        assert_refused(f, disk, bus_opts("sync", S("incremental"), NULL), ERR_INVALID_ARGS,
                       "must provide a valid bitmap name for 'incremental' sync mode");
        assert_refused(f, disk, bus_opts("sync", S("bitmap"), NULL), ERR_INVALID_ARGS,
                       "must provide a valid bitmap name for 'bitmap' sync mode");
        assert_refused(f, disk, bus_opts("sync", S("incremental"), "bitmap", S("b0"), "bitmap-mode", S("always"), NULL),
                       ERR_INVALID_ARGS, "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
        assert_refused(f, disk, bus_opts("sync", S("bitmap"), "bitmap", S("b0"), NULL), ERR_INVALID_ARGS,
                       "Bitmap sync mode must be given when providing a bitmap");
        assert_refused(f, disk, bus_opts("bitmap", S("b0"), "bitmap-mode", S("never"), NULL), ERR_INVALID_ARGS,
                       "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'");
        assert_refused(f, disk, bus_opts("sync", S("top"), "bitmap", S("b0"), "bitmap-mode", S("never"), NULL),
                       ERR_INVALID_ARGS,
                       "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'top'");
        assert_refused(f, disk, bus_opts("bitmap-mode", S("on-success"), NULL), ERR_INVALID_ARGS,
                       "Cannot specify bitmap sync mode without a bitmap");
        assert_refused(f, disk, bus_opts("bitmap-mode", S("sometimes"), NULL), ERR_INVALID_ARGS,
                       "Option 'bitmap-mode' must be on-success, never or always, not 'sometimes'");
        assert_refused(f, disk, bus_opts("sync", S("none"), NULL), ERR_INVALID_ARGS,
                       "Option 'sync' must be full, top, bitmap or incremental, not 'none'");
        assert_refused(f, disk, bus_opts("target-backing-format", S("qcow2"), NULL), ERR_INVALID_ARGS,
                       "Option 'target-backing-format' needs 'target-backing'");
        assert_refused(f, disk, bus_opts("sync", S("top"), "target-backing", S("full.qcow2"), NULL), ERR_INVALID_ARGS,
                       "Option 'target-backing' cannot be used with sync mode 'top'");
        /* What only the image can say. */
        assert_refused(f, disk, bus_opts("sync", S("incremental"), "bitmap", S("nope"), NULL), ERR_IMAGE,
                       "Bitmap 'nope' could not be found");
        g_autofree char *full = bus_fixture_path(f, "other.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", full));
        assert_refused(f, disk, bus_opts("sync", S("incremental"), "bitmap", S("b0"), "target-backing", S("other.qcow2"),
                                         "target-backing-format", S("qcow2"), NULL),
                       ERR_INVALID_ARGS, "Target backing file");
        /* A bitmap whose writer died with it open: QEMU's text, an ImageError. */
        g_assert_cmpint(oracle_try(NULL, NULL, "qemu-io -f qcow2 -c 'sigraise 9' %s", disk), !=, 0);
        assert_refused(f, disk, bus_opts("sync", S("incremental"), "bitmap", S("b0"), NULL), ERR_IMAGE,
                       "Bitmap 'b0' is inconsistent and cannot be used");
        /* Mirror knows no bitmaps. */
        g_autofree char *mt = bus_fixture_path(f, "m.qcow2");
        g_autofree char *message = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Mirror",
                                                  g_variant_new("(ss@a{sv})", disk, mt,
                                                                bus_opts("bitmap", S("b0"), NULL)),
                                                  ERR_INVALID_ARGS);
        g_assert_nonnull(strstr(message, "Unknown option 'bitmap'"));
}

/* Bytes the image holds itself (qemu-img map, depth 0). */
static guint64 own_bytes(const char *image) {
        g_autoptr(GArray) map = oracle_map(image);
        guint64 n = 0;

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->present && e->depth == 0)
                        n += e->length;
        }
        return n;
}

static char *snapshot(BusFixture *f, const char *disk, const char *name) {
        char *raw = bus_fixture_path(f, name);
        g_free(oracle_run("qemu-img convert -U -q -O raw %s %s", disk, raw));
        return raw;
}

static void assert_reads_as(const char *image, const char *raw) {
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U -F raw %s %s", image, raw) != 0)
                g_error("%s does not read as %s: %s%s", image, raw, out, err);
        g_free(oracle_run("qemu-img check -U %s", image));
}

/* Backup to 'target' as job 'id', run to its end; its total progress. */
static guint64 backup(BusFixture *f, const char *disk, const char *target, const char *id, GVariant *options) {
        g_autofree char *path = NULL;
        guint64 total;

        options = bus_opts_add(options, "job-id", S(id));
        options = bus_opts_add(options, "auto-dismiss", g_variant_new_boolean(FALSE));
        path = bus_backup(f, disk, target, with_format(options));
        bus_wait_for_status(f, id, "concluded");
        g_autofree char *error = bus_get_string(f, path, "Error");
        g_assert_cmpstr(error, ==, "");
        total = bus_get_uint64(f, path, "TotalProgress");
        bus_job_call(f, path, "Dismiss");
        bus_wait_for_status(f, id, "null");
        return total;
}

static GVariant *incremental(const char *backing) {
        return bus_opts("sync", S("incremental"), "bitmap", S("b0"), "target-backing", S(backing),
                        "target-backing-format", S("qcow2"), NULL);
}

static void test_chain(BusFixture *f, gconstpointer data) {
        g_autofree char *disk = make_disk(f, "disk.qcow2");
        g_autofree char *full = bus_fixture_path(f, "full.qcow2"), *inc1 = bus_fixture_path(f, "inc1.qcow2");
        g_autofree char *inc2 = bus_fixture_path(f, "inc2.qcow2"), *inc3 = bus_fixture_path(f, "inc3.qcow2");

        g_autofree char *t0 = snapshot(f, disk, "t0.raw");
        g_assert_cmpuint(backup(f, disk, full, "full", bus_opts("bitmap", S("b0"), "bitmap-mode", S("on-success"), NULL)),
                         ==, 8 * MiB);
        assert_reads_as(full, t0);

        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1M 100k' -c 'write -P 0x23 7M 64k' %s", disk));
        g_autofree char *t1 = snapshot(f, disk, "t1.raw");
        /* full.qcow2 has no backing file: its format may be left to be read from it. */
        g_assert_cmpuint(backup(f, disk, inc1, "inc1",
                                bus_opts("sync", S("incremental"), "bitmap", S("b0"), "target-backing", S("full.qcow2"),
                                         NULL)),
                         ==, 3 * 64 * KiB);
        g_autofree char *info1 = oracle_run("qemu-img info -U --output=json %s", inc1);
        g_assert_nonnull(strstr(info1, "\"backing-filename-format\": \"qcow2\""));
        assert_reads_as(inc1, t1);
        g_assert_cmpuint(own_bytes(inc1), ==, 3 * 64 * KiB);

        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x33 3M 4k' %s", disk));
        /* inc1.qcow2 has one: guessing its format is refused, as for any probed qcow2 chain. */
        g_autofree char *message = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup",
                                                  g_variant_new("(ss@a{sv})", disk, inc2,
                                                                with_format(bus_opts("sync", S("incremental"), "bitmap",
                                                                                     S("b0"), "target-backing",
                                                                                     S("inc1.qcow2"), NULL))),
                                                  ERR_INVALID_ARGS);
        g_assert_nonnull(strstr(message, "looks like a qcow2 image with backing file"));
        g_assert_nonnull(strstr(message, "pass target-backing-format=qcow2"));
        g_assert_false(g_file_test(inc2, G_FILE_TEST_EXISTS));
        g_autofree char *t2 = snapshot(f, disk, "t2.raw");
        g_assert_cmpuint(backup(f, disk, inc2, "inc2", incremental("inc1.qcow2")), ==, 64 * KiB);
        assert_reads_as(inc2, t2);
        assert_reads_as(inc1, t1);
        assert_reads_as(full, t0);

        /* Nothing written since: the bitmap is empty, and so is the next incremental. */
        g_assert_cmpuint(backup(f, disk, inc3, "inc3", incremental("inc2.qcow2")), ==, 0);
        assert_reads_as(inc3, t2);
        g_assert_cmpuint(own_bytes(inc3), ==, 0);
}

/* Two incrementals in a grouped transaction, one failing: neither bitmap is cleared, so that the
 * retry of each copies what it would have. */
static void test_transaction(BusFixture *f, gconstpointer data) {
        g_autofree char *d1 = make_disk(f, "d1.qcow2"), *d2 = make_disk(f, "d2.qcow2");
        g_autofree char *t1 = bus_fixture_path(f, "t1.qcow2"), *t2 = bus_fixture_path(f, "t2.qcow2");
        g_auto(GStrv) paths = NULL;
        GVariantBuilder actions;

        /* Each bitmap marks the first 6 MiB (make_disk() wrote them after adding it). */
        bus_fixture_set_faults(f, "%s read %d EIO\n", d2, 2 * MiB + 4096);

        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", d1, t1,
                              with_format(bus_opts("job-id", S("one"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                                   "sync", S("incremental"), "bitmap", S("b0"), NULL)));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", d2, t2,
                              with_format(bus_opts("job-id", S("two"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                                   "sync", S("incremental"), "bitmap", S("b0"), NULL)));
        paths = bus_transaction_grouped(f, g_variant_builder_end(&actions));
        bus_wait_for_status(f, "one", "concluded");
        bus_wait_for_status(f, "two", "concluded");
        g_autofree char *e2 = bus_get_string(f, paths[1], "Error");
        g_assert_nonnull(strstr(e2, "Input/output error"));
        bus_job_call(f, paths[0], "Dismiss");
        bus_job_call(f, paths[1], "Dismiss");
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));

        /* Both bitmaps still hold everything. */
        bus_fixture_set_faults(f, "%s", "");
        g_assert_cmpuint(backup(f, d1, t1, "r1", bus_opts("sync", S("incremental"), "bitmap", S("b0"), NULL)), ==,
                         6 * MiB);
        g_assert_cmpuint(backup(f, d2, t2, "r2", bus_opts("sync", S("incremental"), "bitmap", S("b0"), NULL)), ==,
                         6 * MiB);
}


/* kill -9 of the service in the middle of an incremental, and while it waits in pending: the
 * bitmap is untouched (it is written only at commit), the disk passes qemu-img check and reads
 * as before, no target appears; the next incremental copies everything, and clears it. */
static void test_kill(BusFixture *f, gconstpointer data) {
        g_autofree char *disk = make_disk(f, "disk.qcow2"), *target = bus_fixture_path(f, "inc.qcow2");
        g_autofree char *t0 = snapshot(f, disk, "t0.raw");

        for (unsigned round = 0; round < 2; round++) {
                GVariant *options = bus_opts("sync", S("incremental"), "bitmap", S("b0"), "job-id", S("k"),
                                             "speed", g_variant_new_uint64(round == 0 ? 1 * MiB : 0),
                                             "auto-finalize", g_variant_new_boolean(round == 0), NULL);
                g_autofree char *path = bus_backup(f, disk, target, with_format(options));
                if (round == 0)
                        while (bus_get_uint64(f, path, "CurrentProgress") == 0)
                                bus_iterate_for(f, 10 * 1000);
                else
                        bus_wait_for_status(f, "k", "pending");
                g_subprocess_force_exit(f->daemon);
                g_assert_true(g_subprocess_wait(f->daemon, NULL, NULL));
                g_assert_true(g_subprocess_get_if_signaled(f->daemon));
                g_clear_object(&f->daemon);
                bus_wait_for_name(f, false);
                g_assert_null(strstr(f->statuses->str, ":concluded "));

                g_free(oracle_run("qemu-img check %s", disk));
                assert_reads_as(disk, t0);
                g_autofree char *info = oracle_run("qemu-img info --output=json %s", disk);
                g_assert_null(strstr(info, "in-use"));
                g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

                bus_fixture_start_daemon(f, "--idle-timeout=0");
                g_string_truncate(f->statuses, 0);
        }
        g_assert_cmpuint(backup(f, disk, target, "again", bus_opts("sync", S("incremental"), "bitmap", S("b0"), NULL)),
                         ==, 6 * MiB);
        assert_reads_as(target, t0);
        g_autofree char *empty = bus_fixture_path(f, "empty.qcow2");
        g_assert_cmpuint(backup(f, disk, empty, "empty", bus_opts("sync", S("incremental"), "bitmap", S("b0"), NULL)),
                         ==, 0);
}

/* blockjobctl drives the cycle: full, writes, incremental on top of it by a relative name; a
 * refused combination exits as a refusal with QEMU's text. */
static int run_ctl(BusFixture *f, char **ret_out, char **ret_err, ...) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GError) error = NULL;
        int status;
        va_list ap;

        g_ptr_array_add(argv, g_strdup("timeout"));
        g_ptr_array_add(argv, g_strdup("-k5"));
        g_ptr_array_add(argv, g_strdup("60"));
        g_ptr_array_add(argv, g_strdup(g_getenv("BLOCKJOBCTL")));
        g_ptr_array_add(argv, g_strdup_printf("--address=%s", f->address));
        va_start(ap, ret_err);
        for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *))
                g_ptr_array_add(argv, g_strdup(a));
        va_end(ap);
        g_ptr_array_add(argv, NULL);
        g_assert_true(g_spawn_sync(NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, ret_out, ret_err,
                                   &status, &error));
        g_assert_no_error(error);
        g_assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

static void test_blockjobctl(BusFixture *f, gconstpointer data) {
        g_autofree char *disk = make_disk(f, "disk.qcow2");
        g_autofree char *full = bus_fixture_path(f, "full.qcow2"), *inc1 = bus_fixture_path(f, "inc1.qcow2");
        g_autofree char *out = NULL, *err = NULL;

        if (!g_getenv("BLOCKJOBCTL")) {
                g_test_skip("BLOCKJOBCTL is not set");
                return;
        }
        g_autofree char *t0 = snapshot(f, disk, "t0.raw");
        g_assert_cmpint(run_ctl(f, &out, &err, "backup", "--wait", "--source-format=qcow2", "--bitmap=b0",
                                "--bitmap-mode=on-success", disk, full, NULL), ==, 0);
        assert_reads_as(full, t0);

        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x44 2M 64k' %s", disk));
        g_autofree char *t1 = snapshot(f, disk, "t1.raw");
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);
        g_assert_cmpint(run_ctl(f, &out, &err, "backup", "--wait", "--source-format=qcow2", "--sync=incremental",
                                "--bitmap=b0", "--target-backing=full.qcow2", "--target-backing-format=qcow2", disk,
                                inc1, NULL),
                        ==, 0);
        assert_reads_as(inc1, t1);
        g_assert_cmpuint(own_bytes(inc1), ==, 64 * KiB);

        /* Refused by the service, with QEMU's words. */
        g_autofree char *refused = bus_fixture_path(f, "refused.qcow2");
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);
        g_assert_cmpint(run_ctl(f, &out, &err, "backup", "--source-format=qcow2", "--sync=incremental",
                                "--bitmap=b0", "--bitmap-mode=always", disk, refused, NULL),
                        !=, 0);
        g_assert_nonnull(strstr(err, "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"));
}

static void setup(BusFixture *f, gconstpointer data) {
        bus_fixture_setup(f, NULL);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return 77;
        g_test_add("/backup-bitmap-bus/rules", BusFixture, NULL, setup, test_rules, bus_fixture_teardown);
        g_test_add("/backup-bitmap-bus/chain", BusFixture, NULL, setup, test_chain, bus_fixture_teardown);
        g_test_add("/backup-bitmap-bus/transaction", BusFixture, NULL, setup, test_transaction, bus_fixture_teardown);
        g_test_add("/backup-bitmap-bus/kill", BusFixture, NULL, setup, test_kill, bus_fixture_teardown);
        g_test_add("/backup-bitmap-bus/blockjobctl", BusFixture, NULL, setup, test_blockjobctl, bus_fixture_teardown);
        return g_test_run();
}
