/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A non-root user's job across a kill -9 (issue 15): its record names the user, and after the
 * restart its files are opened again with the owner's rights, never root's: the job continues as
 * the owner, or, if it cannot, its unfinished target is removed through the target's directory
 * opened by blockjobd-opener as the owner (where the owner may not write the directory, the file
 * stays, and is removed at a later start, once the owner may again). Needs root, polkitd and
 * setpriv (polkit-fixture.h); skipped elsewhere. */

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
        bus_fixture_kill_daemon(b);
        g_string_truncate(b->statuses, 0);
}

/* A backup of nobody's, throttled, running with its record and its hidden target: the files it
 * names, as this test looks at them. */
typedef struct NobodyJob {
        uid_t uid;
        char *source, *target, *hidden, *record, *path;
} NobodyJob;

static void nobody_job_clear(NobodyJob *j) {
        g_free(j->source);
        g_free(j->target);
        g_free(j->hidden);
        g_free(j->record);
        g_free(j->path);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(NobodyJob, nobody_job_clear);

/* Starts nobody's job 'id' from the source s.img to t.img in nobody's directory; false where the
 * polkit fixture cannot run (the test is then skipped). */
static bool start_nobody_job(Fixture *f, const char *id, NobodyJob *j) {
        BusFixture *b = &f->pf.bus;
        struct passwd *pw;

        if (!polkit_fixture_usable(&f->pf))
                return false;
        pw = getpwnam("nobody");
        g_assert_nonnull(pw);
        j->uid = pw->pw_uid;
        polkit_fixture_start(&f->pf, rules_nobody);

        g_autofree char *hidden_name = g_strdup_printf(".t.img.blockjobd-%u-%s", (unsigned) j->uid, id);
        g_autofree char *record_name = g_strdup_printf("%u-%s.job", (unsigned) j->uid, id);
        j->source = g_build_filename(f->pf.nobody_dir, "s.img", NULL);
        j->target = g_build_filename(f->pf.nobody_dir, "t.img", NULL);
        j->hidden = g_build_filename(f->pf.nobody_dir, hidden_name, NULL);
        j->record = g_build_filename(f->state, "jobs", record_name, NULL);
        bus_make_file(j->source, 16 * MiB);
        g_assert_cmpint(g_chmod(j->source, 0644), ==, 0);

        g_autofree char *args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'%s'>, 'speed': <uint64 %" G_GUINT64_FORMAT ">})",
                                                j->source, j->target, id, (guint64) MiB);
        g_autofree char *out = bus_as_nobody(b, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        bus_assert_answer(out, "ok");
        j->path = bus_job_path_for_id(b, id);
        bus_wait_for_file_text(b, j->record, "\nSTATUS=running\n");
        return true;
}

/* Nobody dismisses the job; its record goes. */
static void dismiss_as_nobody(BusFixture *b, const NobodyJob *j) {
        g_autofree char *dismissed = bus_as_nobody(b, "call", j->path, JOB_IFACE, "Dismiss", "()", NULL);

        bus_assert_answer(dismissed, "ok");
        bus_wait_for_file_gone(b, j->record);
}

/* Nobody's job continues after a kill -9 with nobody's rights: its unfinished target, made by
 * the opener as nobody, is reopened as nobody, and what is published is nobody's and equal to the
 * source. */
