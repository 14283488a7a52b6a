/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Authorization with the real polkitd on the test's private system bus, and real unprivileged
 * callers (this program, run again as nobody through setpriv). polkit-fixture.h installs the
 * project's actions and the test's rules system-wide for each test, one test on the machine at a
 * time, and removes them afterwards whatever happens. Needs root; skipped elsewhere. */

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "polkit-fixture.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

#define DENIED "org.freedesktop.DBus.Error.AccessDenied:"
#define INTERACTIVE "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired:"

/* ---- the fixture ------------------------------------------------------------------------------- */

static void setup(PolkitFixture *pf, gconstpointer data) {
        polkit_fixture_setup(pf, data);
}

static void teardown(PolkitFixture *pf, gconstpointer data) {
        polkit_fixture_teardown(pf);
}

/* ---- calls ------------------------------------------------------------------------------------- */

static void make_source(PolkitFixture *pf, const char *name, guint64 size);

/* How most tests start: polkitd with these rules (NULL: none), and nobody's source, s.img. */
static bool begin(PolkitFixture *pf, const char *rules_text, guint64 source_size) {
        if (!polkit_fixture_usable(pf))
                return false;
        polkit_fixture_start(pf, rules_text);
        make_source(pf, "s.img", source_size);
        return true;
}

static char *backup_args(PolkitFixture *pf, const char *source, const char *target, const char *options) {
        g_autofree char *s = g_build_filename(pf->nobody_dir, source, NULL);
        g_autofree char *t = g_build_filename(pf->nobody_dir, target, NULL);
        return g_strdup_printf("('%s', '%s', @a{sv} %s)", s, t, options ?: "{}");
}

/* Makes a source file, readable by everyone. */
static void make_source(PolkitFixture *pf, const char *name, guint64 size) {
        g_autofree char *p = g_build_filename(pf->nobody_dir, name, NULL);
        bus_make_file(p, size);
        g_assert_cmpint(g_chmod(p, 0644), ==, 0);
}

static char *nobody_call(PolkitFixture *pf, bool interactive, const char *path, const char *iface, const char *method,
                         const char *args) {
        if (interactive)
                return bus_as_nobody(&pf->bus, "--interactive", "call", path, iface, method, args, NULL);
        return bus_as_nobody(&pf->bus, "call", path, iface, method, args, NULL);
}

static void assert_nobody(PolkitFixture *pf, bool interactive, const char *path, const char *iface, const char *method,
                          const char *args, const char *expected) {
        g_autofree char *out = nobody_call(pf, interactive, path, iface, method, args);
        bus_assert_answer(out, expected);
}

static void assert_nobody_verb(PolkitFixture *pf, const char *id, const char *method, const char *args,
                               const char *expected) {
        g_autofree char *path = bus_job_path_for_id(&pf->bus, id);
        assert_nobody(pf, false, path, JOB_IFACE, method, args, expected);
}

static void root_verb(BusFixture *f, const char *id, const char *method) {
        g_autofree char *path = bus_job_path_for_id(f, id);
        bus_job_call(f, path, method);
}

