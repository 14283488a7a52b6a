/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Jobs continue after a restart of the daemon (issue 15): a job stopped by kill -9 or SIGTERM
 * comes back at the same object path, in its status, and finishes from its last checkpoint, with
 * the result an uninterrupted run gives (qemu-img compare and check). Files that changed while
 * the daemon was down fail only their own job, clearly. */

#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-fixture.h"
#include "qemu-oracle.h"

#define MiB (UINT64_C(1024) * 1024)
#define S(s) g_variant_new_string(s)
#define U64(v) g_variant_new_uint64(v)
#define B(v) g_variant_new_boolean(v)
/* A backup continues at its checkpoint rounded down to its target's cluster, 64 KiB at most here. */
#define ROUND_DOWN_CLUSTER(x) ((x) / (64 * 1024) * (64 * 1024))

typedef struct Fixture {
        BusFixture bus;
        char *state;                    /* the state directory */
        char *jobs;                     /* its jobs/ */
} Fixture;

static void start_daemon(Fixture *f) {
        g_autofree char *args = g_strdup_printf("--idle-timeout=0 --state-dir=%s", f->state);
        g_string_truncate(f->bus.statuses, 0);
        bus_fixture_start_daemon(&f->bus, args);
}

static void setup(Fixture *f, gconstpointer data) {
        if (!oracle_available()) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        bus_fixture_init(&f->bus);
        f->state = bus_fixture_path(&f->bus, "state");
        f->jobs = g_build_filename(f->state, "jobs", NULL);
        g_assert_cmpint(g_mkdir(f->state, 0700), ==, 0);
        bus_fixture_start_bus(&f->bus, NULL);
        start_daemon(f);
}

static void teardown(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        bus_fixture_teardown(&f->bus, data);
        g_free(f->state);
        g_free(f->jobs);
}

static char *record_path(Fixture *f, const char *id) {
        g_autofree char *name = g_strdup_printf("0-%s.job", id);
        return g_build_filename(f->jobs, name, NULL);
}

static char *read_record(Fixture *f, const char *id) {
        g_autofree char *path = record_path(f, id);
        char *text = NULL;
        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        return text;
}

/* Record writes run on a worker after the change is announced: wait for one. */
static void wait_for_record(Fixture *f, const char *id, const char *line) {
        g_autofree char *path = record_path(f, id);
        bus_wait_for_file_text(&f->bus, path, line);
}

/* A backup's checkpoint: the length of the copied prefix its record holds (0: none yet). */
static guint64 recorded_copied(Fixture *f, const char *id) {
        g_autofree char *text = read_record(f, id);
        const char *p = strstr(text, "\nCOPIED=0+");
        return p ? g_ascii_strtoull(p + strlen("\nCOPIED=0+"), NULL, 10) : 0;
}

static void wait_for_checkpoint(Fixture *f, const char *id) {
        wait_for_record(f, id, "\nCOPIED=0+");
}

static void kill_daemon(Fixture *f) {
        bus_fixture_kill_daemon(&f->bus);
}

/* SIGTERM: the daemon checkpoints its jobs and exits cleanly, leaving their records. */
static void term_daemon(Fixture *f) {
        bus_fixture_term_daemon(&f->bus);
}

static void assert_same_image(const char *a, const char *fmt_a, const char *b, const char *fmt_b) {
        g_autofree char *out = NULL, *err = NULL;
        int r = oracle_try(&out, &err, "qemu-img compare -q -f %s -F %s '%s' '%s'", fmt_a, fmt_b, a, b);
        if (r != 0)
                g_error("qemu-img compare %s %s: %d %s%s", a, b, r, out, err);
}

static void assert_image_clean(const char *image) {
        g_autofree char *out = NULL, *err = NULL;
        int r = oracle_try(&out, &err, "qemu-img check -q '%s'", image);
        if (r != 0)
                g_error("qemu-img check %s: %d %s%s", image, r, out, err);
}

/* A qcow2 image of 'size' with data in some clusters, zeroes in others, unallocated the rest. */
static void make_qcow2(const char *path, guint64 size) {
        g_autofree char *created = oracle_run("qemu-img create -q -f qcow2 '%s' %" G_GUINT64_FORMAT, path, size);
        g_autofree char *written = oracle_run("qemu-io -f qcow2 -c 'write -P 0x5a 0 %" G_GUINT64_FORMAT "' "
                                              "-c 'write -z %" G_GUINT64_FORMAT " 1M' "
                                              "-c 'write -P 0xa5 %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "' '%s'",
                                              size / 2, size / 2, size / 2 + 4 * MiB, size / 4, path);
}

typedef enum Stop {
        STOP_KILL,
        STOP_TERM,
} Stop;

typedef struct BackupCase {
        const char *id;
        bool qcow2;                     /* source and target qcow2 (else raw) */
        Stop stop;
} BackupCase;

/* A backup held at 4 MiB/s, stopped after its first checkpoint, continues after the restart at
 * the same path, in running, with its speed and from at least its checkpoint, and the target is
 * the source (qemu-img compare; check for qcow2). */
/* The job 'id' at 'path' concludes, without an error. */
static void wait_for_success(Fixture *f, const char *id, const char *path) {
        bus_wait_for_status(&f->bus, id, "concluded");
        g_autofree char *error = bus_get_string(&f->bus, path, "Error");
        g_assert_cmpstr(error, ==, "");
}