static void test_owner(Fixture *f, gconstpointer data) {
        BusFixture *b = &f->pf.bus;
        g_auto(NobodyJob) j = { 0 };
        struct stat st;

        if (!start_nobody_job(f, "n", &j))
                return;
        g_assert_nonnull(strstr(j.path, "_u"));
        g_autofree char *owner_line = g_strdup_printf("\nOWNER=%u\n", (unsigned) j.uid);
        bus_wait_for_file_text(b, j.record, owner_line);
        /* The opener made it, as nobody. */
        g_assert_cmpint(lstat(j.hidden, &st), ==, 0);
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpuint(st.st_uid, ==, j.uid);

        kill_daemon(b);
        bus_fixture_start_daemon(b, f->args);
        g_autofree char *again = bus_job_path_for_id(b, "n");
        g_assert_cmpstr(again, ==, j.path);
        g_autofree char *status = bus_get_string(b, j.path, "Status");
        g_assert_cmpstr(status, ==, "running");
        g_autofree char *fast = bus_as_nobody(b, "call", j.path, JOB_IFACE, "SetSpeed", "(uint64 0,)", NULL);
        bus_assert_answer(fast, "ok");
        /* It succeeds, and goes (auto-dismiss), its record with it. */
        bus_wait_for_status(b, "n", "null");
        g_assert_false(g_file_test(j.hidden, G_FILE_TEST_EXISTS));
        g_assert_cmpint(lstat(j.target, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, j.uid);
        bus_assert_same_file(j.source, j.target);
        bus_wait_for_file_gone(b, j.record);
}

/* A job of nobody's that cannot continue (nobody may no longer read its source) has its
 * unfinished target removed through the target's directory opened with nobody's rights, never
 * root's: where nobody may not write the directory, the file stays, and a later start removes
 * it, once nobody may again. */
static void test_hidden_as_owner(Fixture *f, gconstpointer data) {
        BusFixture *b = &f->pf.bus;
        g_auto(NobodyJob) j = { 0 };

        if (!start_nobody_job(f, "h", &j))
                return;
        kill_daemon(b);
        g_assert_cmpint(g_chmod(j.source, 0600), ==, 0);
        g_assert_cmpint(g_chmod(f->pf.nobody_dir, 0555), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "h", "concluded");
        g_assert_true(g_file_test(j.hidden, G_FILE_TEST_IS_REGULAR));
        g_autofree char *log = NULL;
        g_assert_true(g_file_get_contents(b->daemon_log, &log, NULL, NULL));
        g_assert_nonnull(strstr(log, "Cannot remove the unfinished target"));

        bus_wait_for_file_text(b, j.record, "\nSTATUS=concluded\n");
        kill_daemon(b);
        g_assert_cmpint(g_chmod(f->pf.nobody_dir, 0755), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "h", "concluded");
        bus_wait_for_file_gone(b, j.hidden);
        g_assert_false(g_file_test(j.target, G_FILE_TEST_EXISTS));
        g_autofree char *error = bus_get_string(b, j.path, "Error");
        g_assert_nonnull(strstr(error, "cannot continue"));
        dismiss_as_nobody(b, &j);
}

/* The source is reopened after a restart with its owner's rights, not root's: a source nobody may
 * no longer read (root still may) fails nobody's job with the reason, and its hidden target goes. */
static void test_source_as_owner(Fixture *f, gconstpointer data) {
        BusFixture *b = &f->pf.bus;
        g_auto(NobodyJob) j = { 0 };

        if (!start_nobody_job(f, "u", &j))
                return;
        g_assert_true(g_file_test(j.hidden, G_FILE_TEST_IS_REGULAR));

        kill_daemon(b);
        /* Root's file: root may read it, nobody no longer. Its identity is unchanged (chmod moves
         * only the change time, which the message must not blame: the open fails first). */
        g_assert_cmpint(g_chmod(j.source, 0600), ==, 0);
        bus_fixture_start_daemon(b, f->args);
        bus_wait_for_status(b, "u", "concluded");
        g_autofree char *error = bus_get_string(b, j.path, "Error");
        g_test_message("%s", error);
        g_autofree char *want = g_strdup_printf("The job cannot continue after blockjobd was restarted (its files "
                                                "were opened again with the rights of its owner, uid %u): ",
                                                (unsigned) j.uid);
        g_assert_nonnull(strstr(error, want));
        g_assert_nonnull(strstr(error, j.source));
        g_assert_nonnull(strstr(error, "Permission denied"));
        g_assert_false(g_file_test(j.hidden, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(j.target, G_FILE_TEST_EXISTS));

        dismiss_as_nobody(b, &j);
}

int main(int argc, char *argv[]) {
        int r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        polkit_fixture_install_handlers(NULL);
        g_test_init(&argc, &argv, NULL);
        g_test_add("/persist-owner/continues-as-owner", Fixture, NULL, setup, test_owner, teardown);
        g_test_add("/persist-owner/hidden-target-as-owner", Fixture, NULL, setup, test_hidden_as_owner, teardown);
        g_test_add("/persist-owner/source-as-owner", Fixture, NULL, setup, test_source_as_owner, teardown);
        return g_test_run();
}