/* A backup by root, slowed down so that it stays around. */
static void root_backup(PolkitFixture *pf, const char *id) {
        g_autofree char *s = g_build_filename(pf->bus.dir, "root.img", NULL);
        g_autofree char *t = g_build_filename(pf->bus.dir, id, NULL), *path = NULL;

        if (!g_file_test(s, G_FILE_TEST_EXISTS))
                bus_make_file(s, 8 * MiB);
        path = bus_backup(&pf->bus, s, t,
                          bus_opts("job-id", g_variant_new_string(id), "speed", g_variant_new_uint64(MiB),
                                   "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
}

/* ---- the tests --------------------------------------------------------------------------------- */

/* Root is never asked about: no polkitd runs here at all, and every creation and verb works. */
static void test_root_needs_no_polkit(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;

        if (!polkit_fixture_usable(pf))
                return;
        g_assert_false(polkit_fixture_running(f));

        root_backup(pf, "r");
        root_verb(f, "r", "Pause");
        bus_wait_for_status(f, "r", "paused");
        g_variant_unref(bus_call(f, MANAGER_PATH "/job/r", JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL));
        root_verb(f, "r", "Resume");
        root_verb(f, "r", "Cancel");
        bus_wait_for_status(f, "r", "concluded");
        root_verb(f, "r", "Dismiss");
        bus_wait_for_status(f, "r", "null");

        /* Finalize: a backup that waits in pending. */
        g_autofree char *source = g_build_filename(f->dir, "root.img", NULL);
        g_autofree char *t2 = g_build_filename(f->dir, "fin.img", NULL);
        g_free(bus_backup(f, source, t2,
                          bus_opts("job-id", g_variant_new_string("fin"), "auto-finalize", g_variant_new_boolean(FALSE),
                                   NULL)));
        bus_wait_for_status(f, "fin", "pending");
        root_verb(f, "fin", "Finalize");
        bus_wait_for_status(f, "fin", "null");

        /* Complete: a mirror, ready. */
        g_autofree char *t3 = g_build_filename(f->dir, "mirror.img", NULL);
        g_free(bus_start(f, "Mirror", source, t3, bus_opts("job-id", g_variant_new_string("m"), NULL)));
        bus_wait_for_status(f, "m", "ready");
        root_verb(f, "m", "Complete");
        bus_wait_for_status(f, "m", "null");
        bus_assert_same_file(source, t3);

        /* Stream and Commit, on a qcow2 chain of root's. */
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        g_autofree char *cmd = g_strdup_printf("sh -c 'qemu-img create -q -f qcow2 %1$s 1M && "
                                               "qemu-img create -q -f qcow2 -b %1$s -F qcow2 %2$s'",
                                               base, top);
        gint status;
        g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
        g_free(bus_start(f, "Commit", top, NULL, bus_opts("job-id", g_variant_new_string("c"), NULL)));
        bus_wait_for_status(f, "c", "ready");
        root_verb(f, "c", "Complete");
        bus_wait_for_status(f, "c", "null");
        g_free(bus_start(f, "Stream", top, NULL, bus_opts("job-id", g_variant_new_string("s"), NULL)));
        bus_wait_for_status(f, "s", "null");
}

/* No rules: nobody (no session, so allow_any: auth_admin) is challenged; without the interactive
 * flag that is InteractiveAuthorizationRequired, with it and no agent to ask, AccessDenied. */
static void test_unprivileged_without_rules(PolkitFixture *pf, gconstpointer data) {
        g_autofree char *args = NULL;

        if (!begin(pf, NULL, MiB))
                return;
        args = backup_args(pf, "s.img", "t.img", NULL);

        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", args, INTERACTIVE);
        assert_nobody(pf, true, MANAGER_PATH, MANAGER_IFACE, "Backup", args, DENIED);
        g_autofree char *target = g_build_filename(pf->nobody_dir, "t.img", NULL);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        /* Verbs on root's job: the same. */
        root_backup(pf, "r");
        assert_nobody_verb(pf, "r", "Pause", "()", INTERACTIVE);
        assert_nobody_verb(pf, "r", "SetSpeed", "(uint64 5,)", INTERACTIVE);
        assert_nobody_verb(pf, "r", "Cancel", "()", INTERACTIVE);
        g_autofree char *status = bus_get_string(&pf->bus, MANAGER_PATH "/job/r", "Status");
        g_assert_cmpstr(status, ==, "running");
        /* Reading is free. */
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "ListJobs", "()", "ok");
}

/* Rules that allow nobody to back up (matched by action and by the job-type detail) and to use
 * some verbs, but not to touch other users' jobs. */
static const char rules[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user != 'nobody')\n"
        "                return polkit.Result.NOT_HANDLED;\n"
        "        if (action.id == 'org.blockjobd.create.backup' && action.lookup('job-type') == 'backup' &&\n"
        "            action.lookup('owner-uid') == '65534')\n"
        "                return polkit.Result.YES;\n"
        "        if (['org.blockjobd.job.pause', 'org.blockjobd.job.resume', 'org.blockjobd.job.cancel',\n"
        "             'org.blockjobd.job.dismiss', 'org.blockjobd.job.set-speed'].indexOf(action.id) >= 0)\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

static void test_unprivileged_with_rules(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;
        g_autofree char *args = NULL, *mirror_args = NULL, *out = NULL, *owner = NULL;

        if (!begin(pf, rules, 8 * MiB))
                return;
        args = backup_args(pf, "s.img", "t.img",
                           "{'job-id': <'mine'>, 'speed': <uint64 1048576>, 'auto-dismiss': <false>}");

        out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", args);
        bus_assert_answer(out, "ok");
        /* Its job lives at a path of its own: ids are unique per owner. */
        g_autoptr(GVariant) uid = bus_get_property(f, MANAGER_PATH "/job/mine_u65534", JOB_IFACE, "OwnerUID");
        g_assert_cmpuint(g_variant_get_uint32(uid), ==, 65534);

        /* Its own job: the verbs the rules allow work, the others are still challenged. */
        assert_nobody_verb(pf, "mine", "Pause", "()", "ok");
        bus_wait_for_status(f, "mine", "paused");
        assert_nobody_verb(pf, "mine", "SetSpeed", "(uint64 2097152,)", "ok");
        assert_nobody_verb(pf, "mine", "Resume", "()", "ok");
        assert_nobody_verb(pf, "mine", "Complete", "()", INTERACTIVE);
        assert_nobody_verb(pf, "mine", "Cancel", "()", "ok");
        bus_wait_for_status(f, "mine", "concluded");
        assert_nobody_verb(pf, "mine", "Dismiss", "()", "ok");
        bus_wait_for_status(f, "mine", "null");

        /* The rule matches job-type "backup" only. */
        mirror_args = backup_args(pf, "s.img", "m.img", NULL);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "Mirror", mirror_args, INTERACTIVE);

        /* Root's job: the verb is allowed, acting on another user's job is not. */
        root_backup(pf, "r");
        assert_nobody_verb(pf, "r", "Pause", "()", INTERACTIVE);
        assert_nobody_verb(pf, "r", "Cancel", "()", INTERACTIVE);
        g_autofree char *status = bus_get_string(f, MANAGER_PATH "/job/r", "Status");
        g_assert_cmpstr(status, ==, "running");
}

