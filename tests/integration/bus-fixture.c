/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>
#include <linux/falloc.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "bus-fixture.h"

#define WAIT_MAX_USEC (30 * G_USEC_PER_SEC)

static const char *env_or_fail(const char *name) {
        const char *v = g_getenv(name);
        if (!v)
                g_error("$%s is not set: run this test through meson", name);
        return v;
}

char *bus_fixture_path(BusFixture *f, const char *name) {
        return g_build_filename(f->dir, name, NULL);
}

/* ---- signals ---------------------------------------------------------------------------------- */

static void on_status_changed(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                              const char *signal, GVariant *params, gpointer userdata) {
        BusFixture *f = userdata;
        const char *id, *status;

        g_variant_get(params, "(&s&s)", &id, &status);
        g_string_append_printf(f->statuses, "%s:%s ", id, status);
}

static void on_io_error(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                        const char *signal, GVariant *params, gpointer userdata) {
        BusFixture *f = userdata;
        const char *operation, *action, *message;

        g_variant_get(params, "(&s&s&s)", &operation, &action, &message);
        g_string_append_printf(f->io_errors, "%s:%s ", operation, action);
        g_string_append_printf(f->io_messages, "%s\n", message);
}

static void on_properties_changed(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                                  const char *signal, GVariant *params, gpointer userdata) {
        BusFixture *f = userdata;
        g_autoptr(GVariant) changed = NULL, value = NULL;
        const char *interface;

        g_variant_get(params, "(&s@a{sv}@as)", &interface, &changed, NULL);
        if (!g_str_equal(interface, JOB_IFACE))
                return;
        value = g_variant_lookup_value(changed, "CurrentProgress", G_VARIANT_TYPE_UINT64);
        if (value) {
                gint64 now = g_get_monotonic_time();
                g_array_append_val(f->progress_times, now);
        }
}

static void on_interfaces_added(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                                const char *signal, GVariant *params, gpointer userdata) {
        ((BusFixture *) userdata)->n_added++;
}

static void on_interfaces_removed(GDBusConnection *c, const char *sender, const char *path, const char *iface,
                                  const char *signal, GVariant *params, gpointer userdata) {
        ((BusFixture *) userdata)->n_removed++;
}

static void subscribe(BusFixture *f) {
        f->subscriptions[0] = g_dbus_connection_signal_subscribe(f->conn, NULL, JOB_IFACE, "StatusChanged", NULL, NULL,
                                                                 G_DBUS_SIGNAL_FLAGS_NONE, on_status_changed, f, NULL);
        f->subscriptions[1] = g_dbus_connection_signal_subscribe(f->conn, NULL, JOB_IFACE, "IoError", NULL, NULL,
                                                                 G_DBUS_SIGNAL_FLAGS_NONE, on_io_error, f, NULL);
        f->subscriptions[2] = g_dbus_connection_signal_subscribe(f->conn, NULL, "org.freedesktop.DBus.Properties",
                                                                 "PropertiesChanged", NULL, JOB_IFACE,
                                                                 G_DBUS_SIGNAL_FLAGS_NONE, on_properties_changed, f,
                                                                 NULL);
        f->subscriptions[3] = g_dbus_connection_signal_subscribe(f->conn, NULL, "org.freedesktop.DBus.ObjectManager",
                                                                 "InterfacesAdded", MANAGER_PATH, NULL,
                                                                 G_DBUS_SIGNAL_FLAGS_NONE, on_interfaces_added, f, NULL);
        f->subscriptions[4] = g_dbus_connection_signal_subscribe(f->conn, NULL, "org.freedesktop.DBus.ObjectManager",
                                                                 "InterfacesRemoved", MANAGER_PATH, NULL,
                                                                 G_DBUS_SIGNAL_FLAGS_NONE, on_interfaces_removed, f,
                                                                 NULL);
}

/* ---- the bus and the daemon ---------------------------------------------------------------- */

/* Children die with the test, even when it aborts before its teardown. */
static void die_with_parent(gpointer userdata) {
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
}

static GSubprocessLauncher *launcher_new(GSubprocessFlags flags) {
        GSubprocessLauncher *l = g_subprocess_launcher_new(flags);
        g_subprocess_launcher_set_child_setup(l, die_with_parent, NULL, NULL);
        return l;
}

/* A bus of type system that lets everything through: most tests are about the daemon, not
 * the bus policy. */
static const char allow_all_policy[] =
        "  <policy context=\"default\">\n"
        "    <allow user=\"*\"/>\n"
        "    <allow own=\"*\"/>\n"
        "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
        "    <allow receive_sender=\"*\"/>\n"
        "  </policy>\n";