static void test_backup(Fixture *f, gconstpointer data) {
        const BackupCase *c = data;
        if (!f->state)
                return;
        const char *ext = c->qcow2 ? "qcow2" : "raw";
        g_autofree char *sname = g_strdup_printf("disk-%s.%s", c->id, ext);
        g_autofree char *tname = g_strdup_printf("target-%s.%s", c->id, ext);
        g_autofree char *hname = g_strdup_printf(".%s.blockjobd-0-%s", tname, c->id);
        g_autofree char *disk = bus_fixture_path(&f->bus, sname);
        g_autofree char *target = bus_fixture_path(&f->bus, tname);
        g_autofree char *hidden = bus_fixture_path(&f->bus, hname);
        g_autofree char *record = record_path(f, c->id);
        guint64 size = 64 * MiB;

        if (c->qcow2)
                make_qcow2(disk, size);
        else
                bus_make_file(disk, size);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S(c->id), "speed", U64(4 * MiB), "format", S(ext),
                                                    "auto-dismiss", B(FALSE), NULL));
        wait_for_checkpoint(f, c->id);
        guint64 copied = recorded_copied(f, c->id);
        g_assert_cmpuint(copied, >, 0);
        g_assert_cmpuint(copied, <, size);

        if (c->stop == STOP_KILL)
                kill_daemon(f);
        else {
                term_daemon(f);
                /* Stopped where it was, not cancelled: the record still says running. */
                g_autofree char *text = read_record(f, c->id);
                g_assert_nonnull(strstr(text, "\nSTATUS=running\n"));
                copied = recorded_copied(f, c->id);
        }
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        start_daemon(f);
        g_autofree char *again = bus_job_path_for_id(&f->bus, c->id);
        g_assert_cmpstr(again, ==, path);
        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
        g_assert_cmpstr(status, ==, "running");
        g_assert_cmpuint(bus_get_uint64(&f->bus, path, "Speed"), ==, 4 * MiB);
        /* It continues from its checkpoint, not from zero (rounded down to the target's cluster:
         * what may have been half written there is written again). */
        g_assert_cmpuint(bus_get_uint64(&f->bus, path, "CurrentProgress"), >=, ROUND_DOWN_CLUSTER(copied));

        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        wait_for_success(f, c->id, path);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        assert_same_image(disk, ext, target, ext);
        if (c->qcow2)
                assert_image_clean(target);
        bus_job_call(&f->bus, path, "Dismiss");
        bus_wait_for_status(&f->bus, c->id, "null");
        bus_wait_for_file_gone(&f->bus, record);
}

/* Paused by its user, then kill -9: it comes back paused, Resume works, and it finishes. A job
 * waiting to be finalized comes back pending, and Finalize publishes its target. */
static void test_statuses(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *t1 = bus_fixture_path(&f->bus, "paused.raw");
        g_autofree char *t2 = bus_fixture_path(&f->bus, "pending.raw");

        bus_make_file(disk, 32 * MiB);
        g_autofree char *p1 = bus_backup(&f->bus, disk, t1,
                                         bus_opts("job-id", S("paused"), "speed", U64(2 * MiB), "auto-dismiss", B(FALSE),
                                                  NULL));
        g_autofree char *p2 = bus_backup(&f->bus, disk, t2,
                                         bus_opts("job-id", S("pending"), "auto-finalize", B(FALSE), "auto-dismiss",
                                                  B(FALSE), NULL));
        bus_wait_for_status(&f->bus, "pending", "pending");
        wait_for_record(f, "pending", "\nSTATUS=pending\n");
        while (bus_get_uint64(&f->bus, p1, "CurrentProgress") == 0)
                bus_iterate_for(&f->bus, 10 * 1000);
        bus_job_call(&f->bus, p1, "Pause");
        bus_wait_for_status(&f->bus, "paused", "paused");
        wait_for_record(f, "paused", "\nUSER_PAUSED=yes\n");

        kill_daemon(f);
        start_daemon(f);

        g_autofree char *s1 = bus_get_string(&f->bus, p1, "Status");
        g_assert_cmpstr(s1, ==, "paused");
        g_autofree char *s2 = bus_get_string(&f->bus, p2, "Status");
        g_assert_cmpstr(s2, ==, "pending");
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));

        bus_job_call(&f->bus, p2, "Finalize");
        bus_wait_for_status(&f->bus, "pending", "concluded");
        assert_same_image(disk, "raw", t2, "raw");

        bus_call(&f->bus, p1, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_job_call(&f->bus, p1, "Resume");
        bus_wait_for_status(&f->bus, "paused", "concluded");
        assert_same_image(disk, "raw", t1, "raw");
        bus_job_call(&f->bus, p1, "Dismiss");
        bus_job_call(&f->bus, p2, "Dismiss");
}

/* A mirror at ready, killed; its source written meanwhile (data, and a range made zero): it
 * comes back running, catches up to ready, and Complete leaves a target equal to the source as
 * it is now. */
