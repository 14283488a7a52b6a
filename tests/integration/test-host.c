/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobd as a systemd host's citizen (issue 11): the logind inhibitor lock it holds while jobs
 * run, against a fake logind in this process, and what a job creation answers when the daemon
 * runs out of descriptors. */

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bus-fixture.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)
#define WAIT_USEC (10 * G_USEC_PER_SEC)

#define LOGIND_NAME "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"

/* ---- a fake logind ------------------------------------------------------------------------------ */

/* One Inhibit() call: its arguments, and the write end of the pipe whose read end went to the
 * caller. With our own read end closed, the write end polls POLLERR once the caller closed its
 * copy: the lock is released. */
typedef struct FakeLock {
        char *what, *who, *why, *mode;
        int write_fd;
} FakeLock;

typedef struct FakeLogind {
        GPtrArray *locks;
        guint registration;
} FakeLogind;

static void fake_lock_free(gpointer p) {
        FakeLock *l = p;
        g_free(l->what);
        g_free(l->who);
        g_free(l->why);
        g_free(l->mode);
        if (l->write_fd >= 0)
                close(l->write_fd);
        g_free(l);
}

static bool fake_lock_held(const FakeLock *l) {
        struct pollfd p = { .fd = l->write_fd, .events = POLLOUT };

        g_assert_cmpint(poll(&p, 1, 0), >=, 0);
        return !(p.revents & (POLLERR | POLLHUP));
}

static void on_logind_call(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                           const char *method, GVariant *params, GDBusMethodInvocation *invocation,
                           gpointer userdata) {
        FakeLogind *fake = userdata;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GError) error = NULL;
        FakeLock *l;
        int p[2];

        g_assert_cmpstr(method, ==, "Inhibit");
        l = g_new0(FakeLock, 1);
        g_variant_get(params, "(ssss)", &l->what, &l->who, &l->why, &l->mode);
        g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
        g_assert_cmpint(g_unix_fd_list_append(fds, p[0], &error), ==, 0);
        g_assert_no_error(error);
        close(p[0]);            /* the list holds its own copy, until the reply is sent */
        l->write_fd = p[1];
        g_ptr_array_add(fake->locks, l);
        g_dbus_method_invocation_return_value_with_unix_fd_list(invocation, g_variant_new("(h)", 0), fds);
}

static const char logind_xml[] =
        "<node>"
        "  <interface name='org.freedesktop.login1.Manager'>"
        "    <method name='Inhibit'>"
        "      <arg type='s' name='what' direction='in'/>"
        "      <arg type='s' name='who' direction='in'/>"
        "      <arg type='s' name='why' direction='in'/>"
        "      <arg type='s' name='mode' direction='in'/>"
        "      <arg type='h' name='pipe_fd' direction='out'/>"
        "    </method>"
        "  </interface>"
        "</node>";

static const GDBusInterfaceVTable logind_vtable = { .method_call = on_logind_call };

