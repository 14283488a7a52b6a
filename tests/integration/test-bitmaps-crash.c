/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* kill -9 of the daemon while it changes bitmaps (AddBitmap, RemoveBitmap, ClearBitmap,
 * MergeBitmaps, EnableBitmap, DisableBitmap), against QEMU as the oracle: afterwards
 * `qemu-img check` finds no corruption, and every bitmap is exactly as it was before the call or
 * exactly as the call makes it (flags as `qemu-img info` lists them, contents as qemu-nbd exports
 * them), or in use, which QEMU distrusts; never one QEMU trusts with other contents. A daemon
 * started again then serves the same call.
 *
 * The image is one where a change takes a while: 512-byte clusters and 512-byte granules, so
 * that a bitmap's data spans a thousand clusters and its table sixteen, dirtied all over. Each
 * round starts from a copy of the same image and kills the daemon at a point of its own, some
 * drawn by a seeded generator (all logged): at the first write to the image that inotify reports,
 * at a random one of the writes the whole call makes, once the call is answered, or at a random
 * time (from before the work starts to after the answer). That kills landed on both sides, and
 * some while the change was being written (after a write, before the answer), is checked, not
 * assumed. */

#include <glib/gstdio.h>
#include <inttypes.h>
#include <signal.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-fixture.h"
#include "qemu-oracle.h"

#define MiB (UINT64_C(1) << 20)
#define DISK_SIZE (2048 * MiB)
#define REGION (2 * MiB)                /* what one data cluster of a 512-byte-granule bitmap covers */
#define ROUNDS 4                        /* per method: see the kill points in test_kill_rounds() */

/* ---- the oracle's view of all bitmaps ------------------------------------------------------- */

typedef struct State {
        char *list;                     /* oracle_bitmap_list() */
        GHashTable *ranges;             /* name → GArray of OracleRange; none for in-use ones */
} State;

static void state_free(State *s) {
        if (!s)
                return;
        g_free(s->list);
        g_hash_table_unref(s->ranges);
        g_free(s);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(State, state_free);

static State *state_new(const char *list) {
        State *s = g_new0(State, 1);
        s->list = g_strdup(list);
        s->ranges = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_array_unref);
        return s;
}

/* "name:granularity:flags" of one bitmap in a list, or NULL. */
static char *list_entry(const char *list, const char *name) {
        g_auto(GStrv) entries = g_strsplit(list, " ", -1);
        g_autofree char *prefix = g_strconcat(name, ":", NULL);

        for (char **e = entries; *e; e++)
                if (g_str_has_prefix(*e, prefix))
                        return g_strdup(*e);
        return NULL;
}

static bool list_has(const char *list, const char *name) {
        g_autofree char *entry = list_entry(list, name);
        return entry;
}

static char **list_names(const char *list) {
        g_auto(GStrv) entries = g_strsplit(list, " ", -1);
        GPtrArray *names = g_ptr_array_new();

        for (char **e = entries; *e; e++)
                if (**e)
                        g_ptr_array_add(names, g_strndup(*e, strchr(*e, ':') - *e));
        g_ptr_array_add(names, NULL);
        return (char **) g_ptr_array_free(names, FALSE);
}

static bool entry_in_use(const char *entry) {
        return strstr(strrchr(entry, ':'), "in-use");
}

/* What QEMU sees: every bitmap's flags, and the contents of those it trusts. */
static State *oracle_state(BusFixture *f, const char *image) {
        g_autofree char *list = oracle_bitmap_list(image);
        g_auto(GStrv) names = list_names(list);
        g_autoptr(GPtrArray) trusted = g_ptr_array_new();
        State *s = g_new0(State, 1);

        for (char **n = names; *n; n++) {
                g_autofree char *entry = list_entry(list, *n);
                if (!entry_in_use(entry))
                        g_ptr_array_add(trusted, *n);
        }
        g_ptr_array_add(trusted, NULL);
        s->list = g_steal_pointer(&list);
        s->ranges = oracle_dirty_all(image, (const char *const *) trusted->pdata, f->dir);
        return s;
}