/* Rules that let nobody create every kind of job, and use every verb on its own jobs. */
static const char rules_all[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user == 'nobody' && action.id.indexOf('org.blockjobd.') == 0 &&\n"
        "            action.id != 'org.blockjobd.job.manage-other-users')\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

static void assert_contains(const char *output, const char *part) {
        if (!strstr(output, part))
                g_error("expected an answer containing \"%s\", got: %s", part, output);
}

/* Calls Backup as nobody, expecting an answer that starts with 'expected' and contains 'part'. */
static void nobody_backup(PolkitFixture *pf, const char *source, const char *target, const char *options,
                          const char *expected, const char *part) {
        g_autofree char *args = g_strdup_printf("('%s', '%s', @a{sv} %s)", source, target, options ?: "{}");
        g_autofree char *out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", args);

        bus_assert_answer(out, expected);
        if (part)
                assert_contains(out, part);
}

static void assert_owned_by_nobody(const char *path) {
        struct stat st;

        g_assert_cmpint(lstat(path, &st), ==, 0);
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpuint(st.st_uid, ==, 65534);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
}

/* Allowed to create jobs, nobody still reaches only what nobody could reach: the daemon opens
 * nothing for it with root's rights. */
static void test_files_as_caller(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;

        if (!begin(pf, rules_all, MiB))
                return;
        g_autofree char *source = g_build_filename(pf->nobody_dir, "s.img", NULL);
        g_autofree char *t1 = g_build_filename(pf->nobody_dir, "t1.img", NULL);

        /* A file nobody cannot read. */
        nobody_backup(pf, "/etc/shadow", t1, NULL, DENIED, "Could not open '/etc/shadow': Permission denied");
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));

        /* A directory nobody cannot even look into, and one nobody can read but not write. */
        nobody_backup(pf, source, "/root/blockjobd-test-target.img", NULL, DENIED,
                      "Could not check target '/root/blockjobd-test-target.img': Permission denied");
        g_assert_false(g_file_test("/root/blockjobd-test-target.img", G_FILE_TEST_EXISTS));
        g_autofree char *roots = g_build_filename(f->dir, "t.img", NULL);
        g_autofree char *roots_error = g_strdup_printf("Could not create target '%s': Permission denied", roots);
        nobody_backup(pf, source, roots, NULL, DENIED, roots_error);
        g_assert_false(g_file_test(roots, G_FILE_TEST_EXISTS));

        /* A qcow2 image nobody may read, whose backing file nobody may not. */
        g_autofree char *evil = g_build_filename(pf->nobody_dir, "evil.qcow2", NULL);
        g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 -u -b /etc/shadow -F raw %s 1M", evil);
        g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, NULL, NULL));
        g_assert_cmpint(g_chmod(evil, 0644), ==, 0);
        /* Probed, it is refused for what it is; named as qcow2, for what it names. */
        nobody_backup(pf, evil, t1, NULL, "org.freedesktop.DBus.Error.InvalidArgs:", "pass source-format=qcow2");
        nobody_backup(pf, evil, t1, "{'source-format': <'qcow2'>}", DENIED,
                      "Could not open backing file '/etc/shadow' of");

        /* A symlink planted where the target goes, to a file of root's: without overwrite the
         * name is taken; with it, the link itself is replaced, never what it points to. */
        g_autofree char *secret = g_build_filename(f->dir, "secret", NULL);
        g_autofree char *link = g_build_filename(pf->nobody_dir, "link.img", NULL);
        g_assert_true(g_file_set_contents(secret, "root's secret", -1, NULL));
        g_assert_cmpint(g_chmod(secret, 0600), ==, 0);
        g_assert_cmpint(symlink(secret, link), ==, 0);
        nobody_backup(pf, source, link, NULL, "org.blockjobd.Jobs1.Error.ImageError:", "already exists");
        nobody_backup(pf, source, link, "{'overwrite': <true>, 'job-id': <'over-link'>}", "ok", NULL);
        bus_wait_for_status(f, "over-link", "null");
        g_autofree char *text = NULL;
        g_assert_true(g_file_get_contents(secret, &text, NULL, NULL));
        g_assert_cmpstr(text, ==, "root's secret");
        assert_owned_by_nobody(link);

        /* A file of root's that nobody may not read, in nobody's own directory: nobody could
         * rename over it, but the daemon does not open it for nobody (to lock it, as any file it
         * replaces), so it is not replaced. */
        g_autofree char *roots_in_mine = g_build_filename(pf->nobody_dir, "roots.img", NULL);
        g_assert_true(g_file_set_contents(roots_in_mine, "root's", -1, NULL));
        g_assert_cmpint(g_chmod(roots_in_mine, 0600), ==, 0);
        nobody_backup(pf, source, roots_in_mine, "{'overwrite': <true>}", DENIED, "is not replaced");
        g_autofree char *kept = NULL;
        g_assert_true(g_file_get_contents(roots_in_mine, &kept, NULL, NULL));
        g_assert_cmpstr(kept, ==, "root's");
        bus_assert_same_file(source, link);

        /* A sticky directory (as /tmp): root's file there is not nobody's to replace, neither
         * when asked nor when it appears while the job runs (a name that was free when the job
         * was created is taken only if it still is). */
        g_autofree char *sticky = g_build_filename(f->dir, "sticky", NULL);
        g_autofree char *roots_file = g_build_filename(sticky, "roots.img", NULL);
        g_autofree char *late = g_build_filename(sticky, "late.img", NULL);
        g_assert_cmpint(g_mkdir(sticky, 01777), ==, 0);
        g_assert_cmpint(g_chmod(sticky, 01777), ==, 0);
        g_assert_true(g_file_set_contents(roots_file, "root's", -1, NULL));
        nobody_backup(pf, source, roots_file, "{'overwrite': <true>}", DENIED,
                      "belongs to another user in a sticky directory");
        nobody_backup(pf, source, late, "{'overwrite': <true>, 'job-id': <'late'>, 'auto-finalize': <false>, "
                      "'auto-dismiss': <false>}", "ok",
                      NULL);
        bus_wait_for_status(f, "late", "pending");
        g_assert_true(g_file_set_contents(late, "root's", -1, NULL));
        assert_nobody_verb(pf, "late", "Finalize", "()", "ok");
        bus_wait_for_status(f, "late", "concluded");
        g_autofree char *late_error = bus_get_string(f, MANAGER_PATH "/job/late_u65534", "Error");
        assert_contains(late_error, "already exists");
        assert_nobody_verb(pf, "late", "Dismiss", "()", "ok");
        g_autofree char *still = NULL;
        g_assert_true(g_file_get_contents(late, &still, NULL, NULL));
        g_assert_cmpstr(still, ==, "root's");

        /* What nobody may do works, and what it makes is nobody's, private. */
        nobody_backup(pf, source, t1, "{'job-id': <'fine'>}", "ok", NULL);
        bus_wait_for_status(f, "fine", "null");
        assert_owned_by_nobody(t1);
        bus_assert_same_file(source, t1);

        g_variant_unref(bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL));
}