static void test_mirror(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "mirror.raw");

        bus_make_file(disk, 16 * MiB);
        g_autofree char *path = bus_start(&f->bus, "Mirror", disk, target,
                                          bus_opts("job-id", S("m"), "auto-dismiss", B(FALSE), NULL));
        bus_wait_for_status(&f->bus, "m", "ready");
        wait_for_record(f, "m", "\nSTATUS=ready\n");
        kill_daemon(f);

        g_autofree char *out = oracle_run("qemu-io -f raw -c 'write -P 0x11 1M 64k' -c 'write -z 4M 1M' '%s'", disk);
        (void) out;
        start_daemon(f);
        g_autofree char *again = bus_job_path_for_id(&f->bus, "m");
        g_assert_cmpstr(again, ==, path);
        bus_wait_for_status(&f->bus, "m", "ready");
        bus_job_call(&f->bus, path, "Complete");
        wait_for_success(f, "m", path);
        assert_same_image(disk, "raw", target, "raw");
        bus_job_call(&f->bus, path, "Dismiss");
}

/* A grouped transaction comes back as a group: both members continue, under the same
 * transaction, and both finish. */
static void test_transaction(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *t1 = bus_fixture_path(&f->bus, "a.raw");
        g_autofree char *t2 = bus_fixture_path(&f->bus, "b.raw");

        bus_make_file(disk, 32 * MiB);
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", disk, t1,
                              bus_opts("job-id", S("a"), "speed", U64(4 * MiB), "auto-dismiss", B(FALSE), NULL));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", disk, t2,
                              bus_opts("job-id", S("b"), "speed", U64(4 * MiB), "auto-dismiss", B(FALSE), NULL));
        g_auto(GStrv) paths = bus_transaction_grouped(&f->bus, g_variant_builder_end(&b));
        g_autofree char *txn = bus_get_string(&f->bus, paths[0], "Transaction");
        g_assert_cmpstr(txn, !=, "");
        wait_for_checkpoint(f, "a");
        kill_daemon(f);
        start_daemon(f);

        g_autofree char *txn2 = bus_get_string(&f->bus, paths[1], "Transaction");
        g_assert_cmpstr(txn2, ==, txn);
        for (unsigned i = 0; i < 2; i++)
                bus_call(&f->bus, paths[i], JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, "a", "concluded");
        bus_wait_for_status(&f->bus, "b", "concluded");
        assert_same_image(disk, "raw", t1, "raw");
        assert_same_image(disk, "raw", t2, "raw");
        for (unsigned i = 0; i < 2; i++)
                bus_job_call(&f->bus, paths[i], "Dismiss");
}

/* What can go wrong while the daemon is down fails only that job, clearly; the others go on: the
 * target's directory deleted, the source written to. */
static void test_broken(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *other = bus_fixture_path(&f->bus, "other.raw");
        g_autofree char *dir = bus_fixture_path(&f->bus, "dir");
        g_autofree char *t1 = g_build_filename(dir, "gone.raw", NULL);
        g_autofree char *t2 = bus_fixture_path(&f->bus, "changed.raw");
        g_autofree char *t3 = bus_fixture_path(&f->bus, "fine.raw");
        g_autofree char *hidden2 = bus_fixture_path(&f->bus, ".changed.raw.blockjobd-0-changed");

        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        bus_make_file(disk, 16 * MiB);
        bus_make_file(other, 16 * MiB);
#define SLOW(id) bus_opts("job-id", S(id), "speed", U64(1 * MiB), "auto-dismiss", B(FALSE), NULL)
        g_autofree char *p1 = bus_backup(&f->bus, disk, t1, SLOW("gone"));
        g_autofree char *p2 = bus_backup(&f->bus, other, t2, SLOW("changed"));
        g_autofree char *p3 = bus_backup(&f->bus, disk, t3, SLOW("fine"));
        wait_for_record(f, "changed", "\nSTATUS=running\n");
        kill_daemon(f);

        g_autofree char *gone = g_build_filename(dir, ".gone.raw.blockjobd-0-gone", NULL);
        g_assert_cmpint(unlink(gone), ==, 0);
        g_assert_cmpint(rmdir(dir), ==, 0);
        g_autofree char *w = oracle_run("qemu-io -f raw -c 'write -P 0x77 0 4k' '%s'", other);
        (void) w;
        start_daemon(f);

        bus_wait_for_status(&f->bus, "gone", "concluded");
        g_autofree char *e1 = bus_get_string(&f->bus, p1, "Error");
        g_test_message("gone: %s", e1);
        g_assert_nonnull(strstr(e1, "cannot continue"));
        g_assert_nonnull(strstr(e1, t1));

        bus_wait_for_status(&f->bus, "changed", "concluded");
        g_autofree char *e2 = bus_get_string(&f->bus, p2, "Error");
        g_test_message("changed: %s", e2);
        g_assert_nonnull(strstr(e2, "changed while blockjobd was stopped"));
        g_assert_false(g_file_test(hidden2, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));

        g_autofree char *s3 = bus_get_string(&f->bus, p3, "Status");
        g_assert_cmpstr(s3, ==, "running");
        bus_call(&f->bus, p3, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, "fine", "concluded");
        assert_same_image(disk, "raw", t3, "raw");
        bus_job_call(&f->bus, p1, "Dismiss");
        bus_job_call(&f->bus, p2, "Dismiss");
        bus_job_call(&f->bus, p3, "Dismiss");
}