/* The defaults of Debian's system bus (/usr/share/dbus-1/system.conf), and the given policy file
 * on top, as a package would install it into system.d. */
static char *system_policy(const char *policy_file) {
        return g_strdup_printf(
                "  <policy context=\"default\">\n"
                "    <allow user=\"*\"/>\n"
                "    <deny own=\"*\"/>\n"
                "    <deny send_type=\"method_call\"/>\n"
                "    <allow send_type=\"signal\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
                "    <allow receive_type=\"method_call\"/>\n"
                "    <allow receive_type=\"method_return\"/>\n"
                "    <allow receive_type=\"error\"/>\n"
                "    <allow receive_type=\"signal\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus.Properties\"/>\n"
                "    <deny send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\" send_member=\"UpdateActivationEnvironment\"/>\n"
                "    <deny send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus.Debug.Stats\"/>\n"
                "    <deny send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.systemd1.Activator\"/>\n"
                "  </policy>\n"
                "  <include>%s</include>\n",
                policy_file);
}

void bus_fixture_start_bus(BusFixture *f, const char *activation_args) {
        g_autoptr(GError) error = NULL;
        g_autofree char *services = bus_fixture_path(f, "services");
        g_autofree char *socket = bus_fixture_path(f, "bus");
        g_autofree char *config_path = bus_fixture_path(f, "bus.conf");
        g_autofree char *config = NULL, *line = NULL, *policy = NULL;
        g_autoptr(GDataInputStream) out = NULL;

        g_assert_cmpint(g_mkdir_with_parents(services, 0755), ==, 0);
        policy = f->policy_file ? system_policy(f->policy_file) : g_strdup(allow_all_policy);
        config = g_strdup_printf(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>system</type>\n"
                "  <listen>unix:path=%s</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <servicedir>%s</servicedir>\n"
                "%s"
                "</busconfig>\n",
                socket, services, policy);
        g_assert_true(g_file_set_contents(config_path, config, -1, NULL));

        if (activation_args) {
                g_autofree char *file = g_build_filename(services, "org.blockjobd.Jobs1.service", NULL);
                g_autofree char *log = bus_fixture_path(f, "daemon.log");
                g_autofree char *text = g_strdup_printf("[D-BUS Service]\nName=%s\n"
                                                        "Exec=/bin/sh -c 'exec %s %s 2>>%s'\nUser=root\n",
                                                        BUS_NAME, env_or_fail("BLOCKJOBD"), activation_args, log);
                g_assert_true(g_file_set_contents(file, text, -1, NULL));
        }

        g_autoptr(GSubprocessLauncher) launcher = launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                                               G_SUBPROCESS_FLAGS_STDERR_SILENCE);
        f->bus = g_subprocess_launcher_spawn(launcher, &error, "dbus-daemon", "--config-file", config_path, "--nofork",
                                             "--nosyslog", "--print-address=1", NULL);
        g_assert_no_error(error);
        out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(f->bus));
        line = g_data_input_stream_read_line(out, NULL, NULL, &error);
        g_assert_no_error(error);
        g_assert_nonnull(line);
        f->address = g_strdup(g_strstrip(line));

        f->conn = g_dbus_connection_new_for_address_sync(f->address,
                                                         G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                                 G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                         NULL, NULL, &error);
        g_assert_no_error(error);
        subscribe(f);
}

void bus_fixture_start_daemon(BusFixture *f, const char *args) {
        g_autoptr(GSubprocessLauncher) launcher = launcher_new(G_SUBPROCESS_FLAGS_NONE);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) argv = NULL;
        g_autofree char *cmdline = g_strdup_printf("%s %s", env_or_fail("BLOCKJOBD"), args ?: "");

        g_assert_true(g_shell_parse_argv(cmdline, NULL, &argv, NULL));
        g_free(f->daemon_log);
        f->daemon_log = bus_fixture_path(f, "daemon.log");
        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", f->address, TRUE);
        /* Only the test daemon (blockjobd-faulty) reads it. */
        g_subprocess_launcher_setenv(launcher, "BLOCKJOBD_FAULT_RULES", f->fault_rules, TRUE);
        g_subprocess_launcher_set_stderr_file_path(launcher, f->daemon_log);
        f->daemon = g_subprocess_launcher_spawnv(launcher, (const char *const *) argv, &error);
        g_assert_no_error(error);
        bus_wait_for_name(f, true);
}