static void fake_logind_start(BusFixture *f, FakeLogind *fake) {
        g_autoptr(GDBusNodeInfo) info = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint32 result;

        fake->locks = g_ptr_array_new_with_free_func(fake_lock_free);
        info = g_dbus_node_info_new_for_xml(logind_xml, &error);
        g_assert_no_error(error);
        fake->registration = g_dbus_connection_register_object(f->conn, LOGIND_PATH, info->interfaces[0],
                                                               &logind_vtable, fake, NULL, &error);
        g_assert_no_error(error);
        reply = g_dbus_connection_call_sync(f->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "RequestName",
                                            g_variant_new("(su)", LOGIND_NAME, 0), G_VARIANT_TYPE("(u)"),
                                            G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(u)", &result);
        g_assert_cmpuint(result, ==, 1);        /* DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER */
}

static void fake_logind_stop(BusFixture *f, FakeLogind *fake) {
        g_dbus_connection_unregister_object(f->conn, fake->registration);
        g_ptr_array_unref(fake->locks);
}

static unsigned n_held(FakeLogind *fake) {
        unsigned n = 0;
        for (guint i = 0; i < fake->locks->len; i++)
                n += fake_lock_held(fake->locks->pdata[i]);
        return n;
}

static FakeLock *last_lock(FakeLogind *fake) {
        g_assert_cmpuint(fake->locks->len, >, 0);
        return fake->locks->pdata[fake->locks->len - 1];
}

/* Iterates until the condition holds, WAIT_USEC at most. */
#define WAIT_FOR(f, cond, what)                                                 \
        do {                                                                    \
                gint64 _end = g_get_monotonic_time() + WAIT_USEC;               \
                while (!(cond)) {                                               \
                        if (g_get_monotonic_time() > _end)                      \
                                g_error("timed out waiting for %s", what);      \
                        bus_iterate_for((f), 10000);                            \
                }                                                               \
        } while (0)

/* ---- jobs ------------------------------------------------------------------------------------- */

/* A backup that stays running until told otherwise: 64 MiB at 1 MiB/s. */
static char *start_slow_backup(BusFixture *f, const char *id) {
        g_autofree char *source = bus_fixture_path(f, "source.img");
        g_autofree char *name = g_strdup_printf("%s.img", id);
        g_autofree char *target = bus_fixture_path(f, name);

        if (!g_file_test(source, G_FILE_TEST_EXISTS))
                bus_make_file(source, 64 * MiB);
        return bus_backup(f, source, target,
                          bus_opts("job-id", g_variant_new_string(id), "speed", g_variant_new_uint64(1 * MiB), NULL));
}

static void test_inhibit_one_job(BusFixture *f, gconstpointer data) {
        FakeLogind fake = {};
        g_autofree char *path = NULL;
        FakeLock *l;
        gsize mark;

        fake_logind_start(f, &fake);
        path = start_slow_backup(f, "nightly");
        bus_wait_for_status(f, "nightly", "running");
        WAIT_FOR(f, n_held(&fake) == 1, "the lock");
        l = last_lock(&fake);
        g_assert_cmpstr(l->what, ==, "sleep:shutdown");
        g_assert_cmpstr(l->who, ==, "blockjobd");
        g_assert_cmpstr(l->mode, ==, "block");
        g_assert_cmpstr(l->why, ==, "1 job running: nightly (backup)");

        /* Running on: no second call. */
        bus_iterate_for(f, 1200000);
        g_assert_cmpuint(fake.locks->len, ==, 1);

        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, "nightly", "paused");
        WAIT_FOR(f, n_held(&fake) == 0, "the lock to be released on pause");

        mark = f->statuses->len;
        bus_job_call(f, path, "Resume");
        bus_wait_for_status_since(f, mark, "nightly", "running");
        WAIT_FOR(f, n_held(&fake) == 1, "the lock to be taken again on resume");
        g_assert_cmpuint(fake.locks->len, ==, 2);
        g_assert_cmpstr(last_lock(&fake)->why, ==, "1 job running: nightly (backup)");

        /* Unlimited: it finishes, and the lock goes with it. */
        bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(f, "nightly", "null");
        WAIT_FOR(f, n_held(&fake) == 0, "the lock to be released when the job concluded");
        g_assert_cmpuint(fake.locks->len, ==, 2);

        fake_logind_stop(f, &fake);
}

static void test_inhibit_two_jobs(BusFixture *f, gconstpointer data) {
        FakeLogind fake = {};
        g_autofree char *a = NULL, *b = NULL;

        fake_logind_start(f, &fake);
        a = start_slow_backup(f, "first");
        bus_wait_for_status(f, "first", "running");
        WAIT_FOR(f, n_held(&fake) == 1, "the lock");
        b = start_slow_backup(f, "second");
        bus_wait_for_status(f, "second", "running");

        /* Within a second or so: a new lock naming both, and only that one. */
        WAIT_FOR(f, n_held(&fake) == 1 && strstr(last_lock(&fake)->why, "2 jobs running: ") &&
                            strstr(last_lock(&fake)->why, "first (backup)") &&
                            strstr(last_lock(&fake)->why, "second (backup)"),
                 "one lock naming both jobs");
        g_assert_true(fake_lock_held(last_lock(&fake)));

        /* One goes: the Why names the other alone, the lock stays held throughout. */
        bus_job_call(f, a, "Cancel");
        bus_wait_for_status(f, "first", "null");
        WAIT_FOR(f, n_held(&fake) == 1 && g_str_equal(last_lock(&fake)->why, "1 job running: second (backup)"),
                 "the Why to name the second job alone");

        bus_job_call(f, b, "Cancel");
        bus_wait_for_status(f, "second", "null");
        WAIT_FOR(f, n_held(&fake) == 0, "the lock to be released");

        fake_logind_stop(f, &fake);
}