/* `blockjobctl list` after a restart shows the restored job, at its status. */
static void assert_listed(Fixture *f, const char *id, const char *status) {
        g_autofree char *out = NULL, *err = NULL;
        g_autofree char *addr = g_strdup_printf("--address=%s", f->bus.address);
        g_autoptr(GError) error = NULL;
        const char *argv[] = { g_getenv("BLOCKJOBCTL"), addr, "list", NULL };
        int status_code = 0;

        g_assert_nonnull(argv[0]);
        g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status_code,
                                   &error));
        g_assert_no_error(error);
        g_test_message("blockjobctl list:\n%s%s", out, err);
        g_assert_cmpint(status_code, ==, 0);
        g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) words = g_strsplit_set(*l, " \t", -1);
                bool has_id = false, has_status = false;
                for (char **w = words; *w; w++) {
                        has_id |= g_str_equal(*w, id);
                        has_status |= g_str_equal(*w, status);
                }
                if (has_id && has_status)
                        return;
        }
        g_error("blockjobctl list does not show %s %s", id, status);
}

/* A qcow2 backup killed three times at seeded random moments (before or after a checkpoint, as
 * it falls): each time it comes back and goes on; the result is the source (compare, check), and
 * blockjobctl list shows it running after each restart. */
static void test_random_kills(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.qcow2");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.qcow2");
        guint64 size = 64 * MiB;

        make_qcow2(disk, size);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("rk"), "speed", U64(2 * MiB), "format", S("qcow2"),
                                                    "auto-dismiss", B(FALSE), NULL));
        for (unsigned round = 0; round < 3; round++) {
                /* At most 12 s in all, of the 24 s its 48 MiB of data take at 2 MiB/s. */
                guint64 wait_us = (guint64) g_test_rand_int_range(200, 4000) * 1000;
                g_test_message("round %u: kill after %" G_GUINT64_FORMAT " ms", round, wait_us / 1000);
                bus_iterate_for(&f->bus, wait_us);
                g_autofree char *before = bus_get_string(&f->bus, path, "Status");
                g_assert_cmpstr(before, ==, "running");
                kill_daemon(f);
                start_daemon(f);
                g_autofree char *again = bus_job_path_for_id(&f->bus, "rk");
                g_assert_cmpstr(again, ==, path);
                assert_listed(f, "rk", "running");
        }
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        wait_for_success(f, "rk", path);
        assert_same_image(disk, "qcow2", target, "qcow2");
        assert_image_clean(target);
        bus_job_call(&f->bus, path, "Dismiss");
}

/* A mirror stopped by kill -9 or SIGTERM in its first pass, raw or qcow2: it comes back running,
 * copies again, reaches ready, and Complete leaves the source's image (compare; check). */
static void test_mirror_midrun(Fixture *f, gconstpointer data) {
        const BackupCase *c = data;
        if (!f->state)
                return;
        const char *ext = c->qcow2 ? "qcow2" : "raw";
        g_autofree char *sname = g_strdup_printf("disk-%s.%s", c->id, ext), *tname = g_strdup_printf("mirror-%s.%s", c->id, ext);
        g_autofree char *disk = bus_fixture_path(&f->bus, sname);
        g_autofree char *target = bus_fixture_path(&f->bus, tname);

        if (c->qcow2)
                make_qcow2(disk, 64 * MiB);
        else
                bus_make_file(disk, 64 * MiB);
        g_autofree char *path = bus_start(&f->bus, "Mirror", disk, target,
                                          bus_opts("job-id", S(c->id), "speed", U64(8 * MiB), "format", S(ext),
                                                   "auto-dismiss", B(FALSE), NULL));
        while (bus_get_uint64(&f->bus, path, "CurrentProgress") < 8 * MiB)
                bus_iterate_for(&f->bus, 20 * 1000);
        if (c->stop == STOP_KILL)
                kill_daemon(f);
        else
                term_daemon(f);
        g_autofree char *text = read_record(f, c->id);
        g_assert_nonnull(strstr(text, "\nSTATUS=running\n"));
        start_daemon(f);
        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
        g_assert_cmpstr(status, ==, "running");
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, c->id, "ready");
        bus_job_call(&f->bus, path, "Complete");
        wait_for_success(f, c->id, path);
        assert_same_image(disk, ext, target, ext);
        if (c->qcow2)
                assert_image_clean(target);
        bus_job_call(&f->bus, path, "Dismiss");
}

/* A grouped transaction whose fast member waits for the slow one: after kill -9 the fast one is
 * back waiting, the slow one running; both finish together. */
static void test_waiting(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *small = bus_fixture_path(&f->bus, "small.raw");
        g_autofree char *t1 = bus_fixture_path(&f->bus, "fast.raw");
        g_autofree char *t2 = bus_fixture_path(&f->bus, "slow.raw");

        bus_make_file(disk, 32 * MiB);
        bus_make_file(small, 1 * MiB);
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", small, t1,
                              bus_opts("job-id", S("fast"), "auto-dismiss", B(FALSE), NULL));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", disk, t2,
                              bus_opts("job-id", S("slow"), "speed", U64(2 * MiB), "auto-dismiss", B(FALSE), NULL));
        g_auto(GStrv) paths = bus_transaction_grouped(&f->bus, g_variant_builder_end(&b));
        bus_wait_for_status(&f->bus, "fast", "waiting");
        wait_for_record(f, "fast", "\nSTATUS=waiting\n");
        kill_daemon(f);
        start_daemon(f);

        g_autofree char *s1 = bus_get_string(&f->bus, paths[0], "Status");
        g_assert_cmpstr(s1, ==, "waiting");
        g_autofree char *s2 = bus_get_string(&f->bus, paths[1], "Status");
        g_assert_cmpstr(s2, ==, "running");
        assert_listed(f, "fast", "waiting");
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
        bus_call(&f->bus, paths[1], JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, "fast", "concluded");
        bus_wait_for_status(&f->bus, "slow", "concluded");
        assert_same_image(small, "raw", t1, "raw");
        assert_same_image(disk, "raw", t2, "raw");
        for (unsigned i = 0; i < 2; i++)
                bus_job_call(&f->bus, paths[i], "Dismiss");
}