/* Descriptors instead of names: nobody opens its files itself and passes them; the daemon opens
 * nothing by name, and refuses a chain that needs a file that was not passed. */
static void test_fd_variants(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;
        g_autofree char *base = NULL, *top = NULL, *copy = NULL, *cmd = NULL, *args = NULL, *out = NULL;
        g_autofree char *fd_top = NULL, *fd_base = NULL, *fd_copy = NULL, *fd_top_rw = NULL, *fd_base_rw = NULL;

        if (!polkit_fixture_usable(pf))
                return;
        polkit_fixture_start(pf, rules_all);
        base = g_build_filename(pf->nobody_dir, "base.qcow2", NULL);
        top = g_build_filename(pf->nobody_dir, "top.qcow2", NULL);
        copy = g_build_filename(pf->nobody_dir, "copy.raw", NULL);
        cmd = g_strdup_printf("sh -c 'qemu-img create -q -f qcow2 %1$s 4M && "
                              "qemu-io -f qcow2 -c \"write -P 0x51 0 2M\" %1$s >/dev/null && "
                              "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %2$s && "
                              "qemu-io -f qcow2 -c \"write -P 0x52 1M 2M\" %2$s >/dev/null && "
                              "chown nobody %1$s %2$s && chmod 600 %1$s %2$s'",
                              base, top);
        gint status;
        g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));

        fd_top = g_strdup_printf("--fd=r:%s", top);
        fd_base = g_strdup_printf("--fd=r:%s", base);
        fd_copy = g_strdup_printf("--fd=new:%s", copy);

        /* Backup: source and chain and target as descriptors; the names only label them. */
        args = g_strdup_printf("('%s', '%s', @a{sv} {'source-fd': <handle 0>, 'chain-fds': <[handle 1]>, "
                               "'source-format': <'qcow2'>, 'target-fd': <handle 2>, 'format': <'raw'>, "
                               "'job-id': <'by-fd'>})",
                               top, copy);
        out = bus_as_nobody(f, fd_top, fd_base, fd_copy, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, "ok");
        bus_wait_for_status(f, "by-fd", "null");
        g_autofree char *compare = g_strdup_printf("qemu-img compare -q %s %s", top, copy);
        g_assert_true(g_spawn_command_line_sync(compare, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));

        /* A backing file of the source, given as the target to write in place: refused before
         * anything is written into it. */
        g_clear_pointer(&args, g_free);
        g_clear_pointer(&out, g_free);
        fd_base_rw = g_strdup_printf("--fd=rw:%s", base);
        args = g_strdup_printf("('%s', '%s', @a{sv} {'source-fd': <handle 0>, 'chain-fds': <[handle 1]>, "
                               "'source-format': <'qcow2'>, 'target-fd': <handle 2>, 'overwrite': <true>})",
                               top, base);
        out = bus_as_nobody(f, fd_top, fd_base, fd_base_rw, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, "org.freedesktop.DBus.Error.InvalidArgs:");
        assert_contains(out, "is a backing file of the source");
        g_assert_true(g_spawn_command_line_sync(compare, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));

        /* Without the backing file's descriptor: refused, though nobody could open it by name. */
        g_clear_pointer(&args, g_free);
        g_clear_pointer(&out, g_free);
        g_autofree char *copy2 = g_build_filename(pf->nobody_dir, "copy2.raw", NULL);
        args = g_strdup_printf("('%s', '%s', @a{sv} {'source-fd': <handle 0>, 'source-format': <'qcow2'>})", top,
                               copy2);
        out = bus_as_nobody(f, fd_top, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, DENIED);
        assert_contains(out, "was not passed");
        g_assert_false(g_file_test(copy2, G_FILE_TEST_EXISTS));

        /* A read-only descriptor for an image that stream must write: refused. */
        g_clear_pointer(&args, g_free);
        g_clear_pointer(&out, g_free);
        args = g_strdup_printf("('%s', @a{sv} {'image-fd': <handle 0>, 'chain-fds': <[handle 1]>})", top);
        out = bus_as_nobody(f, fd_top, fd_base, "call", MANAGER_PATH, MANAGER_IFACE, "Stream", args, NULL);
        bus_assert_answer(out, DENIED);
        assert_contains(out, "is not open for writing");

        /* Stream, read-write: the data moves up, and the chain still reads the same. */
        g_clear_pointer(&args, g_free);
        g_clear_pointer(&out, g_free);
        fd_top_rw = g_strdup_printf("--fd=rw:%s", top);
        args = g_strdup_printf("('%s', @a{sv} {'image-fd': <handle 0>, 'chain-fds': <[handle 1]>, "
                               "'job-id': <'stream-fd'>})", top);
        out = bus_as_nobody(f, fd_top_rw, fd_base, "call", MANAGER_PATH, MANAGER_IFACE, "Stream", args, NULL);
        bus_assert_answer(out, "ok");
        bus_wait_for_status(f, "stream-fd", "null");
        g_autofree char *info = NULL;
        g_autofree char *info_cmd = g_strdup_printf("qemu-img info %s", top);
        g_assert_true(g_spawn_command_line_sync(info_cmd, &info, NULL, &status, NULL));
        g_assert_null(strstr(info, "backing file:"));
        g_assert_true(g_spawn_command_line_sync(compare, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
}

/* Rules that let nobody manage other users' jobs too. */
static const char rules_others[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user == 'nobody' && action.id.indexOf('org.blockjobd.') == 0)\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

static char *nobody_get(PolkitFixture *pf, const char *id, const char *property) {
        g_autofree char *path = bus_job_path_for_id(&pf->bus, id);
        g_autofree char *args = g_strdup_printf("('" JOB_IFACE "', '%s')", property);
        return nobody_call(pf, false, path, "org.freedesktop.DBus.Properties", "Get", args);
}

/* Everyone sees every job, but another user's Source and Target only with manage-other-users;
 * the job's owner and root always. */
static void test_paths_hidden(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;
        g_autofree char *root_source = NULL, *mine_source = NULL, *out = NULL;

        if (!polkit_fixture_usable(pf))
                return;
        polkit_fixture_start(pf, rules_all);
        root_backup(pf, "r");
        root_source = g_build_filename(f->dir, "root.img", NULL);
        make_source(pf, "s.img", 8 * MiB);
        mine_source = g_build_filename(pf->nobody_dir, "s.img", NULL);
        g_autofree char *mine_target = g_build_filename(pf->nobody_dir, "t.img", NULL);
        nobody_backup(pf, mine_source, mine_target, "{'job-id': <'mine'>, 'speed': <uint64 1048576>}", "ok", NULL);

        out = nobody_get(pf, "r", "Source");
        g_assert_cmpstr(out, ==, "ok (<''>,)\n");
        g_free(out);
        out = nobody_get(pf, "r", "Target");
        g_assert_cmpstr(out, ==, "ok (<''>,)\n");
        g_free(out);
        out = nobody_get(pf, "r", "Status");
        g_assert_cmpstr(out, ==, "ok (<'running'>,)\n");
        g_free(out);
        out = nobody_get(pf, "mine", "Source");
        assert_contains(out, mine_source);
        g_free(out);
        out = nobody_call(pf, false, MANAGER_PATH "/job/r", "org.freedesktop.DBus.Properties", "GetAll",
                          "('" JOB_IFACE "',)");
        assert_contains(out, "'Source': <''>");
        assert_contains(out, "'Status': <'running'>");
        g_free(out);
        out = nobody_call(pf, false, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "()");
        assert_contains(out, mine_source);
        g_assert_null(strstr(out, root_source));
        g_free(out);

        /* Root sees everything. */
        g_autofree char *source = bus_get_string(f, MANAGER_PATH "/job/r", "Source");
        g_assert_cmpstr(source, ==, root_source);

        /* Allowed to manage other users' jobs, nobody sees their paths too. */
        polkit_fixture_stop(pf);
        polkit_fixture_start(pf, rules_others);
        out = nobody_get(pf, "r", "Source");
        assert_contains(out, root_source);
        g_free(out);
        out = nobody_call(pf, false, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "()");
        assert_contains(out, root_source);
}

/* While polkit thinks (here: is stopped), the daemon serves everyone else; the call waiting for
 * it is answered once polkit is back. */
static void test_checks_are_async(PolkitFixture *pf, gconstpointer data) {
        BusFixture *f = &pf->bus;
        g_autofree char *args = NULL, *out = NULL;
        g_autoptr(GSubprocess) waiting = NULL;

        if (!begin(pf, rules, MiB))
                return;
        args = backup_args(pf, "s.img", "t.img", "{'job-id': <'late'>}");

        g_assert_cmpint(kill(polkit_fixture_pid(pf), SIGSTOP), ==, 0);
        waiting = bus_as_nobody_start(f, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_iterate_for(f, 500 * 1000);

        /* Root's calls, and reads, are answered meanwhile. */
        root_backup(pf, "r");
        root_verb(f, "r", "Pause");
        bus_wait_for_status(f, "r", "paused");
        for (unsigned i = 0; i < 5; i++)
                g_variant_unref(bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, NULL));
        /* ...while nobody's is not: its job does not exist yet. */
        g_free(bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(s)", "late"),
                              "org.blockjobd.Jobs1.Error.NoSuchJob"));

        g_assert_cmpint(kill(polkit_fixture_pid(pf), SIGCONT), ==, 0);
        out = bus_as_nobody_finish(waiting);
        bus_assert_answer(out, "ok");
        bus_wait_for_status(f, "late", "null");
}

