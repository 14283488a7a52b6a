/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobd over D-Bus, on a private system bus: the documented API against the live one, every
 * method, property and signal, every error, the exact StatusChanged sequences, activation, the
 * idle exit, SIGTERM, and the progress signal budget. */

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>

#include <gio/gunixsocketaddress.h>

#include "bus-fixture.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)
#define ERR_INVALID_STATE "org.blockjobd.Jobs1.Error.InvalidState"
#define ERR_NO_SUCH_JOB "org.blockjobd.Jobs1.Error.NoSuchJob"
#define ERR_JOB_EXISTS "org.blockjobd.Jobs1.Error.JobExists"
#define ERR_INVALID_JOB_ID "org.blockjobd.Jobs1.Error.InvalidJobId"
#define ERR_IMAGE "org.blockjobd.Jobs1.Error.ImageError"
#define ERR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"

static void assert_alive(BusFixture *f) {
        g_autoptr(GVariant) v = bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL);
}

static char *job_call_error(BusFixture *f, const char *path, const char *method, const char *expected) {
        return bus_call_error(f, path, JOB_IFACE, method, NULL, expected);
}

/* ---- the documented API is the live API ----------------------------------------------------- */

static void assert_same_args(GDBusArgInfo **a, GDBusArgInfo **b, const char *where) {
        for (; a && *a; a++, b++) {
                if (!b || !*b)
                        g_error("%s: argument %s is missing", where, (*a)->name);
                if (!g_str_equal((*a)->name, (*b)->name) || !g_str_equal((*a)->signature, (*b)->signature))
                        g_error("%s: argument %s %s differs from %s %s", where, (*a)->name, (*a)->signature,
                                (*b)->name, (*b)->signature);
        }
        if (b && *b)
                g_error("%s: argument %s is extra", where, (*b)->name);
}

static void assert_same_annotations(GDBusAnnotationInfo **a, GDBusAnnotationInfo **b, const char *where) {
        guint na = a ? g_strv_length((char **) a) : 0, nb = b ? g_strv_length((char **) b) : 0;
        if (na != nb)
                g_error("%s: %u annotations against %u", where, na, nb);
        for (guint i = 0; i < na; i++)
                if (!g_str_equal(a[i]->key, b[i]->key) || !g_str_equal(a[i]->value, b[i]->value))
                        g_error("%s: annotation %s=%s differs from %s=%s", where, a[i]->key, a[i]->value, b[i]->key,
                                b[i]->value);
}

/* Compares everything introspection says: members, their order, arguments, types, access, annotations. */
static void assert_same_interface(GDBusInterfaceInfo *doc, GDBusInterfaceInfo *live) {
        guint n;

        n = doc->methods ? g_strv_length((char **) doc->methods) : 0;
        g_assert_cmpuint(n, ==, live->methods ? g_strv_length((char **) live->methods) : 0);
        for (guint i = 0; i < n; i++) {
                g_autofree char *where = g_strdup_printf("%s.%s()", doc->name, doc->methods[i]->name);
                g_assert_cmpstr(doc->methods[i]->name, ==, live->methods[i]->name);
                assert_same_args(doc->methods[i]->in_args, live->methods[i]->in_args, where);
                assert_same_args(doc->methods[i]->out_args, live->methods[i]->out_args, where);
                assert_same_annotations(doc->methods[i]->annotations, live->methods[i]->annotations, where);
        }

        n = doc->signals ? g_strv_length((char **) doc->signals) : 0;
        g_assert_cmpuint(n, ==, live->signals ? g_strv_length((char **) live->signals) : 0);
        for (guint i = 0; i < n; i++) {
                g_autofree char *where = g_strdup_printf("%s::%s", doc->name, doc->signals[i]->name);
                g_assert_cmpstr(doc->signals[i]->name, ==, live->signals[i]->name);
                assert_same_args(doc->signals[i]->args, live->signals[i]->args, where);
        }

        n = doc->properties ? g_strv_length((char **) doc->properties) : 0;
        g_assert_cmpuint(n, ==, live->properties ? g_strv_length((char **) live->properties) : 0);
        for (guint i = 0; i < n; i++) {
                g_autofree char *where = g_strdup_printf("%s.%s", doc->name, doc->properties[i]->name);
                g_assert_cmpstr(doc->properties[i]->name, ==, live->properties[i]->name);
                g_assert_cmpstr(doc->properties[i]->signature, ==, live->properties[i]->signature);
                g_assert_cmpint(doc->properties[i]->flags, ==, live->properties[i]->flags);
                assert_same_annotations(doc->properties[i]->annotations, live->properties[i]->annotations, where);
        }
}

static GDBusNodeInfo *introspect(BusFixture *f, const char *path) {
        g_autoptr(GVariant) reply = bus_call(f, path, "org.freedesktop.DBus.Introspectable", "Introspect", NULL, "(s)");
        g_autoptr(GError) error = NULL;
        const char *xml;
        GDBusNodeInfo *node;

        g_variant_get(reply, "(&s)", &xml);
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        return node;
}

static void test_introspection_matches_xml(BusFixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        g_autofree char *xml = NULL, *source = bus_fixture_path(f, "s.img"), *target = bus_fixture_path(f, "t.img");
        g_autoptr(GDBusNodeInfo) doc = NULL, manager = NULL, job = NULL;
        g_autofree char *path = NULL;

        g_assert_true(g_file_get_contents(g_getenv("API_XML"), &xml, NULL, &error));
        g_assert_no_error(error);
        doc = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(g_strv_length((char **) doc->interfaces), ==, 2);

        manager = introspect(f, MANAGER_PATH);
        assert_same_interface(g_dbus_node_info_lookup_interface(doc, MANAGER_IFACE),
                              g_dbus_node_info_lookup_interface(manager, MANAGER_IFACE));
        g_assert_nonnull(g_dbus_node_info_lookup_interface(manager, "org.freedesktop.DBus.ObjectManager"));

        bus_make_file(source, 4 * MiB);
        path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(1), NULL));
        job = introspect(f, path);
        assert_same_interface(g_dbus_node_info_lookup_interface(doc, JOB_IFACE),
                              g_dbus_node_info_lookup_interface(job, JOB_IFACE));
        g_assert_nonnull(g_dbus_node_info_lookup_interface(job, "org.freedesktop.DBus.Peer"));
        g_assert_nonnull(g_dbus_node_info_lookup_interface(job, "org.freedesktop.DBus.Properties"));

        /* The job shows up below the manager's job node. */
        g_autoptr(GDBusNodeInfo) jobs = introspect(f, MANAGER_PATH "/job");
        g_assert_nonnull(jobs->nodes);
        g_assert_cmpstr(jobs->nodes[0]->path, ==, "backup0");
        bus_job_call(f, path, "Cancel");
}

/* Many jobs under the one fallback vtable and node enumerator: each is its own object, listed,
 * introspected and managed exactly as one alone, and a second look from the same connection (its
 * credentials remembered) sees the same. */
#define MANY_JOBS 200

