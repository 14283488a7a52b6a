/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "polkit-fixture.h"

#define ACTIONS_FILE "/usr/share/polkit-1/actions/org.blockjobd-test.policy"
#define RULES_FILE "/etc/polkit-1/rules.d/10-blockjobd-test.rules"
#define LOCK_NAME "blockjobd-polkit-tests.lock"
/* Another run's test holds the files for one test at a time, which takes seconds. */
#define LOCK_WAIT_MAX_USEC (600 * G_USEC_PER_SEC)

/* ---- what the test installs, removed whatever happens ---------------------------------------- */

static int lock_fd = -1;
static volatile sig_atomic_t holding_lock;
static volatile pid_t polkitd_pid;
static void (*abort_extra)(void);

static void remove_installed(void) {
        (void) unlink(ACTIONS_FILE);
        (void) unlink(RULES_FILE);
}

static void on_fatal_signal(int sig) {
        /* Only what is safe in a signal handler: unlink and kill. Another run's files are left
         * alone: they are ours only while we hold the lock. */
        if (abort_extra)
                abort_extra();
        if (holding_lock)
                remove_installed();
        if (polkitd_pid > 0)
                (void) kill(polkitd_pid, SIGKILL);
        signal(sig, SIG_DFL);
        raise(sig);
}

void polkit_fixture_install_handlers(void (*extra)(void)) {
        static const int signals[] = { SIGABRT, SIGTRAP, SIGALRM, SIGTERM, SIGINT, SIGSEGV };

        abort_extra = extra;
        for (size_t i = 0; i < G_N_ELEMENTS(signals); i++)
                signal(signals[i], on_fatal_signal);
}

static const char *lock_path(void) {
        return g_file_test("/run/lock", G_FILE_TEST_IS_DIR) ? "/run/lock/" LOCK_NAME : "/tmp/" LOCK_NAME;
}

/* The machine-wide turn of this test: bounded, and said on stderr when it has to wait. */
static void lock_take(void) {
        gint64 end = g_get_monotonic_time() + LOCK_WAIT_MAX_USEC;
        bool said = false;

        g_assert_cmpint(lock_fd, <, 0);
        /* O_CLOEXEC: a child that inherited it (polkitd, the daemon) would hold the lock on. */
        lock_fd = open(lock_path(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (lock_fd < 0)
                g_error("could not open %s: %s", lock_path(), g_strerror(errno));
        while (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK && errno != EINTR)
                        g_error("could not lock %s: %s", lock_path(), g_strerror(errno));
                if (!said) {
                        g_printerr("# waiting for %s: another polkit test is running\n", lock_path());
                        said = true;
                }
                if (g_get_monotonic_time() > end)
                        g_error("another polkit test held %s for too long", lock_path());
                g_usleep(50 * 1000);
        }
        holding_lock = 1;
        /* Leftovers of a run that was killed (SIGKILL leaves no time to clean up). */
        remove_installed();
}

static void lock_release(void) {
        if (lock_fd < 0)
                return;
        remove_installed();
        holding_lock = 0;
        (void) close(lock_fd);
        lock_fd = -1;
}

void polkit_fixture_remove_leftovers(void) {
        if (!polkit_fixture_available())
                return;
        lock_take();
        lock_release();
}

static void install_actions(void) {
        g_autofree char *text = NULL;
        const char *policy = g_getenv("POLKIT_POLICY");
        gsize len;

        if (!policy)
                g_error("$POLKIT_POLICY is not set: run this test through meson");
        g_assert_true(g_file_get_contents(policy, &text, &len, NULL));
        g_assert_true(g_file_set_contents(ACTIONS_FILE, text, (gssize) len, NULL));
}

/* ---- polkitd ----------------------------------------------------------------------------------- */

bool polkit_fixture_available(void) {
        return geteuid() == 0 && g_file_test(POLKITD, G_FILE_TEST_IS_EXECUTABLE);
}

bool polkit_fixture_running(BusFixture *f) {
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(f->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                                "org.freedesktop.DBus", "NameHasOwner",
                                                                g_variant_new("(s)", "org.freedesktop.PolicyKit1"),
                                                                G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, 10000,
                                                                NULL, NULL);
        gboolean owned = FALSE;
        if (reply)
                g_variant_get(reply, "(b)", &owned);
        return owned;
}

void polkit_fixture_start(PolkitFixture *pf, const char *rules) {
        BusFixture *f = &pf->bus;
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                                                            G_SUBPROCESS_FLAGS_STDERR_SILENCE);
        g_autoptr(GError) error = NULL;

        g_assert_true(holding_lock);
        g_assert_null(pf->polkitd);
        if (rules)
                g_assert_true(g_file_set_contents(RULES_FILE, rules, -1, NULL));
        else
                (void) unlink(RULES_FILE);

        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", f->address, TRUE);
        pf->polkitd = g_subprocess_launcher_spawn(launcher, &error, POLKITD, "--no-debug", NULL);
        g_assert_no_error(error);
        polkitd_pid = atoi(g_subprocess_get_identifier(pf->polkitd));
        for (unsigned i = 0; !polkit_fixture_running(f); i++) {
                if (i > 1500)
                        g_error("polkitd did not come up");
                bus_iterate_for(f, 20000);
        }
}

