/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A non-root user's job across a kill -9 (issue 15): its record names the user, and after the
 * restart its unfinished target is removed through the target's directory opened by
 * blockjobd-opener with the owner's rights, never root's: where the owner may not write the
 * directory, the file stays (and is removed at a later start, once the owner may again). Needs
 * root, polkitd and setpriv (polkit-fixture.h); skipped elsewhere. */

#include <glib/gstdio.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "polkit-fixture.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

static const char rules_nobody[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (subject.user == 'nobody' && action.id.indexOf('org.blockjobd.') == 0)\n"
        "                return polkit.Result.YES;\n"
        "        return polkit.Result.NOT_HANDLED;\n"
        "});\n";

typedef struct Fixture {
        PolkitFixture pf;
        char *state;
        char *args;
} Fixture;

static void setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->state = g_dir_make_tmp("blockjobd-state-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_chmod(f->state, 0700), ==, 0);
        f->args = g_strdup_printf("--idle-timeout=0 --state-dir=%s", f->state);
        polkit_fixture_setup(&f->pf, f->args);
}

static void remove_tree(const char *dir) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, name, NULL);
                if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
                        remove_tree(p);
                else
                        (void) g_unlink(p);
        }
        (void) g_rmdir(dir);
}

static void teardown(Fixture *f, gconstpointer data) {
        polkit_fixture_teardown(&f->pf);
        remove_tree(f->state);
        g_free(f->state);
        g_free(f->args);
}

static void kill_daemon(BusFixture *b) {
        g_subprocess_force_exit(b->daemon);
        g_assert_true(g_subprocess_wait(b->daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(b->daemon));
        g_clear_object(&b->daemon);
        bus_wait_for_name(b, false);
        g_string_truncate(b->statuses, 0);
}

static void wait_for_record(BusFixture *b, const char *path, const char *line) {
        for (unsigned i = 0;; i++) {
                g_autofree char *text = NULL;
                g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
                if (strstr(text, line))
                        return;
                g_assert_cmpuint(i, <, 3000);
                bus_iterate_for(b, 10 * 1000);
        }
}

static void test_owner(Fixture *f, gconstpointer data) {
        BusFixture *b = &f->pf.bus;
        struct passwd *pw;
        struct stat st;

        if (!polkit_fixture_usable(&f->pf))
                return;
        pw = getpwnam("nobody");
        g_assert_nonnull(pw);
        uid_t uid = pw->pw_uid;
        polkit_fixture_start(&f->pf, rules_nobody);

        g_autofree char *source = g_build_filename(f->pf.nobody_dir, "s.img", NULL);
        g_autofree char *target = g_build_filename(f->pf.nobody_dir, "t.img", NULL);
        g_autofree char *hidden_name = g_strdup_printf(".t.img.blockjobd-%u-n", (unsigned) uid);
        g_autofree char *hidden = g_build_filename(f->pf.nobody_dir, hidden_name, NULL);
        g_autofree char *record_name = g_strdup_printf("%u-n.job", (unsigned) uid);
        g_autofree char *record = g_build_filename(f->state, "jobs", record_name, NULL);
        bus_make_file(source, 16 * MiB);
        g_assert_cmpint(g_chmod(source, 0644), ==, 0);

        g_autofree char *args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'n'>, 'speed': <uint64 %" G_GUINT64_FORMAT ">})",
                                                source, target, (guint64) MiB);
        g_autofree char *out = bus_as_nobody(b, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, "ok");
        g_autofree char *path = bus_job_path_for_id(b, "n");
        g_assert_nonnull(strstr(path, "_u"));
        wait_for_record(b, record, "\nSTATUS=running\n");
        g_autofree char *owner_line = g_strdup_printf("\nOWNER=%u\n", (unsigned) uid);
        wait_for_record(b, record, owner_line);
        /* The opener made it, as nobody. */
        g_assert_cmpint(lstat(hidden, &st), ==, 0);
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpuint(st.st_uid, ==, uid);

        /* Nobody may no longer write the directory: root could remove the file, the owner cannot,
         * so it stays. */
        kill_daemon(b);
        g_assert_cmpint(g_chmod(f->pf.nobody_dir, 0555), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "n", "concluded");
        g_autofree char *again = bus_job_path_for_id(b, "n");
        g_assert_cmpstr(again, ==, path);
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        g_autofree char *log = NULL;
        g_assert_true(g_file_get_contents(b->daemon_log, &log, NULL, NULL));
        g_assert_nonnull(strstr(log, "Cannot remove the unfinished target"));

        /* Once the owner may again, the next start removes it: the job is back concluded at once
         * (it was recorded so), and the removal it still owes is retried, in the background. */
        wait_for_record(b, record, "\nSTATUS=concluded\n");
        kill_daemon(b);
        g_assert_cmpint(g_chmod(f->pf.nobody_dir, 0755), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "n", "concluded");
        for (unsigned i = 0; i < 3000 && g_file_test(hidden, G_FILE_TEST_EXISTS); i++)
                bus_iterate_for(b, 10 * 1000);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        g_autofree char *error = bus_get_string(b, path, "Error");
        g_assert_nonnull(strstr(error, "blockjobd stopped while the job was running"));

        /* The owner dismisses it; the record goes. */
        g_autofree char *dismissed = bus_as_nobody(b, "call", path, JOB_IFACE, "Dismiss", "()", NULL);
        bus_assert_answer(dismissed, "ok");
        for (unsigned i = 0; i < 3000 && g_file_test(record, G_FILE_TEST_EXISTS); i++)
                bus_iterate_for(b, 10 * 1000);
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
}