void bus_fixture_init(BusFixture *f) {
        g_autoptr(GError) error = NULL;

        memset(f, 0, sizeof(*f));
        f->dir = g_dir_make_tmp("blockjobd-bus-XXXXXX", &error);
        g_assert_no_error(error);
        f->fault_rules = bus_fixture_path(f, "fault-rules");
        f->statuses = g_string_new(NULL);
        f->io_errors = g_string_new(NULL);
        f->io_messages = g_string_new(NULL);
        f->progress_times = g_array_new(FALSE, FALSE, sizeof(gint64));
}

void bus_fixture_setup(BusFixture *f, gconstpointer data) {
        bus_fixture_init(f);
        bus_fixture_start_bus(f, NULL);
        bus_fixture_start_daemon(f, data ?: "--idle-timeout=0");
}

static void remove_tree(const char *dir) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, name, NULL);
                if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
                        remove_tree(p);
                else
                        g_unlink(p);
        }
        g_rmdir(dir);
}

static void dump_daemon_log(BusFixture *f) {
        g_autofree char *log = NULL, *path = bus_fixture_path(f, "daemon.log");
        if (g_file_get_contents(path, &log, NULL, NULL) && *log)
                g_test_message("blockjobd said:\n%s", log);
}
void bus_fixture_teardown(BusFixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        if (f->daemon) {
                /* A clean stop: every job cancelled, everything freed, exit status 0. */
                g_subprocess_send_signal(f->daemon, SIGTERM);
                g_assert_true(g_subprocess_wait(f->daemon, NULL, &error));
                g_assert_no_error(error);
                if (!g_subprocess_get_if_exited(f->daemon) || g_subprocess_get_exit_status(f->daemon) != 0) {
                        dump_daemon_log(f);
                        g_error("blockjobd did not exit cleanly");
                }
                g_clear_object(&f->daemon);
        }

        for (unsigned i = 0; i < G_N_ELEMENTS(f->subscriptions); i++)
                if (f->subscriptions[i])
                        g_dbus_connection_signal_unsubscribe(f->conn, f->subscriptions[i]);
        if (f->conn)
                g_dbus_connection_close_sync(f->conn, NULL, NULL);
        g_clear_object(&f->conn);

        if (f->bus) {
                g_subprocess_send_signal(f->bus, SIGTERM);
                g_subprocess_wait(f->bus, NULL, NULL);
                g_clear_object(&f->bus);
        }

        if (g_test_failed())
                dump_daemon_log(f);

        remove_tree(f->dir);
        g_free(f->dir);
        g_free(f->address);
        g_free(f->daemon_log);
        g_free(f->fault_rules);
        g_string_free(f->statuses, TRUE);
        g_string_free(f->io_errors, TRUE);
        g_string_free(f->io_messages, TRUE);
        g_array_free(f->progress_times, TRUE);
}

/* ---- calls ---------------------------------------------------------------------------------- */

static GVariant *call_raw(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                          const char *reply_type, GError **error) {
        return g_dbus_connection_call_sync(f->conn, BUS_NAME, path, iface, method, params,
                                           reply_type ? G_VARIANT_TYPE(reply_type) : NULL,
                                           G_DBUS_CALL_FLAGS_NONE, 30000, NULL, error);
}

GVariant *bus_call(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                   const char *reply_type) {
        g_autoptr(GError) error = NULL;
        GVariant *v = call_raw(f, path, iface, method, params, reply_type, &error);
        if (error)
                g_error("%s.%s on %s failed: %s", iface, method, path, error->message);
        return v;
}

char *bus_call_error(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                     const char *expected_error) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = call_raw(f, path, iface, method, params, NULL, &error);
        g_autofree char *name = NULL;

        if (!error)
                g_error("%s.%s on %s succeeded, expected %s", iface, method, path, expected_error);
        name = g_dbus_error_get_remote_error(error);
        if (g_strcmp0(name, expected_error) != 0)
                g_error("%s.%s on %s failed with %s (%s), expected %s", iface, method, path, name, error->message,
                        expected_error);
        g_dbus_error_strip_remote_error(error);
        return g_strdup(error->message);
}

GVariant *bus_get_property(BusFixture *f, const char *path, const char *iface, const char *name) {
        g_autoptr(GVariant) reply = bus_call(f, path, "org.freedesktop.DBus.Properties", "Get",
                                             g_variant_new("(ss)", iface, name), "(v)");
        GVariant *v;
        g_variant_get(reply, "(v)", &v);
        return v;
}

char *bus_get_string(BusFixture *f, const char *path, const char *name) {
        g_autoptr(GVariant) v = bus_get_property(f, path, JOB_IFACE, name);
        return g_variant_dup_string(v, NULL);
}

guint64 bus_get_uint64(BusFixture *f, const char *path, const char *name) {
        g_autoptr(GVariant) v = bus_get_property(f, path, JOB_IFACE, name);
        return g_variant_get_uint64(v);
}