/* polkitd goes away: other callers are denied, saying why; root goes on; the daemon lives. */
static void test_polkit_gone(PolkitFixture *pf, gconstpointer data) {
        g_autofree char *args = NULL;

        if (!begin(pf, rules, MiB))
                return;
        args = backup_args(pf, "s.img", "t.img", NULL);
        polkit_fixture_stop(pf);

        g_autofree char *out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", args);
        bus_assert_answer(out, DENIED);
        g_assert_nonnull(strstr(out, "polkit is not available"));

        root_backup(pf, "r");
        root_verb(&pf->bus, "r", "Cancel");
        bus_wait_for_status(&pf->bus, "r", "concluded");
        g_variant_unref(bus_call(&pf->bus, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL));
}

/* A user may have so many jobs at once (here 1), root any number. */
static void test_job_limit(PolkitFixture *pf, gconstpointer data) {
        g_autofree char *first = NULL, *second = NULL, *out = NULL;

        if (!begin(pf, rules, 8 * MiB))
                return;
        first = backup_args(pf, "s.img", "t1.img", "{'speed': <uint64 1048576>}");
        second = backup_args(pf, "s.img", "t2.img", "{'speed': <uint64 1048576>}");

        out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", first);
        bus_assert_answer(out, "ok");
        g_free(out);
        out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Backup", second);
        bus_assert_answer(out, "org.blockjobd.Jobs1.Error.LimitExceeded: User 65534 has 1 jobs, and may have at most 1");

        root_backup(pf, "r1");
        root_backup(pf, "r2");
}