static bool ranges_equal(GArray *a, GArray *b) {
        return a && b && a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len * sizeof(OracleRange)) == 0);
}

/* Is bitmap 'name' in 'now' exactly as in 'then' (both absent counts)? */
static bool bitmap_as_in(const State *now, const State *then, const char *name) {
        g_autofree char *a = list_entry(now->list, name), *b = list_entry(then->list, name);

        if (!a || !b)
                return !a && !b;
        return g_str_equal(a, b) && ranges_equal(g_hash_table_lookup(now->ranges, name),
                                                 g_hash_table_lookup(then->ranges, name));
}

static gint range_compare(gconstpointer a, gconstpointer b) {
        const OracleRange *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

static GArray *ranges_union(GArray *a, GArray *b) {
        g_autoptr(GArray) all = g_array_new(FALSE, FALSE, sizeof(OracleRange));
        GArray *merged = g_array_new(FALSE, FALSE, sizeof(OracleRange));

        g_array_append_vals(all, a->data, a->len);
        g_array_append_vals(all, b->data, b->len);
        g_array_sort(all, range_compare);
        for (guint i = 0; i < all->len; i++) {
                OracleRange r = g_array_index(all, OracleRange, i);
                if (merged->len > 0) {
                        OracleRange *last = &g_array_index(merged, OracleRange, merged->len - 1);
                        if (r.start <= last->start + last->length) {
                                last->length = MAX(last->start + last->length, r.start + r.length) - last->start;
                                continue;
                        }
                }
                g_array_append_val(merged, r);
        }
        return merged;
}

/* ---- the methods, and what each makes of 'before' --------------------------------------------- */

typedef struct Method {
        const char *name;
        const char *bitmap;             /* the one it changes */
        GVariant *(*args)(const char *image);
        /* The same call once more, on an image where it is done: the error it gives, or NULL. */
        const char *again_error;
} Method;

static GVariant *add_args(const char *image) {
        return g_variant_new("(ss@a{sv})", image, "new", bus_opts("granularity", g_variant_new_uint32(512), NULL));
}
static GVariant *remove_args(const char *image) {
        return g_variant_new("(ss)", image, "a");
}
static GVariant *clear_args(const char *image) {
        return g_variant_new("(ss)", image, "a");
}
static GVariant *merge_args(const char *image) {
        return g_variant_new("(ss^as)", image, "d", (const char *const[]) { "a", "c", NULL });
}
static GVariant *enable_args(const char *image) {
        return g_variant_new("(ss)", image, "d");
}
static GVariant *disable_args(const char *image) {
        return g_variant_new("(ss)", image, "a");
}

static const Method methods[] = {
        { "AddBitmap", "new", add_args, "Bitmap already exists: new" },
        { "RemoveBitmap", "a", remove_args, "Dirty bitmap 'a' not found" },
        { "ClearBitmap", "a", clear_args, NULL },
        { "MergeBitmaps", "d", merge_args, NULL },
        { "EnableBitmap", "d", enable_args, NULL },
        { "DisableBitmap", "a", disable_args, NULL },
};

/* 'before' changed as the method says, QEMU's semantics: the 'after' a finished call must leave. */
static State *expected_after(const Method *m, const State *before) {
        g_autoptr(GString) list = g_string_new(NULL);
        g_auto(GStrv) names = list_names(before->list);
        State *s;

        for (char **n = names; *n; n++) {
                g_autofree char *entry = list_entry(before->list, *n);
                if (g_str_equal(m->name, "RemoveBitmap") && g_str_equal(*n, "a"))
                        continue;
                if (g_str_equal(m->name, "EnableBitmap") && g_str_equal(*n, "d"))
                        g_string_append_printf(list, "%s%s:512:auto", list->len ? " " : "", *n);
                else if (g_str_equal(m->name, "DisableBitmap") && g_str_equal(*n, "a"))
                        g_string_append_printf(list, "%s%s:512:", list->len ? " " : "", *n);
                else
                        g_string_append_printf(list, "%s%s", list->len ? " " : "", entry);
        }
        if (g_str_equal(m->name, "AddBitmap"))
                g_string_append(list, " new:512:auto");
        s = state_new(list->str);
        for (char **n = names; *n; n++) {
                GArray *r = g_hash_table_lookup(before->ranges, *n);
                if (g_str_equal(m->name, "RemoveBitmap") && g_str_equal(*n, "a"))
                        continue;
                if (g_str_equal(m->name, "ClearBitmap") && g_str_equal(*n, "a"))
                        r = g_array_new(FALSE, FALSE, sizeof(OracleRange));
                else if (g_str_equal(m->name, "MergeBitmaps") && g_str_equal(*n, "d")) {
                        g_autoptr(GArray) ac = ranges_union(g_hash_table_lookup(before->ranges, "a"),
                                                            g_hash_table_lookup(before->ranges, "c"));
                        r = ranges_union(r, ac);
                } else
                        r = g_array_copy(r);
                g_hash_table_insert(s->ranges, g_strdup(*n), r);
        }
        if (g_str_equal(m->name, "AddBitmap"))
                g_hash_table_insert(s->ranges, g_strdup("new"), g_array_new(FALSE, FALSE, sizeof(OracleRange)));
        return s;
}

/* ---- the image --------------------------------------------------------------------------------- */

/* 'n' writes of 512 bytes, one in each 2 MiB region at an offset of its own, as one qemu-io. */
static void scattered_writes(const char *image, unsigned n, unsigned salt) {
        g_autoptr(GString) cmd = g_string_new("qemu-io -f qcow2");

        for (unsigned i = 0; i < n; i++) {
                uint64_t offset = (uint64_t) i * REGION + (uint64_t) ((i * 7919u + salt * 104729u) % (REGION / 512)) * 512;
                g_string_append_printf(cmd, " -c 'write -P 0x%02x %" PRIu64 " 512'", (i + salt) & 0xff, offset);
        }
        g_string_append_printf(cmd, " %s", image);
        g_free(oracle_run("%s", cmd->str));
}

/* a (512 B, enabled), c (4 KiB, enabled), d (512 B, disabled after the first writes), dirty in
 * every 2 MiB region: every data cluster of a and d holds some bits set and some clear. */
static void make_template(const char *image) {
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512 %s %" PRIu64, image, DISK_SIZE));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s a", image));
        g_free(oracle_run("qemu-img bitmap --add -g 4096 %s c", image));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s d", image));
        scattered_writes(image, DISK_SIZE / REGION, 1);
        g_free(oracle_run("qemu-img bitmap --disable %s d", image));
        scattered_writes(image, DISK_SIZE / REGION, 2);
}