char *bus_start(BusFixture *f, const char *method, const char *source, const char *target, GVariant *options) {
        g_autoptr(GVariant) reply = NULL;
        GVariant *params;
        char *path;

        if (!options)
                options = g_variant_new("a{sv}", NULL);
        if (target)
                params = g_variant_new("(ss@a{sv})", source, target, options);
        else
                params = g_variant_new("(s@a{sv})", source, options);
        reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, method, params, "(o)");
        g_variant_get(reply, "(o)", &path);
        return path;
}

char *bus_backup(BusFixture *f, const char *source, const char *target, GVariant *options) {
        return bus_start(f, "Backup", source, target, options);
}

char **bus_transaction_grouped(BusFixture *f, GVariant *actions) {
        g_autoptr(GVariant) reply = NULL;
        char **paths = NULL;

        reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                         g_variant_new("(@a(sssa{sv})@a{sv})", actions,
                                       bus_opts("completion-mode", g_variant_new_string("grouped"), NULL)),
                         "(ao)");
        g_variant_get(reply, "(^ao)", &paths);
        return paths;
}

GVariant *bus_opts(const char *key, ...) {
        GVariantBuilder b;
        va_list ap;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        va_start(ap, key);
        for (; key; key = va_arg(ap, const char *))
                g_variant_builder_add(&b, "{sv}", key, va_arg(ap, GVariant *));
        va_end(ap);
        return g_variant_builder_end(&b);
}

void bus_job_call(BusFixture *f, const char *path, const char *method) {
        g_autoptr(GVariant) v = bus_call(f, path, JOB_IFACE, method, NULL, NULL);
}

/* ---- waiting -------------------------------------------------------------------------------- */

static gboolean on_wait_timeout(gpointer userdata) {
        *(bool *) userdata = true;
        return G_SOURCE_REMOVE;
}

void bus_iterate_for(BusFixture *f, guint64 usec) {
        bool done = false;
        guint id = g_timeout_add(usec / 1000, on_wait_timeout, &done);
        while (!done)
                g_main_context_iteration(NULL, TRUE);
        (void) id;
}

#define WAIT_UNTIL(f, cond, what)                                                                       \
        do {                                                                                            \
                gint64 _end = g_get_monotonic_time() + WAIT_MAX_USEC;                                   \
                while (!(cond)) {                                                                       \
                        if (g_get_monotonic_time() > _end) {                                            \
                                dump_daemon_log(f);                                                     \
                                g_error("timed out waiting for %s", what);                              \
                        }                                                                               \
                        bus_iterate_for(f, 10 * 1000);                                                  \
                }                                                                                       \
        } while (0)

void bus_wait_for_status(BusFixture *f, const char *id, const char *status) {
        g_autofree char *word = g_strdup_printf("%s:%s ", id, status);
        g_autofree char *what = g_strdup_printf("job '%s' to become %s (seen: %s)", id, status, f->statuses->str);

        WAIT_UNTIL(f, strstr(f->statuses->str, word), what);
}

void bus_wait_for_status_since(BusFixture *f, gsize mark, const char *id, const char *status) {
        g_autofree char *word = g_strdup_printf("%s:%s ", id, status);
        g_autofree char *what = g_strdup_printf("job '%s' to become %s again (seen: %s)", id, status, f->statuses->str);

        g_assert_cmpuint(mark, <=, f->statuses->len);
        WAIT_UNTIL(f, strstr(f->statuses->str + mark, word), what);
}

bool bus_name_has_owner(BusFixture *f) {
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(f->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                                "org.freedesktop.DBus", "NameHasOwner",
                                                                g_variant_new("(s)", BUS_NAME), G_VARIANT_TYPE("(b)"),
                                                                G_DBUS_CALL_FLAGS_NONE, 10000, NULL, NULL);
        gboolean owned = FALSE;
        if (reply)
                g_variant_get(reply, "(b)", &owned);
        return owned;
}