static void test_many_jobs(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "s.img");
        g_autoptr(GHashTable) paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        char *first = NULL;

        bus_make_file(source, 4 * MiB);
        for (unsigned i = 0; i < MANY_JOBS; i++) {
                g_autofree char *name = g_strdup_printf("t%u.img", i), *target = bus_fixture_path(f, name);
                char *path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(1), NULL));

                g_assert_true(g_hash_table_insert(paths, path, g_strdup_printf("backup%u", i)));
                if (!first)
                        first = path;
        }

        for (unsigned pass = 0; pass < 2; pass++) {
                g_autoptr(GVariant) list = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
                g_autoptr(GVariant) jobs = g_variant_get_child_value(list, 0);
                g_autoptr(GVariant) count = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Jobs");
                GVariantIter it;
                const char *path, *id, *type, *status;

                g_assert_cmpuint(g_variant_get_uint32(count), ==, MANY_JOBS);
                g_assert_cmpuint(g_variant_n_children(jobs), ==, MANY_JOBS);
                g_variant_iter_init(&it, jobs);
                while (g_variant_iter_next(&it, "(&o&s&s&stt&s)", &path, &id, &type, &status, NULL, NULL, NULL)) {
                        g_assert_cmpstr(g_hash_table_lookup(paths, path), ==, id);
                        g_assert_cmpstr(type, ==, "backup");
                        g_assert_cmpstr(status, ==, "running");
                }

                /* Introspection of the job node lists every job, and no other node. */
                g_autoptr(GDBusNodeInfo) node = introspect(f, MANAGER_PATH "/job");
                g_assert_cmpuint(node->nodes ? g_strv_length((char **) node->nodes) : 0, ==, MANY_JOBS);
                for (guint i = 0; node->nodes[i]; i++) {
                        g_autofree char *full = g_strconcat(MANAGER_PATH "/job/", node->nodes[i]->path, NULL);
                        g_assert_true(g_hash_table_contains(paths, full));
                }
                g_autoptr(GDBusNodeInfo) one = introspect(f, first);
                g_assert_nonnull(g_dbus_node_info_lookup_interface(one, JOB_IFACE));

                /* GetManagedObjects: the manager and every job, each with its Id, Source and Target. */
                g_autoptr(GVariant) managed = bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                                       "GetManagedObjects", NULL, "(a{oa{sa{sv}}})");
                g_autoptr(GVariant) objects = g_variant_get_child_value(managed, 0);
                g_autoptr(GVariant) ifaces = NULL;
                unsigned n_jobs = 0;
                g_variant_iter_init(&it, objects);
                while (g_variant_iter_next(&it, "{&o@a{sa{sv}}}", &path, &ifaces)) {
                        g_autoptr(GVariant) props = g_variant_lookup_value(ifaces, JOB_IFACE, G_VARIANT_TYPE("a{sv}"));
                        g_clear_pointer(&ifaces, g_variant_unref);
                        if (g_str_equal(path, MANAGER_PATH))
                                continue;
                        g_assert_nonnull(props);
                        const char *job_id = NULL, *job_source = NULL;
                        g_assert_true(g_variant_lookup(props, "Id", "&s", &job_id));
                        g_assert_true(g_variant_lookup(props, "Source", "&s", &job_source));
                        g_assert_cmpstr(g_hash_table_lookup(paths, path), ==, job_id);
                        g_assert_cmpstr(job_source, ==, source);
                        n_jobs++;
                }
                g_assert_cmpuint(n_jobs, ==, MANY_JOBS);
        }

        /* Every job answers at its own path; none other does. */
        g_autofree char *last_id = bus_get_string(f, first, "Id");
        g_assert_cmpstr(last_id, ==, "backup0");
        g_autofree char *missing = bus_call_error(f, MANAGER_PATH "/job/backup" G_STRINGIFY(MANY_JOBS), JOB_IFACE, "Pause",
                                                  NULL, "org.freedesktop.DBus.Error.UnknownObject");
        GHashTableIter hit;
        gpointer key;
        g_hash_table_iter_init(&hit, paths);
        while (g_hash_table_iter_next(&hit, &key, NULL))
                bus_job_call(f, key, "Cancel");
}

/* GetManagedObjects is answered by blockjobd itself (not sd-bus's object manager): per job, the
 * same interfaces as sd-bus lists, and the very properties Get and GetAll return. */
static void test_managed_objects_match_get_all(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "s.img");
        g_autofree char *t0 = bus_fixture_path(f, "t0.img"), *t1 = bus_fixture_path(f, "t1.img"),
                        *t2 = bus_fixture_path(f, "t2.img");
        g_autoptr(GHashTable) paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        GVariantBuilder actions;
        const char *ids[] = { "one", "backup0", "backup1" };

        bus_make_file(source, 4 * MiB);
        g_hash_table_add(paths, bus_backup(f, source, t0,
                                           bus_opts("speed", g_variant_new_uint64(1), "job-id",
                                                    g_variant_new_string("one"), "auto-dismiss",
                                                    g_variant_new_boolean(false), NULL)));
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", source, t1, bus_opts("speed", g_variant_new_uint64(1), NULL));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", source, t2, bus_opts("speed", g_variant_new_uint64(2), NULL));
        g_auto(GStrv) grouped = bus_transaction_grouped(f, g_variant_builder_end(&actions));
        for (guint i = 0; grouped[i]; i++)
                g_hash_table_add(paths, g_strdup(grouped[i]));
        g_assert_cmpuint(g_hash_table_size(paths), ==, 3);

        /* Paused, so that nothing moves between the calls compared. */
        GHashTableIter hit;
        gpointer key;
        g_hash_table_iter_init(&hit, paths);
        while (g_hash_table_iter_next(&hit, &key, NULL))
                bus_job_call(f, key, "Pause");
        for (guint i = 0; i < G_N_ELEMENTS(ids); i++)
                bus_wait_for_status(f, ids[i], "paused");
        bus_iterate_for(f, 100 * 1000);
        g_assert_cmpuint(f->n_added, ==, 3);

        g_autoptr(GVariant) managed = bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                               "GetManagedObjects", NULL, "(a{oa{sa{sv}}})");
        g_autoptr(GVariant) objects = g_variant_get_child_value(managed, 0);
        g_assert_cmpuint(g_variant_n_children(objects), ==, 3);

        GVariantIter it;
        const char *path;
        GVariant *ifaces;
        g_variant_iter_init(&it, objects);
        while (g_variant_iter_next(&it, "{&o@a{sa{sv}}}", &path, &ifaces)) {
                g_autoptr(GVariant) owned = ifaces;
                const char *expected_ifaces[] = { "org.freedesktop.DBus.Peer", "org.freedesktop.DBus.Introspectable",
                                                  "org.freedesktop.DBus.Properties", JOB_IFACE };

                g_assert_true(g_hash_table_contains(paths, path));
                /* The interfaces, in sd-bus's order; the standard ones without properties. */
                g_assert_cmpuint(g_variant_n_children(ifaces), ==, G_N_ELEMENTS(expected_ifaces));
                for (guint i = 0; i < G_N_ELEMENTS(expected_ifaces); i++) {
                        g_autoptr(GVariant) entry = g_variant_get_child_value(ifaces, i);
                        g_autoptr(GVariant) name = g_variant_get_child_value(entry, 0);
                        g_autoptr(GVariant) props = g_variant_get_child_value(entry, 1);

                        g_assert_cmpstr(g_variant_get_string(name, NULL), ==, expected_ifaces[i]);
                        if (i + 1 < G_N_ELEMENTS(expected_ifaces)) {
                                g_assert_cmpuint(g_variant_n_children(props), ==, 0);
                                continue;
                        }

                        /* Exactly GetAll's answer, same order, and each property as Get says. */
                        g_autoptr(GVariant) all = bus_call(f, path, "org.freedesktop.DBus.Properties", "GetAll",
                                                           g_variant_new("(s)", JOB_IFACE), "(a{sv})");
                        g_autoptr(GVariant) all_props = g_variant_get_child_value(all, 0);
                        g_assert_cmpvariant(props, all_props);

                        GVariantIter pit;
                        const char *pname;
                        GVariant *value;
                        g_variant_iter_init(&pit, props);
                        while (g_variant_iter_next(&pit, "{&sv}", &pname, &value)) {
                                g_autoptr(GVariant) v = value;
                                g_autoptr(GVariant) one = bus_get_property(f, path, JOB_IFACE, pname);
                                g_assert_cmpvariant(v, one);
                        }
                        g_assert_cmpuint(g_variant_n_children(props), ==, 19);
                }
        }

        /* Calls it does not answer itself, or answers with an error, as before. */
        g_autofree char *bad = bus_call_error(f, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                              "GetManagedObjects", g_variant_new("(s)", "x"), ERR_INVALID_ARGS);
        g_assert_cmpstr(bad, ==, "Expected no parameters");
        g_autofree char *elsewhere = bus_call_error(f, grouped[0],
                                                    "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
                                                    "org.freedesktop.DBus.Error.UnknownMethod");
        g_assert_nonnull(elsewhere);
        g_autoptr(GVariant) ping = bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL);
        g_autoptr(GVariant) jobs = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Jobs");
        g_assert_cmpuint(g_variant_get_uint32(jobs), ==, 3);

        /* Gone: InterfacesRemoved for each, and GetManagedObjects is empty. Cancelling one job of
         * the grouped transaction cancels both. */
        g_autofree char *one = bus_job_path_for_id(f, "one");
        bus_job_call(f, one, "Cancel");
        bus_job_call(f, grouped[0], "Cancel");
        bus_wait_for_status(f, "one", "concluded");
        bus_job_call(f, one, "Dismiss");
        for (guint i = 0; i < G_N_ELEMENTS(ids); i++)
                bus_wait_for_status(f, ids[i], "null");
        bus_iterate_for(f, 100 * 1000);
        g_assert_cmpuint(f->n_removed, ==, 3);
        g_autoptr(GVariant) none = bus_call(f, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                            "GetManagedObjects", NULL, "(a{oa{sa{sv}}})");
        g_assert_cmpstr(g_variant_get_type_string(none), ==, "(a{oa{sa{sv}}})");
        g_autoptr(GVariant) empty = g_variant_get_child_value(none, 0);
        g_assert_cmpuint(g_variant_n_children(empty), ==, 0);
}