/* qemu-img check: clean, or leaks only (exit 3): a kill between allocating clusters (their
 * counts raised, durably, before anything names them) and the header that names them, or between
 * the header that drops the old ones and freeing them, leaves clusters counted that nothing
 * references. They waste space and nothing else (QEMU leaves the same after a crash; `qemu-img
 * check -r leaks` takes them back). Anything else (exit 2: corruption) fails. Returns whether
 * there were leaks. */
static bool assert_no_corruption(const char *image) {
        g_autofree char *out = NULL, *err = NULL;
        int status = oracle_try(&out, &err, "qemu-img check %s", image);

        if (status != 0 && status != 3)
                g_error("qemu-img check %s: exit %d: %s%s", image, status, out, err);
        return status == 3;
}

/* ---- the call, and the kill ---------------------------------------------------------------------- */

/* Kills the daemon at the chosen point: once so many writes to the image were seen (inotify's
 * IN_MODIFY, one per write, though consecutive ones not yet read merge into one: a count is a
 * lower bound), or so long after the call, or when the call is answered, whichever comes first. */
typedef struct Killer {
        pid_t pid;                      /* 0: count only, kill nothing */
        int inotify_fd;
        unsigned kill_at_write;         /* 0: not by writes */
        gint64 start, delay_us;         /* by time, if delay_us >= 0 */
        gint answered;                  /* set by the main thread */
        unsigned writes;                /* seen when the kill came */
        gint64 killed_after_us;
} Killer;

