/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The shipped bus policy (dbus/org.blockjobd.Jobs1.conf), on a private system bus with the
 * defaults of Debian's system bus instead of the allow-everything policy of the other tests:
 * only root may own the name; anyone may call the documented interfaces, and nothing else. The
 * unprivileged client is real: this program runs itself again as nobody (setpriv), which needs
 * root; elsewhere the tests are skipped. */

#include <glib/gstdio.h>

#include "bus-fixture.h"

#define DENIED "org.freedesktop.DBus.Error.AccessDenied:"

static void setup(BusFixture *f, gconstpointer data) {
        bus_fixture_init(f);
        /* The socket must be reachable by nobody. */
        g_assert_cmpint(g_chmod(f->dir, 0755), ==, 0);
        f->policy_file = g_getenv("POLICY_CONF");
        g_assert_nonnull(f->policy_file);
        bus_fixture_start_bus(f, NULL);
}

static void test_only_root_owns(BusFixture *f, gconstpointer data) {
        g_autofree char *own = NULL;

        if (!bus_can_run_as_nobody())
                return;

        /* nobody is refused by the bus itself. */
        own = bus_as_nobody(f, "own", NULL);
        bus_assert_answer(own, DENIED);
        g_assert_false(bus_name_has_owner(f));

        /* root (the daemon) gets it. */
        bus_fixture_start_daemon(f, "--idle-timeout=0");
        g_assert_true(bus_name_has_owner(f));
}

/* The client's answer to a call as nobody. */
static void assert_call(BusFixture *f, const char *interface, const char *method, const char *args, const char *expected) {
        g_autofree char *out = bus_as_nobody(f, "call", MANAGER_PATH, interface, method, args, NULL);
        bus_assert_answer(out, expected);
}

static void test_anyone_calls_the_api(BusFixture *f, gconstpointer data) {
        if (!bus_can_run_as_nobody())
                return;
        bus_fixture_start_daemon(f, "--idle-timeout=0");

        /* The documented interfaces and the read-only standard ones. */
        assert_call(f, MANAGER_IFACE, "ListJobs", "()", "ok");
        assert_call(f, "org.freedesktop.DBus.Introspectable", "Introspect", "()", "ok");
        assert_call(f, "org.freedesktop.DBus.Peer", "Ping", "()", "ok");
        assert_call(f, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "()", "ok");
        assert_call(f, "org.freedesktop.DBus.Properties", "Get", "('" MANAGER_IFACE "', 'Version')", "ok");

        /* Nothing else gets through the bus: not writing properties, not other interfaces. */
        assert_call(f, "org.freedesktop.DBus.Properties", "Set", "('" MANAGER_IFACE "', 'Jobs', <uint32 1>)", DENIED);
        assert_call(f, "org.example.Undocumented", "Frobnicate", "()", DENIED);
}

int main(int argc, char *argv[]) {
        int r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        g_test_init(&argc, &argv, NULL);
        g_test_add("/bus-policy/only-root-owns-the-name", BusFixture, NULL, setup, test_only_root_owns,
                   bus_fixture_teardown);
        g_test_add("/bus-policy/anyone-calls-the-api", BusFixture, NULL, setup, test_anyone_calls_the_api,
                   bus_fixture_teardown);
        return g_test_run();
}