/* ---- the manager ---------------------------------------------------------------------------- */

static void test_manager_properties(BusFixture *f, gconstpointer data) {
        g_autoptr(GVariant) version = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Version");
        g_autoptr(GVariant) types = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "JobTypes");
        g_autoptr(GVariant) jobs = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Jobs");
        g_autofree const char **t = g_variant_get_strv(types, NULL);
        g_autofree char *joined = g_strjoinv(" ", (char **) t);

        g_assert_cmpstr(g_variant_get_string(version, NULL), !=, "");
        g_assert_cmpstr(joined, ==, "commit stream mirror backup");
        g_assert_cmpuint(g_variant_get_uint32(jobs), ==, 0);
}

static void test_backup_lifecycle(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL, *error = NULL, *transaction = NULL;
        g_autoptr(GVariant) list = NULL, got = NULL, verbs = NULL, owner = NULL, af = NULL, jobs = NULL;

        bus_make_file(source, 8 * MiB);
        path = bus_backup(f, source, target,
                          bus_opts("job-id", g_variant_new_string("nightly"), "auto-finalize", g_variant_new_boolean(FALSE),
                               "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        g_assert_cmpstr(path, ==, MANAGER_PATH "/job/nightly");
        bus_wait_for_status(f, "nightly", "pending");

        /* Everything there is to know about it. */
        g_autofree char *id = bus_get_string(f, path, "Id"), *type = bus_get_string(f, path, "Type");
        g_autofree char *status = bus_get_string(f, path, "Status"), *src = bus_get_string(f, path, "Source");
        g_autofree char *tgt = bus_get_string(f, path, "Target"), *err = bus_get_string(f, path, "Error");
        g_autofree char *io = bus_get_string(f, path, "IoStatus");
        g_assert_cmpstr(id, ==, "nightly");
        g_assert_cmpstr(type, ==, "backup");
        g_assert_cmpstr(status, ==, "pending");
        g_assert_cmpstr(src, ==, source);
        g_assert_cmpstr(tgt, ==, target);
        g_assert_cmpstr(err, ==, "");
        g_assert_cmpstr(io, ==, "ok");
        transaction = bus_get_string(f, path, "Transaction");
        g_assert_cmpstr(transaction, ==, "");
        g_assert_cmpuint(bus_get_uint64(f, path, "CurrentProgress"), ==, 8 * MiB);
        g_assert_cmpuint(bus_get_uint64(f, path, "TotalProgress"), ==, 8 * MiB);
        g_assert_cmpuint(bus_get_uint64(f, path, "Speed"), ==, 0);
        g_assert_cmpuint(bus_get_uint64(f, path, "Rate"), ==, 0);             /* not running */
        g_assert_cmpuint(bus_get_uint64(f, path, "ExpectedEndTime"), ==, 0);
        owner = bus_get_property(f, path, JOB_IFACE, "OwnerUID");
        g_assert_cmpuint(g_variant_get_uint32(owner), ==, getuid());
        af = bus_get_property(f, path, JOB_IFACE, "AutoFinalize");
        g_assert_false(g_variant_get_boolean(af));
        verbs = bus_get_property(f, path, JOB_IFACE, "AllowedVerbs");
        g_autofree const char **v = g_variant_get_strv(verbs, NULL);
        g_autofree char *vs = g_strjoinv(" ", (char **) v);
        g_assert_cmpstr(vs, ==, "cancel finalize");
        jobs = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Jobs");
        g_assert_cmpuint(g_variant_get_uint32(jobs), ==, 1);

        /* Not published before it is finalized. */
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        list = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autofree char *printed = g_variant_print(list, FALSE);
        g_autofree char *expected = g_strdup_printf("([('%s', 'nightly', 'backup', 'pending', %" G_GUINT64_FORMAT
                                                    ", %" G_GUINT64_FORMAT ", '')],)",
                                                    path, 8 * MiB, 8 * MiB);
        g_assert_cmpstr(printed, ==, expected);
        got = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(s)", "nightly"), "(o)");
        g_autofree char *got_path = NULL;
        g_variant_get(got, "(o)", &got_path);
        g_assert_cmpstr(got_path, ==, path);

        bus_job_call(f, path, "Finalize");
        bus_wait_for_status(f, "nightly", "concluded");
        bus_assert_same_file(source, target);

        /* Concluded: its id stays taken until dismissed. */
        error = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup",
                               g_variant_new("(ss@a{sv})", source, target, bus_opts("job-id", g_variant_new_string("nightly"), NULL)),
                               ERR_JOB_EXISTS);
        g_assert_cmpstr(error, ==, "Job ID 'nightly' already in use");

        bus_job_call(f, path, "Dismiss");
        bus_wait_for_status(f, "nightly", "null");
        g_assert_cmpstr(f->statuses->str, ==,
                        "nightly:created nightly:running nightly:waiting nightly:pending nightly:concluded nightly:null ");
        g_assert_cmpuint(f->n_added, ==, 1);
        bus_iterate_for(f, 100 * 1000);
        g_assert_cmpuint(f->n_removed, ==, 1);
        g_free(error);
        error = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(s)", "nightly"), ERR_NO_SUCH_JOB);
        g_assert_cmpstr(error, ==, "Job not found");
}

static void test_verbs(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL, *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL, *e5 = NULL, *e6 = NULL;

        bus_make_file(source, 16 * MiB);
        path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(4 * MiB), NULL));
        g_assert_cmpstr(path, ==, MANAGER_PATH "/job/backup0");
        bus_wait_for_status(f, "backup0", "running");

        e1 = job_call_error(f, path, "Resume", ERR_INVALID_STATE);
        g_assert_cmpstr(e1, ==, "Can't resume a job that was not paused");
        e2 = job_call_error(f, path, "Complete", ERR_INVALID_STATE);
        g_assert_cmpstr(e2, ==, "Job 'backup0' in state 'running' cannot accept command verb 'complete'");
        e3 = job_call_error(f, path, "Finalize", ERR_INVALID_STATE);
        g_assert_cmpstr(e3, ==, "Job 'backup0' in state 'running' cannot accept command verb 'finalize'");

        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, "backup0", "paused");
        e4 = job_call_error(f, path, "Pause", ERR_INVALID_STATE);
        g_assert_cmpstr(e4, ==, "Job is already paused");
        e5 = job_call_error(f, path, "Dismiss", ERR_INVALID_STATE);
        g_assert_cmpstr(e5, ==, "Job 'backup0' in state 'paused' cannot accept command verb 'dismiss'");

        g_autoptr(GVariant) v = bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 8 * MiB), NULL);
        g_assert_cmpuint(bus_get_uint64(f, path, "Speed"), ==, 8 * MiB);
        bus_job_call(f, path, "Resume");
        bus_wait_for_status(f, "backup0", "running");
        bus_job_call(f, path, "Cancel");
        bus_wait_for_status(f, "backup0", "null");

        g_assert_cmpstr(f->statuses->str, ==,
                        "backup0:created backup0:running backup0:paused backup0:running backup0:aborting "
                        "backup0:concluded backup0:null ");
        /* Cancelled: nothing was published, nothing is left behind. */
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        e6 = bus_call_error(f, path, JOB_IFACE, "Cancel", NULL, "org.freedesktop.DBus.Error.UnknownObject");
}