static void killer_init(Killer *k, const char *image, pid_t pid) {
        *k = (Killer) { .pid = pid, .delay_us = -1 };
        k->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        g_assert_cmpint(k->inotify_fd, >=, 0);
        g_assert_cmpint(inotify_add_watch(k->inotify_fd, image, IN_MODIFY), >=, 0);
}

static gpointer killer_thread(gpointer data) {
        Killer *k = data;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

        for (;;) {
                struct pollfd p = { .fd = k->inotify_fd, .events = POLLIN };
                gint64 now;
                ssize_t n;

                (void) poll(&p, 1, 1);
                while ((n = read(k->inotify_fd, buf, sizeof(buf))) > 0)
                        for (char *e = buf; e < buf + n; e += sizeof(struct inotify_event) + ((struct inotify_event *) e)->len)
                                k->writes++;
                now = g_get_monotonic_time();
                if (g_atomic_int_get(&k->answered) || (k->kill_at_write > 0 && k->writes >= k->kill_at_write) ||
                    (k->delay_us >= 0 && now - k->start >= k->delay_us)) {
                        if (k->pid > 0)
                                g_assert_cmpint(kill(k->pid, SIGKILL), ==, 0);
                        k->killed_after_us = now - k->start;
                        return NULL;
                }
        }
}

static void killer_done(Killer *k) {
        close(k->inotify_fd);
}

typedef struct Reply {
        bool done;
        GVariant *result;
        GError *error;
} Reply;

static void on_reply(GObject *source, GAsyncResult *res, gpointer data) {
        Reply *r = data;
        r->result = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), res, &r->error);
        r->done = true;
}

static void call_async(BusFixture *f, const Method *m, const char *image, Reply *reply) {
        g_dbus_connection_call(f->conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, m->name, m->args(image), NULL,
                               G_DBUS_CALL_FLAGS_NONE, 60000, NULL, on_reply, reply);
}

static void wait_reply(Reply *reply) {
        while (!reply->done)
                g_main_context_iteration(NULL, TRUE);
}

static void reply_clear(Reply *r) {
        g_clear_pointer(&r->result, g_variant_unref);
        g_clear_error(&r->error);
        r->done = false;
}

static void daemon_gone(BusFixture *f) {
        g_assert_true(g_subprocess_wait(f->daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(f->daemon));
        g_assert_cmpint(g_subprocess_get_term_sig(f->daemon), ==, SIGKILL);
        g_clear_object(&f->daemon);
        bus_wait_for_name(f, false);
}

/* ListBitmaps() flags of one bitmap, comma-separated, or NULL if it is not listed. */
static char *listed_flags(BusFixture *f, const char *image, const char *name) {
        g_autoptr(GVariant) reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", g_variant_new("(s)", image),
                                             "(a(sutas))");
        g_autoptr(GVariantIter) iter = NULL;
        const char *n;
        guint32 granularity;
        guint64 dirty;
        GVariantIter *flags;
        char *found = NULL;

        g_variant_get(reply, "(a(sutas))", &iter);
        while (g_variant_iter_next(iter, "(&sutas)", &n, &granularity, &dirty, &flags)) {
                if (g_str_equal(n, name)) {
                        g_autoptr(GString) s = g_string_new(NULL);
                        const char *flag;
                        while (g_variant_iter_next(flags, "&s", &flag))
                                g_string_append_printf(s, "%s%s", s->len ? "," : "", flag);
                        g_free(found);
                        found = g_string_free(g_steal_pointer(&s), FALSE);
                }
                g_variant_iter_free(flags);
        }
        return found;
}