void bus_fixture_kill_daemon(BusFixture *f) {
        g_subprocess_force_exit(f->daemon);
        g_assert_true(g_subprocess_wait(f->daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(f->daemon));
        g_clear_object(&f->daemon);
        bus_wait_for_name(f, false);
}

void bus_fixture_term_daemon(BusFixture *f) {
        g_subprocess_send_signal(f->daemon, SIGTERM);
        g_assert_true(g_subprocess_wait(f->daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_exited(f->daemon));
        g_assert_cmpint(g_subprocess_get_exit_status(f->daemon), ==, 0);
        g_clear_object(&f->daemon);
        bus_wait_for_name(f, false);
}

void bus_wait_for_file_text(BusFixture *f, const char *path, const char *text) {
        for (unsigned i = 0;; i++) {
                g_autofree char *content = NULL;
                g_assert_true(g_file_get_contents(path, &content, NULL, NULL));
                if (strstr(content, text))
                        return;
                if (i >= 6000)
                        g_error("%s never held '%s':\n%s", path, text, content);
                bus_iterate_for(f, 10 * 1000);
        }
}

void bus_wait_for_file_gone(BusFixture *f, const char *path) {
        for (unsigned i = 0; i < 3000 && g_file_test(path, G_FILE_TEST_EXISTS); i++)
                bus_iterate_for(f, 10 * 1000);
        g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
}

void bus_wait_for_name(BusFixture *f, bool owned) {
        WAIT_UNTIL(f, bus_name_has_owner(f) == owned, owned ? "blockjobd to own its name" : "blockjobd to go");
}

/* ---- unprivileged callers ------------------------------------------------------------------- */

/* Turns the 4 KiB block at 'offset' into data, then into a hole, and again, as fast as it can,
 * for so many seconds. */
static int client_toggle(const char *path, guint64 offset, double seconds) {
        gint64 end = g_get_monotonic_time() + (gint64) (seconds * G_USEC_PER_SEC);
        guint8 block[4096];
        guint64 n = 0;
        int fd;

        memset(block, 0xa5, sizeof(block));
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                g_print("(local): cannot open %s: %s\n", path, g_strerror(errno));
                return 1;
        }
        while (g_get_monotonic_time() < end) {
                if (pwrite(fd, block, sizeof(block), (off_t) offset) != (ssize_t) sizeof(block) ||
                    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, sizeof(block)) < 0) {
                        g_print("(local): cannot toggle %s: %s\n", path, g_strerror(errno));
                        return 1;
                }
                n++;
        }
        close(fd);
        g_print("ok toggled %" G_GUINT64_FORMAT " times\n", n);
        return 0;
}

/* Makes the symlink at 'path' point to 'a', then to 'b', and again, each time replaced at once
 * (rename), as fast as it can, for so many seconds. */
static int client_flip_link(const char *path, const char *a, const char *b, double seconds) {
        gint64 end = g_get_monotonic_time() + (gint64) (seconds * G_USEC_PER_SEC);
        g_autofree char *tmp = g_strdup_printf("%s.flip%d", path, (int) getpid());
        guint64 n = 0;

        while (g_get_monotonic_time() < end) {
                const char *to = n % 2 ? b : a;
                (void) unlink(tmp);
                if (symlink(to, tmp) < 0 || rename(tmp, path) < 0) {
                        g_print("(local): cannot flip %s: %s\n", path, g_strerror(errno));
                        return 1;
                }
                n++;
        }
        g_print("ok flipped %" G_GUINT64_FORMAT " times\n", n);
        return 0;
}