void polkit_fixture_stop(PolkitFixture *pf) {
        if (!pf->polkitd)
                return;
        g_subprocess_force_exit(pf->polkitd);
        g_subprocess_wait(pf->polkitd, NULL, NULL);
        g_clear_object(&pf->polkitd);
        polkitd_pid = 0;
        for (unsigned i = 0; polkit_fixture_running(&pf->bus) && i < 300; i++)
                bus_iterate_for(&pf->bus, 20000);
}

pid_t polkit_fixture_pid(PolkitFixture *pf) {
        g_assert_nonnull(pf->polkitd);
        return polkitd_pid;
}

/* ---- watching the checks ----------------------------------------------------------------------- */

static GMutex checks_lock;
static GHashTable *checks_seen;         /* action id → count, as GUINT_TO_POINTER */

/* Runs on GDBus's worker thread. A monitor may not send anything, so the monitored calls are
 * taken here before GDBus would answer them ("no such object"); the reply to BecomeMonitor goes
 * through. */
static GDBusMessage *monitor_filter(GDBusConnection *c, GDBusMessage *m, gboolean incoming, gpointer userdata) {
        GDBusMessageType type = g_dbus_message_get_message_type(m);
        GVariant *body;

        if (!incoming || (type != G_DBUS_MESSAGE_TYPE_METHOD_CALL && type != G_DBUS_MESSAGE_TYPE_SIGNAL))
                return m;
        body = g_dbus_message_get_body(m);
        if (type == G_DBUS_MESSAGE_TYPE_METHOD_CALL &&
            g_strcmp0(g_dbus_message_get_member(m), "CheckAuthorization") == 0 && body &&
            g_variant_is_of_type(body, G_VARIANT_TYPE("((sa{sv})sa{ss}us)"))) {
                g_autoptr(GVariant) action = g_variant_get_child_value(body, 1);
                const char *id = g_variant_get_string(action, NULL);

                g_mutex_lock(&checks_lock);
                g_hash_table_insert(checks_seen, g_strdup(id),
                                    GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(checks_seen, id)) + 1));
                g_mutex_unlock(&checks_lock);
        }
        g_object_unref(m);
        return NULL;
}

void polkit_fixture_watch_checks(PolkitFixture *pf) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        const char *rules[] = { "type='method_call',interface='org.freedesktop.PolicyKit1.Authority',"
                                "member='CheckAuthorization'",
                                NULL };

        g_assert_null(pf->monitor);
        g_mutex_lock(&checks_lock);
        if (!checks_seen)
                checks_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_hash_table_remove_all(checks_seen);
        g_mutex_unlock(&checks_lock);

        pf->monitor = g_dbus_connection_new_for_address_sync(pf->bus.address,
                                                             G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                                     G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                             NULL, NULL, &error);
        g_assert_no_error(error);
        pf->monitor_filter = g_dbus_connection_add_filter(pf->monitor, monitor_filter, pf, NULL);
        reply = g_dbus_connection_call_sync(pf->monitor, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus.Monitoring", "BecomeMonitor",
                                            g_variant_new("(^asu)", rules, 0), NULL, G_DBUS_CALL_FLAGS_NONE, 10000,
                                            NULL, &error);
        g_assert_no_error(error);
}

unsigned polkit_fixture_checks_seen(PolkitFixture *pf, const char *action_id) {
        unsigned n;

        g_assert_nonnull(pf->monitor);
        g_mutex_lock(&checks_lock);
        n = GPOINTER_TO_UINT(g_hash_table_lookup(checks_seen, action_id));
        g_mutex_unlock(&checks_lock);
        return n;
}

static void stop_watching(PolkitFixture *pf) {
        if (!pf->monitor)
                return;
        (void) g_dbus_connection_close_sync(pf->monitor, NULL, NULL);
        g_dbus_connection_remove_filter(pf->monitor, pf->monitor_filter);
        g_clear_object(&pf->monitor);
}

/* ---- setup and teardown ------------------------------------------------------------------------ */

void polkit_fixture_setup(PolkitFixture *pf, const char *daemon_args) {
        BusFixture *f = &pf->bus;

        memset(pf, 0, sizeof(*pf));
        if (!polkit_fixture_available())
                return;
        lock_take();
        install_actions();
        bus_fixture_init(f);
        g_assert_cmpint(g_chmod(f->dir, 0755), ==, 0);
        pf->nobody_dir = bus_fixture_path(f, "nobody");
        g_assert_cmpint(g_mkdir(pf->nobody_dir, 0755), ==, 0);
        g_assert_cmpint(chown(pf->nobody_dir, 65534, 65534), ==, 0);
        bus_fixture_start_bus(f, NULL);
        bus_fixture_start_daemon(f, daemon_args ?: "--idle-timeout=0");
}

void polkit_fixture_teardown(PolkitFixture *pf) {
        if (!pf->bus.dir)
                return;
        stop_watching(pf);
        polkit_fixture_stop(pf);
        bus_fixture_teardown(&pf->bus, NULL);
        g_clear_pointer(&pf->nobody_dir, g_free);
        lock_release();
}

bool polkit_fixture_usable(PolkitFixture *pf) {
        if (!pf->bus.dir) {
                g_test_skip("needs root and polkitd");
                return false;
        }
        return bus_can_run_as_nobody();
}