/* ---- persistent bitmaps ----------------------------------------------------------------------- */

/* A qcow2 image with bitmap "b", made by root and given to 'owner' with 'mode'. */
static char *make_qcow2(PolkitFixture *pf, const char *dir, const char *name, uid_t owner, mode_t mode) {
        char *p = g_build_filename(dir, name, NULL);
        g_autofree char *cmd = g_strdup_printf("sh -c 'qemu-img create -q -f qcow2 %s 1M && qemu-img bitmap --add %s b'", p, p);
        int status = -1;

        g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, &status, NULL));
        g_assert_cmpint(status, ==, 0);
        g_assert_cmpint(chown(p, owner, owner), ==, 0);
        g_assert_cmpint(g_chmod(p, mode), ==, 0);
        return p;
}

static char *qemu_img_info(const char *image) {
        g_autofree char *cmd = g_strdup_printf("qemu-img info -U %s", image);
        char *out = NULL;
        g_assert_true(g_spawn_command_line_sync(cmd, &out, NULL, NULL, NULL));
        return out;
}

/* Without rules, nobody may not change bitmaps, even of its own image (challenged, or denied
 * when it could authenticate); it may list those of an image it can read, with no polkit check
 * at all, and not those of one it cannot read (the opener says so). */
static void test_bitmaps_without_rules(PolkitFixture *pf, gconstpointer data) {
        if (!begin(pf, NULL, MiB))
                return;
        g_autofree char *own = make_qcow2(pf, pf->nobody_dir, "own.qcow2", 65534, 0600);
        g_autofree char *roots = make_qcow2(pf, pf->bus.dir, "root.qcow2", 0, 0600);
        g_autofree char *add = g_strdup_printf("('%s', 'c', @a{sv} {})", own);
        g_autofree char *remove = g_strdup_printf("('%s', 'b')", own);
        g_autofree char *merge = g_strdup_printf("('%s', 'b', ['b'])", own);
        g_autofree char *list_own = g_strdup_printf("('%s',)", own), *list_roots = g_strdup_printf("('%s',)", roots);

        polkit_fixture_watch_checks(pf);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "AddBitmap", add, INTERACTIVE);
        assert_nobody(pf, true, MANAGER_PATH, MANAGER_IFACE, "AddBitmap", add, DENIED);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "RemoveBitmap", remove, INTERACTIVE);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "ClearBitmap", remove, INTERACTIVE);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "EnableBitmap", remove, INTERACTIVE);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "DisableBitmap", remove, INTERACTIVE);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "MergeBitmaps", merge, INTERACTIVE);
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.bitmap.modify"), ==, 7);

        g_autofree char *out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", list_own);
        bus_assert_answer(out, "ok");
        assert_contains(out, "('b', uint32 65536, uint64 0, ['auto'])");
        g_free(out);
        out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", list_roots);
        bus_assert_answer(out, DENIED);
        assert_contains(out, "Permission denied");
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.bitmap.modify"), ==, 7);

        /* Nothing changed. */
        g_autofree char *info = qemu_img_info(own);
        assert_contains(info, "name: b");
        g_assert_null(strstr(info, "name: c"));
}