int bus_client_main(int argc, char *argv[]) {
        g_autoptr(GDBusConnection) conn = NULL;
        g_autoptr(GVariant) reply = NULL, args = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        GDBusCallFlags flags = G_DBUS_CALL_FLAGS_NONE;
        int i = 3;

        if (argc < 2 || !g_str_equal(argv[1], "--client"))
                return -1;
        if (argc < 4)
                return 2;
        for (; i < argc && g_str_has_prefix(argv[i], "--"); i++) {
                int fd = -1;

                if (g_str_equal(argv[i], "--interactive"))
                        flags |= G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION;
                else if (g_str_has_prefix(argv[i], "--fd=r:"))
                        fd = open(argv[i] + 7, O_RDONLY | O_CLOEXEC);
                else if (g_str_has_prefix(argv[i], "--fd=rw:"))
                        fd = open(argv[i] + 8, O_RDWR | O_CLOEXEC);
                else if (g_str_has_prefix(argv[i], "--fd=new:"))
                        fd = open(argv[i] + 9, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                else if (g_str_has_prefix(argv[i], "--fd=rwa:"))
                        fd = open(argv[i] + 9, O_RDWR | O_APPEND | O_CLOEXEC);
                else
                        return 2;
                if (!g_str_equal(argv[i], "--interactive")) {
                        if (fd < 0) {
                                g_print("(local): cannot open %s: %s\n", strchr(argv[i], ':') + 1, g_strerror(errno));
                                return 1;
                        }
                        g_unix_fd_list_append(fds, fd, NULL);
                        close(fd);
                }
        }

        if (i + 5 == argc && g_str_equal(argv[i], "flip-link"))
                return client_flip_link(argv[i + 1], argv[i + 2], argv[i + 3], g_ascii_strtod(argv[i + 4], NULL));
        if (i + 4 == argc && g_str_equal(argv[i], "toggle"))
                return client_toggle(argv[i + 1], g_ascii_strtoull(argv[i + 2], NULL, 10),
                                     g_ascii_strtod(argv[i + 3], NULL));

        conn = g_dbus_connection_new_for_address_sync(argv[2],
                                                      G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                              G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                      NULL, NULL, &error);
        if (conn && i < argc && g_str_equal(argv[i], "own"))
                reply = g_dbus_connection_call_sync(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                    "org.freedesktop.DBus", "RequestName",
                                                    g_variant_new("(su)", BUS_NAME, 4 /* do not queue */),
                                                    G_VARIANT_TYPE("(u)"), flags, 10000, NULL, &error);
        else if (conn && i + 5 == argc && g_str_equal(argv[i], "call")) {
                args = g_variant_parse(NULL, argv[i + 4], NULL, NULL, &error);
                if (args)
                        reply = g_dbus_connection_call_with_unix_fd_list_sync(conn, BUS_NAME, argv[i + 1], argv[i + 2],
                                                                              argv[i + 3], g_variant_ref(args), NULL,
                                                                              flags, 30000, fds, NULL, NULL, &error);
        } else if (conn)
                return 2;

        if (error) {
                g_autofree char *name = g_dbus_error_get_remote_error(error);
                g_dbus_error_strip_remote_error(error);
                g_print("%s: %s\n", name ?: "(local)", error->message);
                return 1;
        }
        g_autofree char *text = g_variant_print(reply, TRUE);
        g_print("ok %s\n", text);
        return 0;
}

bool bus_can_run_as_nobody(void) {
        g_autofree char *setpriv = g_find_program_in_path("setpriv");

        if (geteuid() != 0 || !setpriv) {
                g_test_skip("needs root and setpriv to run a client as nobody");
                return false;
        }
        return true;
}

static GSubprocess *spawn_as_nobody(BusFixture *f, const char *first, va_list ap) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        g_autofree char *copy = bus_fixture_path(f, "client"), *counts = bus_fixture_path(f, "gcov");
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GError) error = NULL;
        GSubprocess *p;

        /* A copy in the test's directory, which nobody can reach wherever the build tree is. */
        g_assert_cmpint(g_chmod(f->dir, 0755), ==, 0);
        if (!g_file_test(copy, G_FILE_TEST_EXISTS)) {
                g_autoptr(GFile) from = g_file_new_for_path(self);
                g_autoptr(GFile) to = g_file_new_for_path(copy);
                g_assert_true(g_file_copy(from, to, G_FILE_COPY_NONE, NULL, NULL, NULL, &error));
                g_assert_cmpint(g_chmod(copy, 0755), ==, 0);
                /* In a coverage build the copy writes its counts under $GCOV_PREFIX. */
                g_assert_cmpint(g_mkdir_with_parents(counts, 0777), ==, 0);
                g_assert_cmpint(g_chmod(counts, 0777), ==, 0);
        }

        for (const char *const *a = (const char *const[]) { "setpriv", "--reuid=nobody", "--regid=nogroup",
                                                             "--clear-groups", "--pdeathsig=KILL", NULL };
             *a; a++)
                g_ptr_array_add(argv, g_strdup(*a));
        g_ptr_array_add(argv, g_strdup(copy));
        g_ptr_array_add(argv, g_strdup("--client"));
        g_ptr_array_add(argv, g_strdup(f->address));
        for (const char *a = first; a; a = va_arg(ap, const char *))
                g_ptr_array_add(argv, g_strdup(a));
        g_ptr_array_add(argv, NULL);

        launcher = launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_subprocess_launcher_setenv(launcher, "GCOV_PREFIX", counts, TRUE);
        p = g_subprocess_launcher_spawnv(launcher, (const char *const *) argv->pdata, &error);
        g_assert_no_error(error);
        return p;
}

GSubprocess *bus_as_nobody_start(BusFixture *f, const char *first, ...) {
        GSubprocess *p;
        va_list ap;

        va_start(ap, first);
        p = spawn_as_nobody(f, first, ap);
        va_end(ap);
        return p;
}

char *bus_as_nobody_finish(GSubprocess *p) {
        g_autoptr(GError) error = NULL;
        char *out = NULL;

        g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, &out, NULL, &error));
        g_assert_no_error(error);
        g_assert_true(g_subprocess_get_if_exited(p));
        g_assert_cmpint(g_subprocess_get_exit_status(p), <=, 1);
        return out;
}