/* The source is reopened after a restart with its owner's rights, not root's: a source nobody may
 * no longer read (root still may) fails nobody's job with the reason, and its hidden target goes. */
static void test_source_as_owner(Fixture *f, gconstpointer data) {
        BusFixture *b = &f->pf.bus;
        struct passwd *pw;

        if (!polkit_fixture_usable(&f->pf))
                return;
        pw = getpwnam("nobody");
        g_assert_nonnull(pw);
        uid_t uid = pw->pw_uid;
        polkit_fixture_start(&f->pf, rules_nobody);

        g_autofree char *source = g_build_filename(f->pf.nobody_dir, "s.img", NULL);
        g_autofree char *target = g_build_filename(f->pf.nobody_dir, "t.img", NULL);
        g_autofree char *hidden_name = g_strdup_printf(".t.img.blockjobd-%u-u", (unsigned) uid);
        g_autofree char *hidden = g_build_filename(f->pf.nobody_dir, hidden_name, NULL);
        g_autofree char *record_name = g_strdup_printf("%u-u.job", (unsigned) uid);
        g_autofree char *record = g_build_filename(f->state, "jobs", record_name, NULL);
        bus_make_file(source, 16 * MiB);
        g_assert_cmpint(g_chmod(source, 0644), ==, 0);

        g_autofree char *args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'u'>, 'speed': <uint64 %" G_GUINT64_FORMAT ">})",
                                                source, target, (guint64) MiB);
        g_autofree char *out = bus_as_nobody(b, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, "ok");
        g_autofree char *path = bus_job_path_for_id(b, "u");
        wait_for_record(b, record, "\nSTATUS=running\n");
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));

        kill_daemon(b);
        /* Root's file: root may read it, nobody no longer. Its identity is unchanged (chmod moves
         * only the change time, which the message must not blame: the open fails first). */
        g_assert_cmpint(g_chmod(source, 0600), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "u", "concluded");
        g_autofree char *error = bus_get_string(b, path, "Error");
        g_test_message("%s", error);
        g_autofree char *want = g_strdup_printf("The job's files cannot be opened again with the rights of its owner "
                                                "(uid %u) after blockjobd was restarted, so the job cannot continue: ",
                                                (unsigned) uid);
        g_assert_nonnull(strstr(error, want));
        g_assert_nonnull(strstr(error, source));
        g_assert_nonnull(strstr(error, "Permission denied"));
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        g_autofree char *dismissed = bus_as_nobody(b, "call", path, JOB_IFACE, "Dismiss", "()", NULL);
        bus_assert_answer(dismissed, "ok");
        for (unsigned i = 0; i < 3000 && g_file_test(record, G_FILE_TEST_EXISTS); i++)
                bus_iterate_for(b, 10 * 1000);
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
}

int main(int argc, char *argv[]) {
        int r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        polkit_fixture_install_handlers(NULL);
        g_test_init(&argc, &argv, NULL);
        g_test_add("/persist-owner/hidden-target-as-owner", Fixture, NULL, setup, test_owner, teardown);
        g_test_add("/persist-owner/source-as-owner", Fixture, NULL, setup, test_source_as_owner, teardown);
        return g_test_run();
}