static void test_every_verb(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL;

        bus_make_file(source, 8 * MiB);
        path = bus_start(f, "Mirror", source, target,
                          bus_opts("job-id", g_variant_new_string("m"), "auto-finalize", g_variant_new_boolean(FALSE),
                               "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        bus_wait_for_status(f, "m", "ready");

        g_autoptr(GVariant) verbs = bus_get_property(f, path, JOB_IFACE, "AllowedVerbs");
        g_autofree const char **v = g_variant_get_strv(verbs, NULL);
        g_autofree char *vs = g_strjoinv(" ", (char **) v);
        g_assert_cmpstr(vs, ==, "cancel pause set-speed complete");

        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, "m", "standby");
        g_autoptr(GVariant) speed = bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) MiB), NULL);
        g_assert_cmpuint(bus_get_uint64(f, path, "Speed"), ==, MiB);
        bus_job_call(f, path, "Resume");
        bus_wait_for_status(f, "m", "ready");
        bus_job_call(f, path, "Complete");
        bus_wait_for_status(f, "m", "pending");
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        bus_job_call(f, path, "Finalize");
        bus_wait_for_status(f, "m", "concluded");
        bus_assert_same_file(source, target);
        bus_job_call(f, path, "Dismiss");
        bus_wait_for_status(f, "m", "null");

        g_assert_cmpstr(f->statuses->str, ==,
                        "m:created m:running m:ready m:standby m:ready m:waiting m:pending m:concluded m:null ");
}

static void test_mirror_follows_writes(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL;
        g_autofree char *complete_error = NULL;

        bus_make_file(source, 4 * MiB);
        /* Throttled until Complete has been refused: unthrottled, 4 MiB can reach "ready" before
         * the call arrives. */
        path = bus_start(f, "Mirror", source, target,
                         bus_opts("granularity", g_variant_new_uint32(4096), "speed", g_variant_new_uint64(64 * 1024), NULL));
        complete_error = job_call_error(f, path, "Complete", ERR_INVALID_STATE);
        g_assert_cmpstr(complete_error, ==, "Job 'mirror0' in state 'running' cannot accept command verb 'complete'");
        g_variant_unref(bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL));
        bus_wait_for_status(f, "mirror0", "ready");

        /* Someone writes to the source while it is mirrored. */
        FILE *w = fopen(source, "r+");
        g_assert_nonnull(w);
        for (int i = 0; i < 64; i++) {
                g_assert_cmpint(fseek(w, (long) (i * 61 * 1021), SEEK_SET), ==, 0);
                g_assert_cmpint(fprintf(w, "write %d", i), >, 0);
        }
        g_assert_cmpint(fclose(w), ==, 0);
        bus_iterate_for(f, 300 * 1000);

        bus_job_call(f, path, "Complete");
        bus_wait_for_status(f, "mirror0", "null");
        bus_assert_same_file(source, target);
        g_assert_cmpstr(f->statuses->str, ==, "mirror0:created mirror0:running mirror0:ready mirror0:waiting "
                                              "mirror0:pending mirror0:concluded mirror0:null ");
}

/* A real ENOSPC: a target on a 1 MiB tmpfs. */
static char *mount_tiny_tmpfs(BusFixture *f) {
        g_autofree char *dir = bus_fixture_path(f, "tiny");
        g_autofree char *cmd = g_strdup_printf("mount -t tmpfs -o size=1m tmpfs %s", dir);
        int status = -1;

        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        if (geteuid() != 0 || !g_spawn_command_line_sync(cmd, NULL, NULL, &status, NULL) || status != 0)
                return NULL;
        return g_steal_pointer(&dir);
}

static void umount_tiny_tmpfs(const char *dir) {
        g_autofree char *cmd = g_strdup_printf("umount %s", dir);
        g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, NULL, NULL));
}