char *bus_as_nobody(BusFixture *f, const char *first, ...) {
        g_autoptr(GSubprocess) p = NULL;
        va_list ap;

        va_start(ap, first);
        p = spawn_as_nobody(f, first, ap);
        va_end(ap);
        return bus_as_nobody_finish(p);
}

void bus_assert_answer(const char *output, const char *expected_prefix) {
        if (!g_str_has_prefix(output, expected_prefix))
                g_error("expected an answer starting with \"%s\", got: %s", expected_prefix, output);
}

/* ---- files ---------------------------------------------------------------------------------- */

void bus_make_file(const char *path, guint64 size) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(42);
        g_autofree guint32 *buf = g_new(guint32, 1 << 18);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        g_assert_cmpint(fd, >=, 0);
        for (guint i = 0; i < (1 << 18); i++)
                buf[i] = g_rand_int(rand);
        for (guint64 done = 0; done < size;) {
                size_t n = MIN(size - done, (guint64) 1 << 20);
                buf[done / 4 % (1 << 18)] ^= (guint32) done;  /* no two MiB alike */
                g_assert_cmpint(write(fd, buf, n), ==, (ssize_t) n);
                done += n;
        }
        g_assert_cmpint(close(fd), ==, 0);
}

void bus_assert_same_file(const char *a, const char *b) {
        g_autofree char *ca = NULL, *cb = NULL;
        gsize la = 0, lb = 0;

        g_assert_true(g_file_get_contents(a, &ca, &la, NULL));
        g_assert_true(g_file_get_contents(b, &cb, &lb, NULL));
        g_assert_cmpuint(la, ==, lb);
        g_assert_true(memcmp(ca, cb, la) == 0);
}

/* ---- the daemon's processes ------------------------------------------------------------------- */

pid_t bus_daemon_pid(BusFixture *f) {
        g_assert_nonnull(f->daemon);
        const char *id = g_subprocess_get_identifier(f->daemon);
        g_assert_nonnull(id);
        return (pid_t) atoi(id);
}

GVariant *bus_call_with_fds(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                            GUnixFDList *fds, GError **error) {
        return g_dbus_connection_call_with_unix_fd_list_sync(f->conn, BUS_NAME, path, iface, method, params, NULL,
                                                             G_DBUS_CALL_FLAGS_NONE, 30000, fds, NULL, NULL, error);
}

/* The processes the stoppers stopped, for bus_stopper_resume_all() in a signal handler. */
#define STOPPED_MAX 512
static volatile pid_t stopped_pids[STOPPED_MAX];
static volatile gint n_stopped_pids;

struct BusStopper {
        GThread *thread;
        pid_t parent;
        uid_t uid;
        char *exe_name;
        gint done;
        gint n_stopped;
};

/* The process's real uid, as /proc tells it; -1 if it cannot be told. */
static uid_t process_uid(pid_t pid) {
        g_autofree char *file = g_strdup_printf("/proc/%d/status", (int) pid), *text = NULL;
        const char *line;

        if (!g_file_get_contents(file, &text, NULL, NULL) || !(line = strstr(text, "\nUid:")))
                return (uid_t) -1;
        return (uid_t) strtoul(line + 5, NULL, 10);
}

/* What the attacker could stop: its own processes (a child still becoming it is looked at
 * again next time). */
static bool is_stoppable(BusStopper *s, pid_t pid) {
        g_autofree char *link = g_strdup_printf("/proc/%d/exe", (int) pid);
        g_autofree char *exe = g_file_read_link(link, NULL);
        g_autofree char *base = exe ? g_path_get_basename(exe) : NULL;
        return base && g_str_equal(base, s->exe_name) && process_uid(pid) == s->uid;
}

static bool already_stopped(pid_t pid) {
        for (gint i = 0; i < g_atomic_int_get(&n_stopped_pids); i++)
                if (stopped_pids[i] == pid)
                        return true;
        return false;
}

GArray *bus_process_children(pid_t parent) {
        g_autofree char *tasks = g_strdup_printf("/proc/%d/task", (int) parent);
        g_autoptr(GDir) d = g_dir_open(tasks, 0, NULL);
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        const char *tid;

        while (d && (tid = g_dir_read_name(d))) {
                g_autofree char *file = g_strdup_printf("%s/%s/children", tasks, tid), *text = NULL;
                g_auto(GStrv) list = NULL;

                if (!g_file_get_contents(file, &text, NULL, NULL))
                        continue;
                list = g_strsplit(g_strstrip(text), " ", -1);
                for (char **p = list; *p; p++) {
                        pid_t pid = (pid_t) atoi(*p);
                        if (pid > 0)
                                g_array_append_val(pids, pid);
                }
        }
        return pids;
}

