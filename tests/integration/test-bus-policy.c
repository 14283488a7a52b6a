/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The shipped bus policy (dbus/org.blockjobd.Jobs1.conf), on a private system bus with the
 * defaults of Debian's system bus instead of the allow-everything policy of the other tests:
 * only root may own the name; anyone may call the documented interfaces, and nothing else. The
 * unprivileged client is real: this program runs itself again as nobody (setpriv), which needs
 * root; elsewhere the tests are skipped. */

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "bus-fixture.h"

#define EXIT_DENIED 3
#define EXIT_OTHER_ERROR 4

/* ---- the client, run as nobody ---------------------------------------------------------------- */

static int exit_for(GError *error) {
        g_autofree char *name = NULL;

        if (!error)
                return 0;
        name = g_dbus_error_get_remote_error(error);
        g_printerr("%s\n", error->message);
        return g_strcmp0(name, "org.freedesktop.DBus.Error.AccessDenied") == 0 ? EXIT_DENIED : EXIT_OTHER_ERROR;
}

/* --client ADDRESS own | --client ADDRESS call PATH INTERFACE METHOD */
static int client_main(int argc, char *argv[]) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;

        if (argc < 4)
                return 2;
        conn = g_dbus_connection_new_for_address_sync(argv[2],
                                                      G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                              G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                      NULL, NULL, &error);
        if (!conn)
                return exit_for(error);

        if (g_str_equal(argv[3], "own"))
                reply = g_dbus_connection_call_sync(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                    "org.freedesktop.DBus", "RequestName",
                                                    g_variant_new("(su)", BUS_NAME, 4 /* do not queue */),
                                                    G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        else if (g_str_equal(argv[3], "call") && argc == 7)
                reply = g_dbus_connection_call_sync(conn, BUS_NAME, argv[4], argv[5], argv[6],
                                                    g_str_equal(argv[6], "Set") ?
                                                            g_variant_new("(ssv)", MANAGER_IFACE, "Jobs", g_variant_new_uint32(1)) :
                                                            NULL,
                                                    NULL, G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        else
                return 2;
        return exit_for(error);
}

/* ---- the tests ------------------------------------------------------------------------------- */

/* Runs this program as nobody with these client arguments; returns its exit status. */
static int as_nobody(BusFixture *f, const char *first, ...) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        g_autofree char *copy = bus_fixture_path(f, "client"), *err = NULL;
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        va_list ap;

        /* A copy in the test's directory, which nobody can reach wherever the build tree is. */
        if (!g_file_test(copy, G_FILE_TEST_EXISTS)) {
                g_autoptr(GFile) from = g_file_new_for_path(self);
                g_autoptr(GFile) to = g_file_new_for_path(copy);
                g_assert_true(g_file_copy(from, to, G_FILE_COPY_NONE, NULL, NULL, NULL, &error));
                g_assert_cmpint(g_chmod(copy, 0755), ==, 0);
        }
        g_ptr_array_add(argv, g_strdup("setpriv"));
        g_ptr_array_add(argv, g_strdup("--reuid=nobody"));
        g_ptr_array_add(argv, g_strdup("--regid=nogroup"));
        g_ptr_array_add(argv, g_strdup("--clear-groups"));
        g_ptr_array_add(argv, g_strdup(copy));
        g_ptr_array_add(argv, g_strdup("--client"));
        g_ptr_array_add(argv, g_strdup(f->address));
        va_start(ap, first);
        for (const char *a = first; a; a = va_arg(ap, const char *))
                g_ptr_array_add(argv, g_strdup(a));
        va_end(ap);
        g_ptr_array_add(argv, NULL);

        /* In a coverage build the copy would try to write its counts into the build tree. */
        g_autofree char *counts = bus_fixture_path(f, "gcov");
        g_assert_cmpint(g_mkdir_with_parents(counts, 0777), ==, 0);
        g_assert_cmpint(g_chmod(counts, 0777), ==, 0);
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_subprocess_launcher_setenv(launcher, "GCOV_PREFIX", counts, TRUE);
        p = g_subprocess_launcher_spawnv(launcher, (const char *const *) argv->pdata, &error);
        g_assert_no_error(error);
        g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, NULL, &err, &error));
        g_assert_true(g_subprocess_get_if_exited(p));
        if (*err)
                g_test_message("client said: %s", err);
        return g_subprocess_get_exit_status(p);
}

static bool can_switch_users(void) {
        if (geteuid() != 0) {
                g_test_skip("needs root to run a client as nobody");
                return false;
        }
        return true;
}

static void setup(BusFixture *f, gconstpointer data) {
        bus_fixture_init(f);
        /* The socket must be reachable by nobody. */
        g_assert_cmpint(g_chmod(f->dir, 0755), ==, 0);
        f->policy_file = g_getenv("POLICY_CONF");
        g_assert_nonnull(f->policy_file);
        bus_fixture_start_bus(f, NULL);
}

static void test_only_root_owns(BusFixture *f, gconstpointer data) {
        if (!can_switch_users())
                return;

        /* nobody is refused by the bus itself. */
        g_assert_cmpint(as_nobody(f, "own", NULL), ==, EXIT_DENIED);
        g_assert_false(bus_name_has_owner(f));

        /* root (the daemon) gets it. */
        bus_fixture_start_daemon(f, "--idle-timeout=0");
        g_assert_true(bus_name_has_owner(f));
}

static void test_anyone_calls_the_api(BusFixture *f, gconstpointer data) {
        if (!can_switch_users())
                return;
        bus_fixture_start_daemon(f, "--idle-timeout=0");

        /* The documented interfaces and the read-only standard ones. */
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL), ==, 0);
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, "org.freedesktop.DBus.Introspectable", "Introspect", NULL), ==, 0);
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL), ==, 0);
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL),
                        ==, 0);

        /* Nothing else gets through the bus: not writing properties, not other interfaces. */
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, "org.freedesktop.DBus.Properties", "Set", NULL), ==,
                        EXIT_DENIED);
        g_assert_cmpint(as_nobody(f, "call", MANAGER_PATH, "org.example.Undocumented", "Frobnicate", NULL), ==,
                        EXIT_DENIED);
}

int main(int argc, char *argv[]) {
        if (argc > 1 && g_str_equal(argv[1], "--client"))
                return client_main(argc, argv);

        g_test_init(&argc, &argv, NULL);
        g_test_add("/bus-policy/only-root-owns-the-name", BusFixture, NULL, setup, test_only_root_owns,
                   bus_fixture_teardown);
        g_test_add("/bus-policy/anyone-calls-the-api", BusFixture, NULL, setup, test_anyone_calls_the_api,
                   bus_fixture_teardown);
        return g_test_run();
}