static void test_io_error_stop(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *tiny = mount_tiny_tmpfs(f);
        g_autofree char *target = NULL, *path = NULL, *io = NULL;

        if (!tiny) {
                g_test_skip("cannot mount a tmpfs here");
                return;
        }
        target = g_build_filename(tiny, "t.img", NULL);
        bus_make_file(source, 4 * MiB);

        /* on-target-error=enospc: out of space, the job stops, and says so. */
        path = bus_backup(f, source, target,
                          bus_opts("on-target-error", g_variant_new_string("enospc"), "job-id", g_variant_new_string("full"),
                               NULL));
        bus_wait_for_status(f, "full", "paused");
        io = bus_get_string(f, path, "IoStatus");
        g_assert_cmpstr(io, ==, "nospace");
        bus_iterate_for(f, 100 * 1000);
        g_assert_cmpstr(f->io_errors->str, ==, "write:stop ");

        /* Resume retries (still no space: it stops again); cancel resets and ends it. */
        bus_job_call(f, path, "Resume");
        bus_wait_for_status(f, "full", "running");
        for (gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
             !g_str_equal(f->io_errors->str, "write:stop write:stop ") && g_get_monotonic_time() < end;)
                bus_iterate_for(f, 20 * 1000);
        g_assert_cmpstr(f->io_errors->str, ==, "write:stop write:stop ");
        bus_job_call(f, path, "Cancel");
        bus_wait_for_status(f, "full", "null");
        g_assert_cmpstr(f->statuses->str, ==, "full:created full:running full:paused full:running full:paused "
                                              "full:running full:aborting full:concluded full:null ");

        /* With the default, report, the job fails with the message. */
        g_free(path);
        path = bus_backup(f, source, target,
                          bus_opts("job-id", g_variant_new_string("report"), "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        bus_wait_for_status(f, "report", "concluded");
        g_autofree char *error = bus_get_string(f, path, "Error");
        g_autofree char *prefix = g_strdup_printf("Could not write '%s' at offset ", target);
        g_assert_true(g_str_has_prefix(error, prefix));
        g_assert_true(g_str_has_suffix(error, ": No space left on device"));
        bus_job_call(f, path, "Dismiss");
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        umount_tiny_tmpfs(tiny);
}

static void test_error_texts_reach_clients(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL, *error = NULL;

        /* A job that fails reports why: here the cancel, with auto-dismiss off to read it. */
        bus_make_file(source, 4 * MiB);
        path = bus_backup(f, source, target,
                          bus_opts("auto-dismiss", g_variant_new_boolean(FALSE), "speed", g_variant_new_uint64(MiB), NULL));
        bus_job_call(f, path, "Cancel");
        bus_wait_for_status(f, "backup0", "concluded");
        error = bus_get_string(f, path, "Error");
        g_assert_cmpstr(error, ==, "Operation canceled");
        g_autoptr(GVariant) list = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autofree char *printed = g_variant_print(list, FALSE);
        g_assert_nonnull(strstr(printed, "'concluded', "));
        g_assert_nonnull(strstr(printed, "'Operation canceled')"));
        bus_job_call(f, path, "Dismiss");
}

/* ---- bad calls ------------------------------------------------------------------------------ */

static void expect_backup_error(BusFixture *f, const char *source, const char *target, GVariant *options,
                                const char *error_name, const char *message) {
        g_autofree char *got = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup",
                                              g_variant_new("(ss@a{sv})", source, target,
                                                            options ?: g_variant_new("a{sv}", NULL)),
                                              error_name);
        if (message)
                g_assert_cmpstr(got, ==, message);
        assert_alive(f);
}

static void test_bad_calls(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *missing = bus_fixture_path(f, "missing.img"), *exists = bus_fixture_path(f, "exists.img");
        g_autofree char *nodir = bus_fixture_path(f, "no/such/dir.img");
        g_autofree char *x5000 = g_strnfill(5000, 'x'), *long_path = g_strdup_printf("/%s", x5000);
        g_autofree char *long_id = g_strnfill(200, 'a');
        g_autofree char *m = NULL;

        bus_make_file(source, MiB);
        bus_make_file(exists, 4096);

        /* Wrong signatures: sd-bus refuses them before any handler runs. */
        g_free(bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup", g_variant_new("(ss)", source, target),
                              ERR_INVALID_ARGS));
        g_free(bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup", g_variant_new("(sa{sv}s)", source, NULL, target),
                              ERR_INVALID_ARGS));
        g_free(bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(u)", 7), ERR_INVALID_ARGS));
        g_free(bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "NoSuchMethod", NULL,
                              "org.freedesktop.DBus.Error.UnknownMethod"));
        assert_alive(f);

        /* Options: unknown keys, wrong variant types, repeated keys, bad values, keys of another type. */
        expect_backup_error(f, source, target, bus_opts("colour", g_variant_new_string("red"), NULL), ERR_INVALID_ARGS,
                            "Unknown option 'colour' for a backup job");
        expect_backup_error(f, source, target, bus_opts("speed", g_variant_new_string("fast"), NULL), ERR_INVALID_ARGS,
                            "Option 'speed' must be of type 't', not 's'");
        expect_backup_error(f, source, target, bus_opts("speed", g_variant_new_int32(5), NULL), ERR_INVALID_ARGS,
                            "Option 'speed' must be of type 't', not 'i'");
        expect_backup_error(f, source, target,
                            bus_opts("speed", g_variant_new_uint64(1), "speed", g_variant_new_uint64(2), NULL),
                            ERR_INVALID_ARGS, "Option 'speed' given twice");
        expect_backup_error(f, source, target, bus_opts("on-source-error", g_variant_new_string("panic"), NULL),
                            ERR_INVALID_ARGS, "Option 'on-source-error' must be one of report, ignore, stop, enospc, not 'panic'");
        expect_backup_error(f, source, target, bus_opts("sync", g_variant_new_string("none"), NULL), ERR_INVALID_ARGS,
                            "Option 'sync' must be full, top, bitmap or incremental, not 'none'");
        expect_backup_error(f, source, target, bus_opts("format", g_variant_new_string("vmdk"), NULL), ERR_INVALID_ARGS,
                            "Option 'format' must be raw or qcow2, not 'vmdk'");
        expect_backup_error(f, source, target, bus_opts("granularity", g_variant_new_uint32(4096), NULL), ERR_INVALID_ARGS,
                            "Unknown option 'granularity' for a backup job");
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Mirror",
                           g_variant_new("(ss@a{sv})", source, target, bus_opts("granularity", g_variant_new_uint32(3000), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Parameter 'granularity' expects a power of 2");
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Mirror",
                           g_variant_new("(ss@a{sv})", source, target, bus_opts("granularity", g_variant_new_uint32(256), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Parameter 'granularity' expects a value in range [512B, 64MB]");

        /* Paths: empty, relative, absurdly long, missing, a directory, an existing target, the source itself. */
        expect_backup_error(f, "", target, NULL, ERR_INVALID_ARGS, "Source path is empty");
        expect_backup_error(f, "source.img", target, NULL, ERR_INVALID_ARGS, "Source path 'source.img' is not absolute");
        expect_backup_error(f, source, long_path, NULL, ERR_INVALID_ARGS, "Target path is too long");
        expect_backup_error(f, "/tmp/../etc/passwd", target, NULL, ERR_INVALID_ARGS,
                            "Source path '/tmp/../etc/passwd' has '.' or '..' in it");
        expect_backup_error(f, source, "/srv/./x.img", NULL, ERR_INVALID_ARGS, "Target path '/srv/./x.img' has '.' or '..' in it");
        g_autofree char *m1 = g_strdup_printf("Could not open '%s': No such file or directory", missing);
        expect_backup_error(f, missing, target, NULL, ERR_IMAGE, m1);
        g_autofree char *m2 = g_strdup_printf("Target '%s' is a directory", f->dir);
        expect_backup_error(f, source, f->dir, NULL, ERR_IMAGE, m2);
        g_autofree char *m3 = g_strdup_printf("Target '%s' already exists", exists);
        expect_backup_error(f, source, exists, NULL, ERR_IMAGE, m3);
        g_autofree char *m4 = g_strdup_printf("Could not create target '%s': No such file or directory", nodir);
        expect_backup_error(f, source, nodir, NULL, ERR_IMAGE, m4);
        expect_backup_error(f, source, source, bus_opts("overwrite", g_variant_new_boolean(TRUE), NULL), ERR_INVALID_ARGS,
                            "Source and target cannot be the same");

        /* Ids: QEMU's rules, and a length bound. */
        static const char *const odd[] = { "0id", "-x", "a b", "a/b", "é", "a\tb", "" };
        /* As the message shows them: a control character escaped. */
        static const char *const shown[] = { "0id", "-x", "a b", "a/b", "é", "a\\x09b", "" };
        for (guint i = 0; i < G_N_ELEMENTS(odd); i++) {
                g_autofree char *expected = g_strdup_printf("Invalid job ID '%s'", shown[i]);
                expect_backup_error(f, source, target, bus_opts("job-id", g_variant_new_string(odd[i]), NULL),
                                    ERR_INVALID_JOB_ID, expected);
        }
        expect_backup_error(f, source, target, bus_opts("job-id", g_variant_new_string(long_id), NULL), ERR_INVALID_JOB_ID,
                            NULL);

        /* Jobs that do not exist. */
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(s)", "ghost"), ERR_NO_SUCH_JOB);
        g_assert_cmpstr(m, ==, "Job not found");
        g_free(bus_call_error(f, MANAGER_PATH "/job/ghost", JOB_IFACE, "Pause", NULL,
                              "org.freedesktop.DBus.Error.UnknownObject"));

        /* Commit and stream work on qcow2 images, which a raw image is not. */
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Commit",
                           g_variant_new("(s@a{sv})", source, g_variant_new("a{sv}", NULL)), ERR_IMAGE);
        g_autofree char *m5 = g_strdup_printf("Image '%s' is not a qcow2 image", source);
        g_assert_cmpstr(m, ==, m5);
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Stream",
                           g_variant_new("(s@a{sv})", source, bus_opts("top", g_variant_new_string("/x"), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Unknown option 'top' for a stream job");

        /* Nothing of all this left a job or a file behind. */
        g_autoptr(GVariant) jobs = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Jobs");
        g_assert_cmpuint(g_variant_get_uint32(jobs), ==, 0);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        g_assert_cmpstr(f->statuses->str, ==, "");
        assert_alive(f);
}

/* ---- commit and stream ----------------------------------------------------------------------- */

/* Runs a shell command line in the test's directory; it must succeed. */
static void sh(BusFixture *f, const char *cmdline) {
        const char *argv[] = { "sh", "-c", cmdline, NULL };
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        int status = -1;

        g_assert_true(g_spawn_sync(f->dir, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error));
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s failed: %s%s", cmdline, out, err);
}

/* base.qcow2 <- mid.qcow2 <- top.qcow2, and flat.raw: what top reads now. */
static void make_chain(BusFixture *f) {
        sh(f, "qemu-img create -q -f qcow2 base.qcow2 8M && "
              "qemu-io -f qcow2 -c 'write -P 1 0 6M' base.qcow2 >/dev/null && "
              "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
              "qemu-io -f qcow2 -c 'write -P 2 1M 2M' -c 'write -z 4M 1M' mid.qcow2 >/dev/null && "
              "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
              "qemu-io -f qcow2 -c 'write -P 3 2M 64k' top.qcow2 >/dev/null && "
              "qemu-img convert -O raw top.qcow2 flat.raw");
}

static void test_stream(BusFixture *f, gconstpointer data) {
        g_autofree char *top = bus_fixture_path(f, "top.qcow2"), *base = bus_fixture_path(f, "base.qcow2");
        g_autoptr(GVariant) reply = NULL;

        make_chain(f);
        reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "Stream",
                         g_variant_new("(s@a{sv})", top, bus_opts("base", g_variant_new_string(base), NULL)), "(o)");
        bus_wait_for_status(f, "stream0", "null");
        g_assert_cmpstr(f->statuses->str, ==, "stream0:created stream0:running stream0:waiting stream0:pending "
                                              "stream0:concluded stream0:null ");
        /* The chain reads the same, and mid is out of it. */
        sh(f, "qemu-img compare -U top.qcow2 flat.raw && "
              "qemu-img info -U --backing-chain top.qcow2 | grep -q 'backing file: .*base.qcow2' && "
              "! qemu-img info -U --backing-chain top.qcow2 | grep -q mid.qcow2");
}

static void test_commit_active(BusFixture *f, gconstpointer data) {
        g_autofree char *top = bus_fixture_path(f, "top.qcow2");
        g_autoptr(GVariant) reply = NULL;
        const char *path;

        make_chain(f);
        reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "Commit",
                         g_variant_new("(s@a{sv})", top, g_variant_new("a{sv}", NULL)), "(o)");
        g_variant_get(reply, "(&o)", &path);
        bus_wait_for_status(f, "commit0", "ready");
        bus_job_call(f, path, "Complete");
        bus_wait_for_status(f, "commit0", "null");
        g_assert_cmpstr(f->statuses->str, ==, "commit0:created commit0:running commit0:ready commit0:waiting "
                                              "commit0:pending commit0:concluded commit0:null ");
        /* The chain reads the same; base alone now does too; top is empty and checks clean. */
        sh(f, "qemu-img compare -U top.qcow2 flat.raw && qemu-img compare -U base.qcow2 flat.raw && "
              "qemu-img check -U top.qcow2 >/dev/null && qemu-img check -U base.qcow2 >/dev/null");

        /* A top that is not in the chain (nothing is looked up: a name the chain does not hold
         * is not in it, whether or not it exists). */
        g_autofree char *m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Commit",
                                            g_variant_new("(s@a{sv})", top, bus_opts("top", g_variant_new_string("/nowhere"), NULL)),
                                            "org.freedesktop.DBus.Error.InvalidArgs");
        g_assert_nonnull(strstr(m, "/nowhere"));
}

/* ---- transactions --------------------------------------------------------------------------- */

static GVariant *backup_action(const char *source, const char *target, GVariant *options) {
        return g_variant_new("(sss@a{sv})", "backup", source, target, options ?: g_variant_new("a{sv}", NULL));
}

static void test_transaction_grouped(BusFixture *f, gconstpointer data) {
        g_autofree char *s1 = bus_fixture_path(f, "s1.img"), *s2 = bus_fixture_path(f, "s2.img");
        g_autofree char *t1 = bus_fixture_path(f, "t1.img"), *t2 = bus_fixture_path(f, "t2.img");
        GVariantBuilder actions;
        g_auto(GStrv) paths = NULL;

        bus_make_file(s1, 2 * MiB);
        bus_make_file(s2, 6 * MiB);
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add_value(&actions, backup_action(s1, t1, bus_opts("job-id", g_variant_new_string("one"), NULL)));
        g_variant_builder_add_value(&actions, backup_action(s2, t2, bus_opts("job-id", g_variant_new_string("two"),
                                                                         "auto-finalize", g_variant_new_boolean(FALSE), NULL)));
        paths = bus_transaction_grouped(f, g_variant_builder_end(&actions));
        g_assert_cmpuint(g_strv_length((char **) paths), ==, 2);
        g_assert_cmpstr(paths[0], ==, MANAGER_PATH "/job/one");
        g_assert_cmpstr(paths[1], ==, MANAGER_PATH "/job/two");

        g_autofree char *txn1 = bus_get_string(f, paths[0], "Transaction"), *txn2 = bus_get_string(f, paths[1], "Transaction");
        g_assert_cmpstr(txn1, !=, "");
        g_assert_cmpstr(txn1, ==, txn2);

        /* "two" wants a manual finalize, which holds "one" in pending too. */
        bus_wait_for_status(f, "one", "pending");
        bus_wait_for_status(f, "two", "pending");
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
        bus_job_call(f, paths[0], "Finalize");
        bus_wait_for_status(f, "one", "null");
        bus_wait_for_status(f, "two", "null");
        bus_assert_same_file(s1, t1);
        bus_assert_same_file(s2, t2);
        /* Each waits once done, and when the last is done, all go pending together (in the
         * transaction's order, newest first); which of the two finishes first is up to the
         * disk and the scheduler. */
        g_assert_nonnull(strstr(f->statuses->str, "one:waiting "));
        g_assert_nonnull(strstr(f->statuses->str, "two:waiting "));
        g_assert_true(strstr(f->statuses->str, "one:waiting two:pending one:pending ") ||
                      strstr(f->statuses->str, "two:waiting two:pending one:pending "));
}

static void test_transaction_all_or_nothing(BusFixture *f, gconstpointer data) {
        g_autofree char *s = bus_fixture_path(f, "s.img"), *t1 = bus_fixture_path(f, "t1.img");
        g_autofree char *t2 = bus_fixture_path(f, "t2.img"), *m = NULL;
        GVariantBuilder actions;

        bus_make_file(s, MiB);
        bus_make_file(t2, 1);

        /* The second target exists: neither job is created, no file appears. */
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add_value(&actions, backup_action(s, t1, NULL));
        g_variant_builder_add_value(&actions, backup_action(s, t2, NULL));
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                           g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions), g_variant_new("a{sv}", NULL)),
                           ERR_IMAGE);
        g_autofree char *expected = g_strdup_printf("Target '%s' already exists", t2);
        g_assert_cmpstr(m, ==, expected);
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));

        /* Two actions with one id: refused before anything is opened. */
        g_free(m);
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add_value(&actions, backup_action(s, t1, bus_opts("job-id", g_variant_new_string("x"), NULL)));
        g_variant_builder_add_value(&actions, backup_action(s, t1, bus_opts("job-id", g_variant_new_string("x"), NULL)));
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                           g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions), g_variant_new("a{sv}", NULL)),
                           ERR_JOB_EXISTS);
        g_assert_cmpstr(m, ==, "Job ID 'x' already in use");

        /* Only backups take part in transactions; properties are checked too. */
        g_free(m);
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "mirror", s, t1, g_variant_new("a{sv}", NULL));
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                           g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions), g_variant_new("a{sv}", NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Action type 'mirror' cannot be part of a transaction: only 'backup' can");
        g_free(m);
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add_value(&actions, backup_action(s, t1, NULL));
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                           g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions),
                                         bus_opts("completion-mode", g_variant_new_string("eventually"), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Property 'completion-mode' must be individual or grouped, not 'eventually'");

        g_assert_cmpstr(f->statuses->str, ==, "");
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
}