/* One look at the children of 'parent', and at their children: the daemon's opener servers are
 * root's, and fork the processes that become the caller. */
static void stop_new_children_of(BusStopper *s, pid_t parent, unsigned depth) {
        g_autoptr(GArray) pids = bus_process_children(parent);

        for (guint i = 0; i < pids->len; i++) {
                pid_t pid = g_array_index(pids, pid_t, i);
                if (already_stopped(pid))
                        continue;
                if (!is_stoppable(s, pid)) {
                        if (depth > 0)
                                stop_new_children_of(s, pid, depth - 1);
                        continue;
                }
                if (kill(pid, SIGSTOP) < 0)
                        continue;
                gint n = g_atomic_int_get(&n_stopped_pids);
                g_assert_cmpint(n, <, STOPPED_MAX);
                stopped_pids[n] = pid;
                g_atomic_int_set(&n_stopped_pids, n + 1);
                g_atomic_int_inc(&s->n_stopped);
        }
}

static void stop_new_children(BusStopper *s) {
        stop_new_children_of(s, s->parent, 1);
}

static gpointer stopper_thread(gpointer userdata) {
        BusStopper *s = userdata;

        while (!g_atomic_int_get(&s->done)) {
                stop_new_children(s);
                g_usleep(100);
        }
        return NULL;
}

BusStopper *bus_stopper_start(pid_t parent, const char *exe_name, uid_t uid) {
        BusStopper *s = g_new0(BusStopper, 1);

        g_assert_cmpint(g_atomic_int_get(&n_stopped_pids), ==, 0);
        s->parent = parent;
        s->uid = uid;
        s->exe_name = g_strdup(exe_name);
        s->thread = g_thread_new("stopper", stopper_thread, s);
        return s;
}

unsigned bus_stopper_count(BusStopper *s) {
        return (unsigned) g_atomic_int_get(&s->n_stopped);
}

void bus_stopper_resume_all(void) {
        /* Async-signal-safe: a process that is gone, or was reaped, is no harm to signal here,
         * within the seconds a test keeps its processes stopped. */
        for (gint i = 0; i < n_stopped_pids; i++)
                (void) kill(stopped_pids[i], SIGCONT);
}

unsigned bus_stopper_finish(BusStopper *s) {
        unsigned n;

        g_atomic_int_set(&s->done, 1);
        g_thread_join(s->thread);
        /* Still the same program of the same user (a server that went meanwhile leaves its
         * children to init): resumed. */
        for (gint i = 0; i < n_stopped_pids; i++)
                if (is_stoppable(s, stopped_pids[i]))
                        (void) kill(stopped_pids[i], SIGCONT);
        g_atomic_int_set(&n_stopped_pids, 0);
        n = bus_stopper_count(s);
        g_free(s->exe_name);
        g_free(s);
        return n;
}

char *bus_job_path_for_id(BusFixture *f, const char *id) {
        g_autoptr(GVariant) reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariantIter) iter = NULL;
        const char *path, *job_id;
        char *found = NULL;

        g_variant_get(reply, "(a(ossstts))", &iter);
        while (g_variant_iter_loop(iter, "(&o&s&s&stt&s)", &path, &job_id, NULL, NULL, NULL, NULL, NULL))
                if (g_str_equal(job_id, id)) {
                        if (found)
                                g_error("Several jobs have the id '%s'", id);
                        found = g_strdup(path);
                }
        if (!found)
                g_error("No job has the id '%s'", id);
        return found;
}

GVariant *bus_opts_add(GVariant *options, const char *key, GVariant *value) {
        g_autoptr(GVariant) old = g_variant_ref_sink(options);
        GVariantBuilder b;
        GVariantIter iter;
        const char *k;
        GVariant *v;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_iter_init(&iter, old);
        while (g_variant_iter_next(&iter, "{&sv}", &k, &v)) {
                g_variant_builder_add(&b, "{sv}", k, v);
                g_variant_unref(v);
        }
        g_variant_builder_add(&b, "{sv}", key, value);
        return g_variant_builder_end(&b);
}

void bus_fixture_set_faults(BusFixture *f, const char *format, ...) {
        g_autofree char *text = NULL, *tmp = g_strconcat(f->fault_rules, ".new", NULL);
        va_list ap;

        va_start(ap, format);
        text = g_strdup_vprintf(format, ap);
        va_end(ap);
        /* A rename, so that the daemon never reads a half-written file. */
        g_assert_true(g_file_set_contents(tmp, text, -1, NULL));
        g_assert_cmpint(g_rename(tmp, f->fault_rules), ==, 0);
}