static unsigned count_in_log(BusFixture *f, const char *needle) {
        g_autofree char *log = NULL;
        unsigned n = 0;

        g_assert_true(g_file_get_contents(f->daemon_log, &log, NULL, NULL));
        for (const char *p = log; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void test_no_logind(BusFixture *f, gconstpointer data) {
        static const char notice[] = "<5>logind not available, sleep and shutdown are not inhibited while jobs run: ";
        g_autofree char *path = NULL;
        gsize mark;

        path = start_slow_backup(f, "nightly");
        bus_wait_for_status(f, "nightly", "running");
        WAIT_FOR(f, count_in_log(f, notice) == 1, "the notice");

        /* Tried again at the next first active job, silently. */
        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, "nightly", "paused");
        mark = f->statuses->len;
        bus_job_call(f, path, "Resume");
        bus_wait_for_status_since(f, mark, "nightly", "running");
        bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(f, "nightly", "null");
        g_assert_cmpuint(count_in_log(f, notice), ==, 1);
}

/* ---- running out of descriptors ---------------------------------------------------------------- */

#define NOFILE_LIMIT 48

static void limit_child_setup(gpointer userdata) {
        struct rlimit rl = { NOFILE_LIMIT, NOFILE_LIMIT };

        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

/* The daemon with a hard limit it cannot raise (as bus_fixture_start_daemon() does otherwise). */
static void setup_low_nofile(BusFixture *f, gconstpointer data) {
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
        g_autoptr(GError) error = NULL;

        bus_fixture_init(f);
        bus_fixture_start_bus(f, NULL);
        f->daemon_log = bus_fixture_path(f, "daemon.log");
        g_subprocess_launcher_set_child_setup(launcher, limit_child_setup, NULL, NULL);
        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", f->address, TRUE);
        g_subprocess_launcher_set_stderr_file_path(launcher, f->daemon_log);
        f->daemon = g_subprocess_launcher_spawn(launcher, &error, g_getenv("BLOCKJOBD"), "--idle-timeout=0",
                                                "--log-level=debug", NULL);
        g_assert_no_error(error);
        bus_wait_for_name(f, true);
}

static GVariant *try_backup(BusFixture *f, const char *id, GError **error) {
        g_autofree char *source = bus_fixture_path(f, "source.img");
        g_autofree char *name = g_strdup_printf("%s.img", id);
        g_autofree char *target = bus_fixture_path(f, name);

        return g_dbus_connection_call_sync(f->conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Backup",
                                           g_variant_new("(ss@a{sv})", source, target,
                                                         bus_opts("job-id", g_variant_new_string(id), "speed",
                                                                  g_variant_new_uint64(1 * MiB), NULL)),
                                           G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, 30000, NULL, error);
}

static void test_limit_nofile(BusFixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *source = bus_fixture_path(f, "source.img");
        g_autofree char *last = NULL, *name = NULL;
        g_autoptr(GError) error = NULL;

        bus_make_file(source, 64 * MiB);

        /* Jobs until one fails: each holds its source, its target and its directory. */
        for (unsigned i = 0; i < NOFILE_LIMIT; i++) {
                g_autofree char *id = g_strdup_printf("job%u", i);
                g_autoptr(GVariant) reply = try_backup(f, id, &error);
                char *path;

                if (!reply)
                        break;
                g_variant_get(reply, "(o)", &path);
                g_ptr_array_add(paths, path);
                bus_wait_for_status(f, id, "running");
        }
        g_assert_nonnull(error);
        g_assert_cmpuint(paths->len, >, 0);
        name = g_dbus_error_get_remote_error(error);
        g_assert_cmpstr(name, ==, "org.blockjobd.Jobs1.Error.LimitExceeded");
        g_dbus_error_strip_remote_error(error);
        g_test_message("job %u: %s", paths->len, error->message);
        g_assert_nonnull(strstr(error->message, "file descriptors"));

        /* The others run on, and cancel cleanly. */
        for (guint i = 0; i < paths->len; i++) {
                g_autofree char *id = g_strdup_printf("job%u", i);
                g_autofree char *status = bus_get_string(f, paths->pdata[i], "Status");
                g_assert_cmpstr(status, ==, "running");
                bus_job_call(f, paths->pdata[i], "Cancel");
                bus_wait_for_status(f, id, "null");
        }

        /* With them gone, there is room again. */
        g_clear_error(&error);
        g_autoptr(GVariant) reply = try_backup(f, "again", &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(o)", &last);
        bus_wait_for_status(f, "again", "running");
        bus_call(f, last, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(f, "again", "null");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);

        g_test_add("/host/inhibit/one-job", BusFixture, NULL, bus_fixture_setup, test_inhibit_one_job,
                   bus_fixture_teardown);
        g_test_add("/host/inhibit/two-jobs", BusFixture, NULL, bus_fixture_setup, test_inhibit_two_jobs,
                   bus_fixture_teardown);
        g_test_add("/host/inhibit/no-logind", BusFixture, NULL, bus_fixture_setup, test_no_logind,
                   bus_fixture_teardown);
        g_test_add("/host/limits/nofile", BusFixture, NULL, setup_low_nofile, test_limit_nofile,
                   bus_fixture_teardown);

        return g_test_run();
}