/* Rules that let nobody change bitmaps (matched by the details): polkit's yes does not give it
 * an image it may not write, which the opener refuses. */
static const char rules_bitmaps[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user == 'nobody' && action.id == 'org.blockjobd.bitmap.modify' &&\n"
        "            action.lookup('owner-uid') == '65534' && action.lookup('bitmap') == 'c' &&\n"
        "            ['AddBitmap', 'RemoveBitmap'].indexOf(action.lookup('operation')) >= 0 &&\n"
        "            action.lookup('image').indexOf('.qcow2') > 0)\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

static void test_bitmaps_with_rules(PolkitFixture *pf, gconstpointer data) {
        if (!begin(pf, rules_bitmaps, MiB))
                return;
        g_autofree char *own = make_qcow2(pf, pf->nobody_dir, "own.qcow2", 65534, 0600);
        g_autofree char *roots = make_qcow2(pf, pf->nobody_dir, "root.qcow2", 0, 0644);
        g_autofree char *add = g_strdup_printf("('%s', 'c', @a{sv} {'granularity': <uint32 4096>})", own);
        g_autofree char *add_roots = g_strdup_printf("('%s', 'c', @a{sv} {})", roots);
        g_autofree char *add_d = g_strdup_printf("('%s', 'd', @a{sv} {})", own);
        g_autofree char *clear = g_strdup_printf("('%s', 'c')", own);

        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "AddBitmap", add, "ok");
        g_autofree char *info = qemu_img_info(own);
        assert_contains(info, "name: c");
        assert_contains(info, "granularity: 4096");
        /* What the rules do not match is still challenged. */
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "AddBitmap", add_d, INTERACTIVE);
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "ClearBitmap", clear, INTERACTIVE);
        /* Allowed by polkit, but root's image is not nobody's to write. */
        g_autofree char *out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "AddBitmap", add_roots);
        bus_assert_answer(out, DENIED);
        assert_contains(out, "Permission denied");
        g_autofree char *root_info = qemu_img_info(roots);
        g_assert_null(strstr(root_info, "name: c"));
        assert_nobody(pf, false, MANAGER_PATH, MANAGER_IFACE, "RemoveBitmap", clear, "ok");
        g_free(info);
        info = qemu_img_info(own);
        g_assert_null(strstr(info, "name: c"));
}

/* A site that lets nobody back up but not change bitmaps: a backup that would write its source's
 * bitmap (cleared at finalize with on-success or always) needs bitmap.modify too, which is denied;
 * one that leaves the bitmap alone (never) does not. create.backup's rule reads the bitmap and
 * bitmap-mode details. */