static void test_transaction_grouped_cancel(BusFixture *f, gconstpointer data) {
        g_autofree char *s = bus_fixture_path(f, "s.img"), *t1 = bus_fixture_path(f, "t1.img"), *t2 = bus_fixture_path(f, "t2.img");
        g_auto(GStrv) paths = NULL;
        GVariantBuilder actions;

        bus_make_file(s, 8 * MiB);
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add_value(&actions, backup_action(s, t1, bus_opts("job-id", g_variant_new_string("fast"), NULL)));
        g_variant_builder_add_value(&actions, backup_action(s, t2, bus_opts("job-id", g_variant_new_string("slow"), "speed",
                                                                        g_variant_new_uint64(MiB), NULL)));
        paths = bus_transaction_grouped(f, g_variant_builder_end(&actions));

        /* "fast" is done and waits; cancelling "slow" aborts both. */
        bus_wait_for_status(f, "fast", "waiting");
        bus_job_call(f, paths[1], "Cancel");
        bus_wait_for_status(f, "fast", "null");
        bus_wait_for_status(f, "slow", "null");
        g_assert_nonnull(strstr(f->statuses->str, "fast:aborting"));
        g_assert_nonnull(strstr(f->statuses->str, "slow:aborting"));
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));
}

/* ---- the progress signal budget ------------------------------------------------------------ */

static void test_signal_budget(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "big.img"), *target = bus_fixture_path(f, "big-copy.img");
        g_autofree char *path = NULL;
        guint64 size = 1024 * MiB;
        const char *env = g_getenv("BLOCKJOBD_TEST_BIG_MIB");

        if (env)
                size = g_ascii_strtoull(env, NULL, 10) * MiB;
        bus_make_file(source, size);

        gint64 start = g_get_monotonic_time();
        path = bus_backup(f, source, target, NULL);
        bus_wait_for_status(f, "backup0", "null");
        double life = (g_get_monotonic_time() - start) / 1e6;

        /* At most one CurrentProgress per 100 ms, the first one included, plus the final one.
         * Only the count is checked, over the job's whole life as the client saw it (from
         * before the creation call to after the job is gone), which holds every signal however
         * late each was delivered: gaps between two signals, timed when the client reads them,
         * shrink whenever the client is descheduled while one is in flight, so they would test
         * the machine's load rather than the daemon. */
        guint n = f->progress_times->len;
        g_test_message("%.2f s, %u PropertiesChanged with CurrentProgress", life, n);
        g_assert_cmpuint(n, >=, 1);
        g_assert_cmpuint(n, <=, (guint) (10 * life) + 2);
        g_unlink(target);
}

/* ---- sd_notify ------------------------------------------------------------------------------ */

typedef struct NotifyFixture {
        BusFixture bus;
        GSocket *socket;
        GString *messages;
} NotifyFixture;