/* The backing file of a backup's qcow2 source removed, replaced by another file of the same size,
 * or written while the daemon is down: the job fails with a message naming it; what it was
 * building is removed. */
typedef enum BackingChange {
        BACKING_REMOVED,
        BACKING_REPLACED,
        BACKING_WRITTEN,
        _BACKING_CHANGE_MAX,
} BackingChange;

static void test_backing_changed(Fixture *f, gconstpointer data) {
        static const char *const expected[_BACKING_CHANGE_MAX] = {
                [BACKING_REMOVED] = "base-0.raw",
                [BACKING_REPLACED] = "was replaced by another file while blockjobd was stopped",
                [BACKING_WRITTEN] = "changed while blockjobd was stopped",
        };
        if (!f->state)
                return;
        for (BackingChange c = 0; c < _BACKING_CHANGE_MAX; c++) {
                g_autofree char *bname = g_strdup_printf("base-%d.raw", c), *tname = g_strdup_printf("top-%d.qcow2", c);
                g_autofree char *fname = g_strdup_printf("flat-%d.raw", c), *id = g_strdup_printf("br%d", c);
                g_autofree char *hname = g_strdup_printf(".%s.blockjobd-0-%s", fname, id);
                g_autofree char *base = bus_fixture_path(&f->bus, bname), *top = bus_fixture_path(&f->bus, tname);
                g_autofree char *target = bus_fixture_path(&f->bus, fname), *hidden = bus_fixture_path(&f->bus, hname);

                bus_make_file(base, 32 * MiB);
                g_free(oracle_run("qemu-img create -q -f qcow2 -b '%s' -F raw '%s'", base, top));
                g_autofree char *path = bus_backup(&f->bus, top, target,
                                                   bus_opts("job-id", S(id), "source-format", S("qcow2"), "speed",
                                                            U64(1 * MiB), "auto-dismiss", B(FALSE), NULL));
                wait_for_record(f, id, "\nSTATUS=running\n");
                wait_for_record(f, id, "\nLAYER1_IDENTITY=");
                kill_daemon(f);
                g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
                if (c == BACKING_REMOVED)
                        g_assert_cmpint(unlink(base), ==, 0);
                else if (c == BACKING_REPLACED) {
                        g_autofree char *other = g_strconcat(base, ".new", NULL);
                        bus_make_file(other, 32 * MiB);
                        g_assert_cmpint(rename(other, base), ==, 0);
                } else
                        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x44 1M 4k' '%s'", base));
                start_daemon(f);
                bus_wait_for_status(&f->bus, id, "concluded");
                g_autofree char *error = bus_get_string(&f->bus, path, "Error");
                g_test_message("%s: %s", id, error);
                g_assert_nonnull(strstr(error, "cannot continue"));
                g_assert_nonnull(strstr(error, expected[c]));
                g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
                g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
                bus_job_call(&f->bus, path, "Dismiss");
        }
}


/* A chain base <- mid <- top, 64 MiB: data in each layer, overlapping; base raw or qcow2. 'ref'
 * gets what the chain reads (qemu-img convert), which commit and stream must not change. */