static const char rules_backup_not_bitmaps[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user != 'nobody')\n"
        "                return polkit.Result.NOT_HANDLED;\n"
        "        if (action.id == 'org.blockjobd.bitmap.modify')\n"
        "                return polkit.Result.NO;\n"
        "        if (action.id == 'org.blockjobd.create.backup' && action.lookup('bitmap') == 'b' &&\n"
        "            ['on-success', 'never'].indexOf(action.lookup('bitmap-mode')) >= 0)\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

static void test_backup_bitmap_needs_bitmap_modify(PolkitFixture *pf, gconstpointer data) {
        if (!begin(pf, rules_backup_not_bitmaps, MiB))
                return;
        g_autofree char *own = make_qcow2(pf, pf->nobody_dir, "own.qcow2", 65534, 0600);
        g_autofree char *t1 = g_build_filename(pf->nobody_dir, "t1.img", NULL);
        g_autofree char *t2 = g_build_filename(pf->nobody_dir, "t2.img", NULL);
        g_autofree char *t3 = g_build_filename(pf->nobody_dir, "t3.img", NULL);
        g_autofree char *t4 = g_build_filename(pf->nobody_dir, "t4.img", NULL);

        polkit_fixture_watch_checks(pf);
        nobody_backup(pf, own, t1, "{'sync': <'bitmap'>, 'bitmap': <'b'>, 'bitmap-mode': <'on-success'>}", DENIED,
                      "org.blockjobd.bitmap.modify");
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.create.backup"), ==, 1);
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.bitmap.modify"), ==, 1);
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));

        /* incremental is on-success. */
        nobody_backup(pf, own, t2, "{'sync': <'incremental'>, 'bitmap': <'b'>}", DENIED, "org.blockjobd.bitmap.modify");
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));

        /* In a transaction: one member that writes the bitmap denies the whole. */
        g_autofree char *txn = g_strdup_printf(
                "([('backup', '%s', '%s', {'sync': <'bitmap'>, 'bitmap': <'b'>, 'bitmap-mode': <'never'>}), "
                "('backup', '%s', '%s', {'sync': <'bitmap'>, 'bitmap': <'b'>, 'bitmap-mode': <'on-success'>})], @a{sv} {})",
                own, t3, own, t4);
        g_autofree char *out = nobody_call(pf, false, MANAGER_PATH, MANAGER_IFACE, "Transaction", txn);
        bus_assert_answer(out, DENIED);
        assert_contains(out, "org.blockjobd.bitmap.modify");
        g_assert_false(g_file_test(t3, G_FILE_TEST_EXISTS) || g_file_test(t4, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.bitmap.modify"), ==, 3);

        /* never: the bitmap is read only, create.backup is enough. */
        nobody_backup(pf, own, t1, "{'sync': <'bitmap'>, 'bitmap': <'b'>, 'bitmap-mode': <'never'>}", "ok", NULL);
        g_assert_cmpuint(polkit_fixture_checks_seen(pf, "org.blockjobd.bitmap.modify"), ==, 3);

        /* The bitmap is still there. */
        g_autofree char *info = qemu_img_info(own);
        assert_contains(info, "name: b");
}

int main(int argc, char *argv[]) {
        int r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        /* A net for what the tests install (leftovers of a killed run go at each setup). */
        polkit_fixture_install_handlers(NULL);

        g_test_init(&argc, &argv, NULL);
        g_test_add("/polkit/root-needs-no-polkit", PolkitFixture, NULL, setup, test_root_needs_no_polkit, teardown);
        g_test_add("/polkit/bitmaps-without-rules", PolkitFixture, NULL, setup, test_bitmaps_without_rules, teardown);
        g_test_add("/polkit/bitmaps-with-rules", PolkitFixture, NULL, setup, test_bitmaps_with_rules, teardown);
        g_test_add("/polkit/backup-bitmap-needs-bitmap-modify", PolkitFixture, NULL, setup,
                   test_backup_bitmap_needs_bitmap_modify, teardown);
        g_test_add("/polkit/unprivileged-without-rules", PolkitFixture, NULL, setup, test_unprivileged_without_rules,
                   teardown);
        g_test_add("/polkit/unprivileged-with-rules", PolkitFixture, NULL, setup, test_unprivileged_with_rules, teardown);
        g_test_add("/polkit/files-as-caller", PolkitFixture, NULL, setup, test_files_as_caller, teardown);
        g_test_add("/polkit/fd-variants", PolkitFixture, NULL, setup, test_fd_variants, teardown);
        g_test_add("/polkit/paths-hidden", PolkitFixture, NULL, setup, test_paths_hidden, teardown);
        g_test_add("/polkit/checks-are-async", PolkitFixture, NULL, setup, test_checks_are_async, teardown);
        g_test_add("/polkit/polkit-gone", PolkitFixture, NULL, setup, test_polkit_gone, teardown);
        g_test_add("/polkit/job-limit", PolkitFixture, "--idle-timeout=0 --max-jobs-per-user=1", setup, test_job_limit,
                   teardown);
        return g_test_run();
}