static void notify_setup(NotifyFixture *n, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GSocketAddress) address = NULL;
        g_autofree char *path = NULL;
        BusFixture *f = &n->bus;

        bus_fixture_init(f);
        n->messages = g_string_new(NULL);

        path = bus_fixture_path(f, "notify");
        n->socket = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_DEFAULT, &error);
        g_assert_no_error(error);
        address = g_unix_socket_address_new(path);
        g_assert_true(g_socket_bind(n->socket, address, TRUE, &error));
        g_socket_set_blocking(n->socket, FALSE);

        bus_fixture_start_bus(f, NULL);
        g_setenv("NOTIFY_SOCKET", path, TRUE);
        bus_fixture_start_daemon(f, "--idle-timeout=0");
        g_unsetenv("NOTIFY_SOCKET");
}

static void notify_teardown(NotifyFixture *n, gconstpointer data) {
        bus_fixture_teardown(&n->bus, data);
        g_object_unref(n->socket);
        g_string_free(n->messages, TRUE);
}

static void notify_read(NotifyFixture *n) {
        char buf[4096];
        gssize k;

        while ((k = g_socket_receive(n->socket, buf, sizeof(buf) - 1, NULL, NULL)) > 0) {
                buf[k] = 0;
                g_string_append_printf(n->messages, "%s\n", buf);
        }
}

static void test_sd_notify(NotifyFixture *n, gconstpointer data) {
        BusFixture *f = &n->bus;
        g_autofree char *source = bus_fixture_path(f, "s.img"), *target = bus_fixture_path(f, "t.img");
        g_autofree char *path = NULL;

        /* The name comes first, READY=1 right after it. */
        for (int i = 0; n->messages->len == 0; i++) {
                g_assert_cmpint(i, <, 1000);
                bus_iterate_for(f, 10 * 1000);
                notify_read(n);
        }
        g_assert_true(g_str_has_prefix(n->messages->str, "READY=1\nSTATUS=No jobs.\n"));

        bus_make_file(source, 4 * MiB);
        path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(MiB), NULL));
        bus_wait_for_status(f, "backup0", "running");
        bus_iterate_for(f, 100 * 1000);
        notify_read(n);
        g_assert_nonnull(strstr(n->messages->str, "STATUS=1 job: 1 running\n"));

        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, "backup0", "paused");
        bus_iterate_for(f, 100 * 1000);
        notify_read(n);
        g_assert_true(g_str_has_suffix(n->messages->str, "STATUS=1 job: 1 paused\n"));
        bus_job_call(f, path, "Cancel");
        bus_wait_for_status(f, "backup0", "null");
        bus_iterate_for(f, 100 * 1000);
        notify_read(n);
        g_assert_true(g_str_has_suffix(n->messages->str, "STATUS=No jobs.\n"));
}

/* The children of 'parent': with 'servers', those whose command line is a blockjobd-opener
 * server's; else all of them. */
static GArray *opener_children(pid_t parent, gboolean servers) {
        GArray *pids = bus_process_children(parent);

        for (guint i = pids->len; servers && i-- > 0;) {
                pid_t pid = g_array_index(pids, pid_t, i);
                g_autofree char *cmdline_file = g_strdup_printf("/proc/%d/cmdline", (int) pid);
                g_autofree char *cmdline = NULL;
                gsize len = 0;
                const char *argv[5] = {};
                size_t n = 0;

                if (g_file_get_contents(cmdline_file, &cmdline, &len, NULL))
                        for (gsize k = 0; k < len && n < G_N_ELEMENTS(argv); k += strlen(cmdline + k) + 1)
                                argv[n++] = cmdline + k;
                if (!(n == 4 && g_str_equal(argv[0], "blockjobd-opener") && g_str_equal(argv[3], "--serve")))
                        g_array_remove_index(pids, i);
        }
        return pids;
}

static void wait_for_opener_servers(BusFixture *f, guint n, const char *what) {
        for (gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;;) {
                g_autoptr(GArray) servers = opener_children(bus_daemon_pid(f), TRUE);
                if (servers->len == n)
                        return;
                if (g_get_monotonic_time() > end)
                        g_error("%u opener servers after 20 s, not %u (%s)", servers->len, n, what);
                bus_iterate_for(f, 20 * 1000);
        }
}

/* What 'server' forked is gone within 10 s of 'what'. */
static void wait_for_no_children(BusFixture *f, pid_t server, const char *what) {
        for (gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;;) {
                g_autoptr(GArray) children = opener_children(server, FALSE);
                if (children->len == 0)
                        return;
                if (g_get_monotonic_time() > end)
                        g_error("%u processes of the opener server still there 10 s after %s", children->len, what);
                bus_iterate_for(f, 20 * 1000);
        }
}

/* A caller's creations go to one opener server, which forks a process for each that is gone once
 * the creation is answered (it ran as the caller; the daemon kills it). A server that died is
 * replaced by the next creation; one that is not used goes after 10 s. */
static void test_opener_server(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "src.img");
        pid_t server = 0;

        bus_make_file(source, MiB);
        for (unsigned i = 0; i < 3; i++) {
                g_autofree char *target = g_strdup_printf("%s/t%u.img", f->dir, i);
                g_autofree char *job = bus_backup(f, source, target, NULL);
                g_autoptr(GArray) servers = opener_children(bus_daemon_pid(f), TRUE);

                g_assert_cmpuint(servers->len, ==, 1);
                if (i == 0)
                        server = g_array_index(servers, pid_t, 0);
                g_assert_cmpint(g_array_index(servers, pid_t, 0), ==, server);
        }
        wait_for_no_children(f, server, "their creations");

        /* A creation of several files whose first fails at once: the others' requests end
         * unanswered, and what the server forked for them goes too (killed, or gone before it
         * became the caller). */
        {
                g_autofree char *missing = bus_fixture_path(f, "missing.img"), *m = NULL;
                GVariantBuilder actions;

                g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
                g_autofree char *m0 = bus_fixture_path(f, "m0.img");
                g_variant_builder_add_value(&actions, backup_action(missing, m0, NULL));
                for (unsigned i = 1; i < 8; i++) {
                        g_autofree char *target = g_strdup_printf("%s/m%u.img", f->dir, i);
                        g_variant_builder_add_value(&actions, backup_action(source, target, NULL));
                }
                m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                                   g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions),
                                                 g_variant_new("a{sv}", NULL)),
                                   ERR_IMAGE);
                g_assert_nonnull(strstr(m, "missing.img"));
        }
        wait_for_no_children(f, server, "a failed transaction");

        g_assert_cmpint(kill(server, SIGKILL), ==, 0);
        /* Collected by the daemon (before that, its descriptors may still be open: a request
         * sent to it then ends unanswered). */
        for (gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC; kill(server, 0) == 0;) {
                if (g_get_monotonic_time() > end)
                        g_error("the killed opener server %d not collected after 20 s", (int) server);
                bus_iterate_for(f, 20 * 1000);
        }
        wait_for_opener_servers(f, 0, "the killed one collected");
        {
                g_autofree char *target = g_strdup_printf("%s/after-kill.img", f->dir);
                g_autofree char *job = bus_backup(f, source, target, NULL);
                g_autoptr(GArray) servers = opener_children(bus_daemon_pid(f), TRUE);
                g_assert_cmpuint(servers->len, ==, 1);
                g_assert_cmpint(g_array_index(servers, pid_t, 0), !=, server);
        }

        /* 10 s unused. */
        wait_for_opener_servers(f, 0, "the idle one retired");
}

/* ---- activation, idle exit, SIGTERM --------------------------------------------------------- */

static void activation_setup(BusFixture *f, gconstpointer data) {
        bus_fixture_init(f);
        bus_fixture_start_bus(f, "--idle-timeout=1");
}