static void make_chain(Fixture *f, const char *prefix, bool raw_base, char **ret_base, char **ret_mid, char **ret_top,
                       char **ret_ref) {
        g_autofree char *bname = g_strdup_printf("%s-base.%s", prefix, raw_base ? "raw" : "qcow2");
        g_autofree char *mname = g_strdup_printf("%s-mid.qcow2", prefix);
        g_autofree char *tname = g_strdup_printf("%s-top.qcow2", prefix);
        g_autofree char *rname = g_strdup_printf("%s-ref.raw", prefix);
        char *base = bus_fixture_path(&f->bus, bname), *mid = bus_fixture_path(&f->bus, mname);
        char *top = bus_fixture_path(&f->bus, tname), *ref = bus_fixture_path(&f->bus, rname);
        const char *bfmt = raw_base ? "raw" : "qcow2";

        g_free(oracle_run("qemu-img create -q -f %s '%s' 64M", bfmt, base));
        g_free(oracle_run("qemu-io -f %s -c 'write -P 0x11 0 32M' '%s'", bfmt, base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b '%s' -F %s '%s'", base, bfmt, mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 16M 32M' -c 'write -z 8M 1M' '%s'", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s'", mid, top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x33 40M 4M' '%s'", top));
        g_free(oracle_run("qemu-img convert -O raw '%s' '%s'", top, ref));
        *ret_base = base;
        *ret_mid = mid;
        *ret_top = top;
        *ret_ref = ref;
}

typedef struct ChainCase {
        const char *id;
        bool commit;                    /* else stream */
        bool raw_base;
        Stop stop;
} ChainCase;

/* Commit (mid into base) or stream (the chain into top, down to base), held at 4 MiB/s, stopped
 * after its first checkpoint by kill -9 or SIGTERM, continues after the restart at the same path
 * and finishes: the chain reads what it read before (qemu-img compare), its images pass qemu-img
 * check, and top now rests on base. */
static void test_chain(Fixture *f, gconstpointer data) {
        const ChainCase *c = data;
        if (!f->state)
                return;
        g_autofree char *base = NULL, *mid = NULL, *top = NULL, *ref = NULL;

        make_chain(f, c->id, c->raw_base, &base, &mid, &top, &ref);
        g_autofree char *path = c->commit
                ? bus_start(&f->bus, "Commit", top, NULL,
                            bus_opts("job-id", S(c->id), "top", S(mid), "base", S(base), "speed", U64(4 * MiB),
                                     "auto-dismiss", B(FALSE), NULL))
                : bus_start(&f->bus, "Stream", top, NULL,
                            bus_opts("job-id", S(c->id), "base", S(base), "speed", U64(4 * MiB), "auto-dismiss",
                                     B(FALSE), NULL));
        wait_for_record(f, c->id, "\nOFFSET=");
        for (;;) {
                g_autofree char *text = read_record(f, c->id);
                const char *o = strstr(text, "\nOFFSET=");
                if (o && g_ascii_strtoull(o + strlen("\nOFFSET="), NULL, 10) > 0)
                        break;
                bus_iterate_for(&f->bus, 20 * 1000);
        }
        if (c->stop == STOP_KILL)
                kill_daemon(f);
        else
                term_daemon(f);
        start_daemon(f);
        g_autofree char *again = bus_job_path_for_id(&f->bus, c->id);
        g_assert_cmpstr(again, ==, path);
        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
        g_assert_cmpstr(status, ==, "running");
        g_assert_cmpuint(bus_get_uint64(&f->bus, path, "CurrentProgress"), >, 0);
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        wait_for_success(f, c->id, path);

        assert_same_image(ref, "raw", top, "qcow2");
        assert_image_clean(top);
        if (!c->raw_base)
                assert_image_clean(base);
        g_autofree char *info = oracle_run("qemu-img info -U --output=json '%s'", top);
        g_autofree char *want = g_strdup_printf("\"backing-filename\": \"%s\"", base);
        g_assert_nonnull(strstr(info, want));
        bus_job_call(&f->bus, path, "Dismiss");
}

static const ChainCase chain_cases[] = {
        { "commit-kill", true, false, STOP_KILL },
        { "commit-term", true, false, STOP_TERM },
        { "commit-raw-kill", true, true, STOP_KILL },
        { "commit-raw-term", true, true, STOP_TERM },
        { "stream-kill", false, false, STOP_KILL },
        { "stream-term", false, false, STOP_TERM },
        { "stream-raw-kill", false, true, STOP_KILL },
        { "stream-raw-term", false, true, STOP_TERM },
};


/* ---- systemd's file descriptor store, played by the test ----------------------------------------
 *
 * The daemon sends FDSTORE=1/FDNAME= (and FDSTOREREMOVE=1) to $NOTIFY_SOCKET, as to systemd; the
 * test keeps the descriptors, and at the next start hands them back as systemd does: as
 * descriptors 3... with $LISTEN_FDS, $LISTEN_FDNAMES and $LISTEN_PID. */
typedef struct FdStore {
        int socket;
        char *path;
        GHashTable *fds;                /* name → fd */
        /* The daemon's sd_notify() blocks while the socket's queue is full, as it would with a
         * systemd that does not read: a thread reads it all the time, as systemd does. */
        GMutex lock;
        GThread *reader;
        int stop[2];
} FdStore;

static void fd_store_drain_locked(FdStore *st);

static gpointer fd_store_reader(gpointer data) {
        FdStore *st = data;
        struct pollfd p[2] = { { .fd = st->socket, .events = POLLIN }, { .fd = st->stop[0], .events = POLLIN } };

        for (;;) {
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        g_error("poll: %m");
                if (p[1].revents)
                        return NULL;
                g_mutex_lock(&st->lock);
                fd_store_drain_locked(st);
                g_mutex_unlock(&st->lock);
        }
}

static void fd_store_init(Fixture *f, FdStore *st) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        st->path = bus_fixture_path(&f->bus, "notify");
        g_assert_cmpuint(strlen(st->path), <, sizeof(sa.sun_path));
        strcpy(sa.sun_path, st->path);
        st->socket = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        g_assert_cmpint(st->socket, >=, 0);
        g_assert_cmpint(bind(st->socket, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
        st->fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_mutex_init(&st->lock);
        g_assert_cmpint(pipe2(st->stop, O_CLOEXEC), ==, 0);
        st->reader = g_thread_new("fd-store", fd_store_reader, st);
}

static void fd_store_done(FdStore *st) {
        GHashTableIter i;
        gpointer fd;

        g_assert_cmpint(write(st->stop[1], "x", 1), ==, 1);
        g_thread_join(st->reader);
        close(st->stop[0]);
        close(st->stop[1]);
        g_mutex_clear(&st->lock);
        g_hash_table_iter_init(&i, st->fds);
        while (g_hash_table_iter_next(&i, NULL, &fd))
                close(GPOINTER_TO_INT(fd));
        g_hash_table_unref(st->fds);
        close(st->socket);
        g_free(st->path);
}

/* Takes in whatever the daemon has sent. */
static void fd_store_drain_locked(FdStore *st) {
        for (;;) {
                char buf[4096];
                union {
                        struct cmsghdr h;
                        char space[CMSG_SPACE(sizeof(int) * 16)];
                } control;
                struct iovec iov = { buf, sizeof(buf) - 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                                     .msg_controllen = sizeof(control) };
                ssize_t n = recvmsg(st->socket, &mh, MSG_CMSG_CLOEXEC);
                int fds[16], n_fds = 0;

                if (n < 0) {
                        g_assert_cmpint(errno, ==, EAGAIN);
                        return;
                }
                buf[n] = 0;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                                n_fds = (int) ((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                                memcpy(fds, CMSG_DATA(c), n_fds * sizeof(int));
                        }
                const char *name = strstr(buf, "FDNAME=");
                g_autofree char *fdname = name ? g_strndup(name + 7, strcspn(name + 7, "\n")) : NULL;
                if (strstr(buf, "FDSTORE=1") && fdname && n_fds == 1) {
                        gpointer old;
                        if (g_hash_table_lookup_extended(st->fds, fdname, NULL, &old))
                                close(GPOINTER_TO_INT(old));
                        g_hash_table_insert(st->fds, g_strdup(fdname), GINT_TO_POINTER(fds[0]));
                        continue;
                }
                for (int i = 0; i < n_fds; i++)
                        close(fds[i]);
                gpointer old;
                if (strstr(buf, "FDSTOREREMOVE=1") && fdname &&
                    g_hash_table_lookup_extended(st->fds, fdname, NULL, &old)) {
                        close(GPOINTER_TO_INT(old));
                        g_hash_table_remove(st->fds, fdname);
                }
        }
}

/* The daemon under "systemd": $NOTIFY_SOCKET, and the stored descriptors handed back ('give'). */
static void fd_store_drain(FdStore *st) {
        g_mutex_lock(&st->lock);
        fd_store_drain_locked(st);
        g_mutex_unlock(&st->lock);
}

static bool fd_store_has(FdStore *st, const char *name) {
        g_mutex_lock(&st->lock);
        bool has = g_hash_table_contains(st->fds, name);
        g_mutex_unlock(&st->lock);
        return has;
}

static void start_daemon_with_store(Fixture *f, FdStore *st, bool give) {
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
        g_autoptr(GError) error = NULL;
        g_autoptr(GString) names = g_string_new(NULL);
        g_autofree char *state = g_strdup_printf("--state-dir=%s", f->state);
        GHashTableIter i;
        gpointer key, fd;
        int n = 0;

        fd_store_drain(st);
        g_mutex_lock(&st->lock);
        if (give) {
                g_hash_table_iter_init(&i, st->fds);
                while (g_hash_table_iter_next(&i, &key, &fd)) {
                        g_subprocess_launcher_take_fd(l, fcntl(GPOINTER_TO_INT(fd), F_DUPFD_CLOEXEC, 3), 3 + n++);
                        g_string_append_printf(names, "%s%s", names->len ? ":" : "", (const char *) key);
                }
        }
        g_mutex_unlock(&st->lock);
        g_autofree char *n_text = g_strdup_printf("%d", n);
        g_subprocess_launcher_setenv(l, "DBUS_SYSTEM_BUS_ADDRESS", f->bus.address, TRUE);
        g_subprocess_launcher_setenv(l, "NOTIFY_SOCKET", st->path, TRUE);
        if (n > 0) {
                g_subprocess_launcher_setenv(l, "LISTEN_FDS", n_text, TRUE);
                g_subprocess_launcher_setenv(l, "LISTEN_FDNAMES", names->str, TRUE);
        }
        g_free(f->bus.daemon_log);
        f->bus.daemon_log = bus_fixture_path(&f->bus, "daemon.log");
        g_subprocess_launcher_set_stderr_file_path(l, f->bus.daemon_log);
        /* LISTEN_PID is the daemon's own pid: the shell's, which exec keeps. */
        const char *argv[] = { "/bin/sh", "-c", n > 0 ? "LISTEN_PID=$$ exec \"$0\" \"$@\"" : "exec \"$0\" \"$@\"",
                               g_getenv("BLOCKJOBD"), "--idle-timeout=0", state, NULL };
        g_string_truncate(f->bus.statuses, 0);
        f->bus.daemon = g_subprocess_launcher_spawnv(l, argv, &error);
        g_assert_no_error(error);
        bus_wait_for_name(&f->bus, true);
}

/* Descriptors passed for the source and the target (written in place) survive a crash in the
 * store, and the backup continues with them; after a "reboot" (nothing handed back) a job with
 * passed descriptors fails, saying why; a dismissed job's descriptors leave the store. */
static void test_fd_store(Fixture *f, gconstpointer data) {
        if (!f->state)
                return;
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "passed.raw");
        FdStore st = {};

        bus_make_file(disk, 32 * MiB);
        fd_store_init(f, &st);
        /* The fixture's daemon has no $NOTIFY_SOCKET: one that has. */
        g_subprocess_send_signal(f->bus.daemon, SIGTERM);
        g_assert_true(g_subprocess_wait(f->bus.daemon, NULL, NULL));
        g_clear_object(&f->bus.daemon);
        bus_wait_for_name(&f->bus, false);
        start_daemon_with_store(f, &st, false);

        for (unsigned round = 0; round < 2; round++) {
                g_autofree char *id = g_strdup_printf("fd%u", round);
                int sfd = open(disk, O_RDONLY | O_CLOEXEC), tfd = open(target, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                g_assert_cmpint(sfd, >=, 0);
                g_assert_cmpint(tfd, >=, 0);
                g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
                g_assert_cmpint(g_unix_fd_list_append(fds, sfd, NULL), ==, 0);
                g_assert_cmpint(g_unix_fd_list_append(fds, tfd, NULL), ==, 1);
                close(sfd);
                close(tfd);
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) reply = bus_call_with_fds(
                        &f->bus, MANAGER_PATH, MANAGER_IFACE, "Backup",
                        g_variant_new("(ss@a{sv})", disk, target,
                                      bus_opts("job-id", S(id), "source-fd", g_variant_new_handle(0), "target-fd",
                                               g_variant_new_handle(1), "speed", U64(4 * MiB), "auto-dismiss", B(FALSE),
                                               NULL)),
                        fds, &error);
                g_assert_no_error(error);
                g_autofree char *path = NULL;
                g_variant_get(reply, "(o)", &path);
                g_autofree char *text = read_record(f, id);
                g_autofree char *want = g_strdup_printf("\nSOURCE_FDNAME=0-%s-source\n", id);
                g_assert_nonnull(strstr(text, want));
                wait_for_checkpoint(f, id);
                fd_store_drain(&st);
                g_autofree char *sname = g_strdup_printf("0-%s-source", id), *tname = g_strdup_printf("0-%s-target", id);
                g_assert_true(fd_store_has(&st, sname));
                g_assert_true(fd_store_has(&st, tname));
                guint64 copied = recorded_copied(f, id);

                kill_daemon(f);
                if (round == 0) {
                        /* A crash: systemd hands them back, and the job goes on with them. */
                        start_daemon_with_store(f, &st, true);
                        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
                        g_assert_cmpstr(status, ==, "running");
                        g_assert_cmpuint(bus_get_uint64(&f->bus, path, "CurrentProgress"), >=,
                                         ROUND_DOWN_CLUSTER(copied));
                        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
                        bus_wait_for_status(&f->bus, id, "concluded");
                        g_autofree char *error_text = bus_get_string(&f->bus, path, "Error");
                        g_assert_cmpstr(error_text, ==, "");
                        assert_same_image(disk, "raw", target, "raw");
                } else {
                        /* A reboot: nothing comes back. */
                        start_daemon_with_store(f, &st, false);
                        bus_wait_for_status(&f->bus, id, "concluded");
                        g_autofree char *error_text = bus_get_string(&f->bus, path, "Error");
                        g_test_message("%s", error_text);
                        g_assert_nonnull(strstr(error_text, "file descriptor store did not keep them"));
                }
                bus_job_call(&f->bus, path, "Dismiss");
                bus_wait_for_status(&f->bus, id, "null");
                for (unsigned i = 0; i < 3000 && (fd_store_has(&st, sname) || fd_store_has(&st, tname)); i++)
                        bus_iterate_for(&f->bus, 10 * 1000);
                g_assert_false(fd_store_has(&st, sname));
                g_assert_false(fd_store_has(&st, tname));
        }
        fd_store_done(&st);
}

static const BackupCase backup_cases[] = {
        { "kill-raw", false, STOP_KILL },
        { "kill-qcow2", true, STOP_KILL },
        { "term-raw", false, STOP_TERM },
        { "term-qcow2", true, STOP_TERM },
};

/* The same stops for a mirror in its first pass. */
static const BackupCase mirror_cases[] = {
        { "mkill-raw", false, STOP_KILL },
        { "mkill-qcow2", true, STOP_KILL },
        { "mterm-raw", false, STOP_TERM },
        { "mterm-qcow2", true, STOP_TERM },
};

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(backup_cases); i++) {
                g_autofree char *name = g_strdup_printf("/resume/backup/%s", backup_cases[i].id);
                g_test_add(name, Fixture, &backup_cases[i], setup, test_backup, teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(mirror_cases); i++) {
                g_autofree char *name = g_strdup_printf("/resume/mirror-midrun/%s", mirror_cases[i].id);
                g_test_add(name, Fixture, &mirror_cases[i], setup, test_mirror_midrun, teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(chain_cases); i++) {
                g_autofree char *name = g_strdup_printf("/resume/chain/%s", chain_cases[i].id);
                g_test_add(name, Fixture, &chain_cases[i], setup, test_chain, teardown);
        }
        g_test_add("/resume/statuses", Fixture, NULL, setup, test_statuses, teardown);
        g_test_add("/resume/fd-store", Fixture, NULL, setup, test_fd_store, teardown);
        g_test_add("/resume/mirror", Fixture, NULL, setup, test_mirror, teardown);
        g_test_add("/resume/transaction", Fixture, NULL, setup, test_transaction, teardown);
        g_test_add("/resume/broken", Fixture, NULL, setup, test_broken, teardown);
        g_test_add("/resume/random-kills", Fixture, NULL, setup, test_random_kills, teardown);
        g_test_add("/resume/waiting", Fixture, NULL, setup, test_waiting, teardown);
        g_test_add("/resume/backing-changed", Fixture, NULL, setup, test_backing_changed, teardown);
        return g_test_run();
}