/* ---- the test ----------------------------------------------------------------------------------- */

typedef struct Counts {
        unsigned before, after, in_use, leaked, mid;
} Counts;

static void test_kill_rounds(BusFixture *f, gconstpointer data) {
        g_autofree char *template = bus_fixture_path(f, "template.qcow2"), *image = bus_fixture_path(f, "disk.qcow2");
        g_autoptr(State) before = NULL;
        Counts total = {};

        make_template(template);
        g_assert_false(assert_no_corruption(template));
        before = oracle_state(f, template);
        g_test_message("before: %s", before->list);
        /* The data clusters of a and d are neither empty nor full: merged, cleared, removed, each
         * is a thousand clusters to write or free. */
        g_assert_cmpuint(((GArray *) g_hash_table_lookup(before->ranges, "a"))->len, >=, DISK_SIZE / REGION * 2 - 8);
        g_assert_cmpuint(((GArray *) g_hash_table_lookup(before->ranges, "d"))->len, >=, DISK_SIZE / REGION - 8);

        for (size_t i = 0; i < G_N_ELEMENTS(methods); i++) {
                const Method *m = &methods[i];
                g_autoptr(State) after = expected_after(m, before);
                unsigned call_writes = 0;
                gint64 call_us = 0;
                Counts c = {};
                Reply reply = {};
                GThread *thread;

                for (unsigned round = 0; round < ROUNDS; round++) {
                        g_autoptr(GRand) rand = g_rand_new_with_seed((guint32) (i * 1000 + round));
                        g_autoptr(State) now = NULL;
                        Killer k;
                        bool leaked, as_before = true, as_after = true, in_use = false;

                        g_free(oracle_run("cp --sparse=always %s %s", template, image));
                        killer_init(&k, image, bus_daemon_pid(f));
                        /* Once it is answered (after: the whole call, which must make 'after',
                         * and whose writes and time give the ranges the other kills are drawn
                         * from); at its first write (mostly before the change takes effect: the
                         * header comes last, after a sync); at a random write of those the whole
                         * call makes; at a random time up to half as long again as it took. */
                        if (round == 1)
                                k.kill_at_write = 1;
                        else if (round == 2)
                                k.kill_at_write = (unsigned) g_rand_int_range(rand, 1, (gint32) call_writes + 1);
                        else if (round == 3)
                                k.delay_us = g_rand_int_range(rand, 0, (gint32) MIN(call_us * 3 / 2 + 1, G_MAXINT32));
                        k.start = g_get_monotonic_time();
                        call_async(f, m, image, &reply);
                        thread = g_thread_new("killer", killer_thread, &k);
                        wait_reply(&reply);
                        g_atomic_int_set(&k.answered, 1);
                        g_thread_join(thread);
                        killer_done(&k);
                        daemon_gone(f);

                        leaked = assert_no_corruption(image);
                        now = oracle_state(f, image);
                        g_auto(GStrv) names = list_names(now->list), names_after = list_names(after->list);
                        for (char **n = names; *n; n++) {
                                g_autofree char *entry = list_entry(now->list, *n);
                                bool b = bitmap_as_in(now, before, *n), a = bitmap_as_in(now, after, *n);
                                if (entry_in_use(entry)) {
                                        in_use = true;
                                        continue;
                                }
                                if (!a && !b)
                                        g_error("%s round %u: bitmap %s is trusted (%s) and neither as before nor as after",
                                                m->name, round, *n, entry);
                                as_before &= b;
                                as_after &= a;
                        }
                        /* And none is gone or new but as the call does it. */
                        for (char **n = names_after; *n; n++)
                                if (!list_has(now->list, *n))
                                        as_after = false;
                        g_auto(GStrv) names_before = list_names(before->list);
                        for (char **n = names_before; *n; n++)
                                if (!list_has(now->list, *n))
                                        as_before = false;
                        g_assert_true(as_before || as_after || in_use);
                        if (round == 0) {
                                /* Answered: done, durably, and nothing left over. */
                                g_assert_no_error(reply.error);
                                if (!as_after)
                                        g_error("%s: %s, expected %s (or contents differ)", m->name, now->list, after->list);
                                g_assert_false(leaked);
                                g_assert_cmpuint(k.writes, >, 0);
                                call_writes = k.writes;
                                call_us = k.killed_after_us;
                        }

                        g_test_message("%s round %u: kill at write %u / after %" G_GINT64_FORMAT
                                       " us / when answered: killed after %" G_GINT64_FORMAT " us, %u writes seen, answered %s: %s%s%s",
                                       m->name, round, k.kill_at_write, k.delay_us, k.killed_after_us, k.writes,
                                       reply.error ? "no" : "yes", in_use ? "in-use " : "",
                                       as_before ? "before" : as_after ? "after" : "mixed", leaked ? ", leaks" : "");
                        c.before += as_before && !as_after;
                        c.after += as_after && !as_before;
                        c.in_use += in_use;
                        c.leaked += leaked;
                        /* Killed once the change had written, before it was answered. */
                        c.mid += k.writes > 0 && reply.error;
                        reply_clear(&reply);

                        /* The daemon again: the same call works, and gives 'after'. A bitmap a
                         * crash left in use is listed as such and can be removed. */
                        bus_fixture_start_daemon(f, "--idle-timeout=0");
                        for (char **n = names; *n; n++) {
                                g_autofree char *entry = list_entry(now->list, *n), *flags = NULL;
                                if (!entry_in_use(entry))
                                        continue;
                                flags = listed_flags(f, image, *n);
                                g_assert_nonnull(strstr(flags, "inconsistent"));
                                g_variant_unref(bus_call(f, MANAGER_PATH, MANAGER_IFACE, "RemoveBitmap",
                                                         g_variant_new("(ss)", image, *n), "()"));
                        }
                        if (in_use)
                                continue;
                        call_async(f, m, image, &reply);
                        wait_reply(&reply);
                        if (as_after && m->again_error) {
                                g_assert_nonnull(reply.error);
                                if (!strstr(reply.error->message, m->again_error))
                                        g_error("%s again: %s", m->name, reply.error->message);
                        } else
                                g_assert_no_error(reply.error);
                        reply_clear(&reply);
                        g_autofree char *list = oracle_bitmap_list(image);
                        g_assert_cmpstr(list, ==, after->list);
                        if (list_has(list, m->bitmap)) {
                                g_autoptr(GArray) r = oracle_dirty(image, m->bitmap, f->dir);
                                g_assert_true(ranges_equal(r, g_hash_table_lookup(after->ranges, m->bitmap)));
                        }
                        g_autofree char *flags = listed_flags(f, image, "c");
                        g_assert_cmpstr(flags, ==, "auto");
                        assert_no_corruption(image);
                }
                g_test_message("%s: %u rounds: %u before, %u after, %u killed while it wrote, %u in use, %u with leaks",
                               m->name, ROUNDS, c.before, c.after, c.mid, c.in_use, c.leaked);
                total.before += c.before;
                total.after += c.after;
                total.in_use += c.in_use;
                total.leaked += c.leaked;
                total.mid += c.mid;
        }
        g_test_message("all: %u before, %u after, %u killed while it wrote, %u in use, %u with leaks", total.before,
                       total.after, total.mid, total.in_use, total.leaked);
        if (total.mid == 0 || total.before == 0 || total.after == 0)
                g_error("every kill landed %s: nothing checked",
                        total.mid == 0 ? "outside the changes" : total.before == 0 ? "after" : "before");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return 77;
        g_test_add("/bitmaps-crash/kill-rounds", BusFixture, NULL, bus_fixture_setup, test_kill_rounds,
                   bus_fixture_teardown);
        return g_test_run();
}