static void test_activation_and_idle_exit(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "s.img"), *target = bus_fixture_path(f, "t.img");
        g_autofree char *path = NULL;

        g_assert_false(bus_name_has_owner(f));

        /* The first call starts the daemon. */
        g_autoptr(GVariant) version = bus_get_property(f, MANAGER_PATH, MANAGER_IFACE, "Version");
        g_assert_true(bus_name_has_owner(f));

        /* Idle for its timeout of 1 s: it goes. */
        bus_wait_for_name(f, false);

        /* Activated again by a job, it stays while the job exists, concluded or not. */
        bus_make_file(source, MiB);
        path = bus_backup(f, source, target, bus_opts("auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        bus_wait_for_status(f, "backup0", "concluded");
        bus_iterate_for(f, 2500 * 1000);
        g_assert_true(bus_name_has_owner(f));

        /* Dismissed, the daemon is idle and exits on its own. */
        bus_job_call(f, path, "Dismiss");
        bus_wait_for_name(f, false);
        bus_assert_same_file(source, target);
}

static void test_sigterm_cancels_jobs(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "s.img"), *target = bus_fixture_path(f, "t.img");
        g_autoptr(GError) error = NULL;
        g_autofree char *path = NULL;

        bus_make_file(source, 16 * MiB);
        path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(MiB), NULL));
        bus_wait_for_status(f, "backup0", "running");

        g_subprocess_send_signal(f->daemon, SIGTERM);
        bus_wait_for_status(f, "backup0", "null");
        g_assert_true(g_subprocess_wait(f->daemon, NULL, &error));
        g_assert_true(g_subprocess_get_if_exited(f->daemon));
        g_assert_cmpint(g_subprocess_get_exit_status(f->daemon), ==, 0);
        g_clear_object(&f->daemon);

        g_assert_nonnull(strstr(f->statuses->str, "backup0:aborting backup0:concluded backup0:null"));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        /* Nothing left in the directory but the source and the test's own files. */
        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        for (const char *name; (name = g_dir_read_name(d));)
                g_assert_true(g_str_equal(name, "s.img") || g_str_equal(name, "bus") || g_str_equal(name, "bus.conf") ||
                              g_str_equal(name, "services") || g_str_equal(name, "daemon.log"));
}

/* ---- change signals follow the reply ------------------------------------------------------- */

/* What reaches the connection, in the order it arrives (GDBus's worker thread runs filters in
 * that order): "reply:<serial>" for every method return, "status:<status>" for the job's
 * StatusChanged, "removed" for its InterfacesRemoved. */
typedef struct Trace {
        GMutex lock;
        GString *s;
        const char *path;
} Trace;

static GDBusMessage *trace_filter(GDBusConnection *c, GDBusMessage *m, gboolean incoming, gpointer userdata) {
        Trace *t = userdata;
        GVariant *body = g_dbus_message_get_body(m);
        const char *member = g_dbus_message_get_member(m), *path = NULL, *status = NULL;

        if (!incoming)
                return m;
        g_mutex_lock(&t->lock);
        if (g_dbus_message_get_message_type(m) == G_DBUS_MESSAGE_TYPE_METHOD_RETURN)
                g_string_append_printf(t->s, "reply:%u ", g_dbus_message_get_reply_serial(m));
        else if (g_dbus_message_get_message_type(m) == G_DBUS_MESSAGE_TYPE_SIGNAL && body) {
                if (g_strcmp0(member, "StatusChanged") == 0 && g_strcmp0(g_dbus_message_get_path(m), t->path) == 0) {
                        g_variant_get(body, "(&s&s)", NULL, &status);
                        g_string_append_printf(t->s, "status:%s ", status);
                } else if (g_strcmp0(member, "InterfacesRemoved") == 0) {
                        g_variant_get(body, "(&o@as)", &path, NULL);
                        if (g_str_equal(path, t->path))
                                g_string_append(t->s, "removed ");
                }
        }
        g_mutex_unlock(&t->lock);
        return m;
}

static char *trace_get(Trace *t) {
        g_mutex_lock(&t->lock);
        char *s = g_strdup(t->s->str);
        g_mutex_unlock(&t->lock);
        return s;
}

/* Calls a method and returns the serial of the call, once it is answered. */
static guint32 call_serial(BusFixture *f, const char *path, const char *method) {
        g_autoptr(GDBusMessage) call = g_dbus_message_new_method_call(BUS_NAME, path, JOB_IFACE, method);
        g_autoptr(GDBusMessage) reply = NULL;
        g_autoptr(GError) error = NULL;
        guint32 serial = 0;

        reply = g_dbus_connection_send_message_with_reply_sync(f->conn, call, G_DBUS_SEND_MESSAGE_FLAGS_NONE, 10000,
                                                               &serial, NULL, &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_dbus_message_get_message_type(reply), ==, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
        return serial;
}

/* As systemd's units: a verb's reply goes first, its change signals follow in the order of the
 * changes, and a Get after the reply reads the new value already. */
static void test_signals_follow_reply(BusFixture *f, gconstpointer data) {
        g_autofree char *source = bus_fixture_path(f, "source.img"), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL, *status = NULL, *pause_reply = NULL, *cancel_trace = NULL, *trace = NULL;
        Trace t = { .s = g_string_new(NULL) };
        unsigned removed;
        gsize mark;
        guint filter;

        bus_make_file(source, 4 * MiB);
        path = bus_backup(f, source, target, bus_opts("speed", g_variant_new_uint64(1), NULL));
        bus_wait_for_status(f, "backup0", "running");
        g_mutex_init(&t.lock);
        t.path = path;
        filter = g_dbus_connection_add_filter(f->conn, trace_filter, &t, NULL);

        pause_reply = g_strdup_printf("reply:%u status:paused ", call_serial(f, path, "Pause"));
        status = bus_get_string(f, path, "Status");
        g_assert_cmpstr(status, ==, "paused");
        bus_wait_for_status(f, "backup0", "paused");
        trace = trace_get(&t);
        g_assert_nonnull(strstr(trace, pause_reply));

        /* Every status of the cancel (which resumes the job first, as QEMU's does), in order,
         * "null" before the object goes. */
        mark = f->statuses->len;
        removed = f->n_removed;
        cancel_trace = g_strdup_printf("reply:%u status:running status:aborting status:concluded status:null removed ",
                                       call_serial(f, path, "Cancel"));
        bus_wait_for_status_since(f, mark, "backup0", "null");
        while (f->n_removed == removed)
                g_main_context_iteration(NULL, TRUE);
        g_assert_cmpstr(f->statuses->str + mark, ==, "backup0:running backup0:aborting backup0:concluded backup0:null ");
        g_free(trace);
        trace = trace_get(&t);
        g_assert_true(g_str_has_suffix(trace, cancel_trace));

        g_dbus_connection_remove_filter(f->conn, filter);
        g_string_free(t.s, TRUE);
        g_mutex_clear(&t.lock);
}

#define BUS_TEST(path, fn) g_test_add(path, BusFixture, NULL, bus_fixture_setup, fn, bus_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        BUS_TEST("/bus/introspection-matches-xml", test_introspection_matches_xml);
        BUS_TEST("/bus/manager-properties", test_manager_properties);
        BUS_TEST("/bus/many-jobs", test_many_jobs);
        BUS_TEST("/bus/managed-objects", test_managed_objects_match_get_all);
        BUS_TEST("/bus/backup-lifecycle", test_backup_lifecycle);
        BUS_TEST("/bus/verbs", test_verbs);
        BUS_TEST("/bus/signals-follow-reply", test_signals_follow_reply);
        BUS_TEST("/bus/error-text", test_error_texts_reach_clients);
        BUS_TEST("/bus/every-verb", test_every_verb);
        BUS_TEST("/bus/io-error-stop", test_io_error_stop);
        BUS_TEST("/bus/opener-server", test_opener_server);
        BUS_TEST("/bus/stream", test_stream);
        BUS_TEST("/bus/commit-active", test_commit_active);
        BUS_TEST("/bus/mirror-follows-writes", test_mirror_follows_writes);
        BUS_TEST("/bus/bad-calls", test_bad_calls);
        BUS_TEST("/bus/transaction/grouped", test_transaction_grouped);
        BUS_TEST("/bus/transaction/all-or-nothing", test_transaction_all_or_nothing);
        BUS_TEST("/bus/transaction/grouped-cancel", test_transaction_grouped_cancel);
        BUS_TEST("/bus/signal-budget", test_signal_budget);
        BUS_TEST("/bus/sigterm-cancels-jobs", test_sigterm_cancels_jobs);
        g_test_add("/bus/sd-notify", NotifyFixture, NULL, notify_setup, test_sd_notify, notify_teardown);
        g_test_add("/bus/activation-and-idle-exit", BusFixture, NULL, activation_setup, test_activation_and_idle_exit,
                   bus_fixture_teardown);

        return g_test_run();
}
