/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The Manager's bitmap methods over D-Bus, on a private bus, against qemu-img as the oracle:
 * what AddBitmap() and the others change is what `qemu-img info` then shows (and `qemu-img check`
 * finds clean); what ListBitmaps() lists is what qemu-img made and what qemu-io's writes marked;
 * every error has its D-Bus name and QEMU's text; an image a running qemu-io holds, one a job of
 * the daemon writes, and a raw image are refused. */

#include <glib/gstdio.h>
#include <signal.h>

#include "bus-fixture.h"
#include "qemu-oracle.h"

#define ERR_BITMAP "org.blockjobd.Jobs1.Error.BitmapError"
#define ERR_IN_USE "org.blockjobd.Jobs1.Error.ImageInUse"
#define ERR_IMAGE "org.blockjobd.Jobs1.Error.ImageError"
#define ERR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"

/* Runs a shell command line in the test's directory; it must succeed. */
static void sh(BusFixture *f, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void sh(BusFixture *f, const char *format, ...) {
        g_autofree char *cmdline = NULL, *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        int status = -1;
        va_list ap;

        va_start(ap, format);
        cmdline = g_strdup_vprintf(format, ap);
        va_end(ap);
        const char *argv[] = { "sh", "-c", cmdline, NULL };
        g_assert_true(g_spawn_sync(f->dir, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                                   &error));
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s failed: %s%s", cmdline, out, err);
}

static void assert_oracle(const char *image, const char *expected) {
        g_autofree char *bitmaps = oracle_bitmap_list(image);
        g_autofree char *out = NULL, *err = NULL;

        g_assert_cmpstr(bitmaps, ==, expected);
        if (oracle_try(&out, &err, "qemu-img check -U %s", image) != 0)
                g_error("qemu-img check %s: %s%s", image, out, err);
}

/* ListBitmaps() as "name:granularity:dirty:flag,flag" each, space-separated. */
static char *list_bitmaps(BusFixture *f, const char *image) {
        g_autoptr(GVariant) reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", g_variant_new("(s)", image),
                                             "(a(sutas))");
        g_autoptr(GVariantIter) iter = NULL;
        g_autoptr(GString) s = g_string_new(NULL);
        const char *name;
        guint32 granularity;
        guint64 dirty;
        GVariantIter *flags;

        g_variant_get(reply, "(a(sutas))", &iter);
        while (g_variant_iter_next(iter, "(&sutas)", &name, &granularity, &dirty, &flags)) {
                const char *flag;
                g_string_append_printf(s, "%s%s:%u:%" G_GUINT64_FORMAT ":", s->len ? " " : "", name, granularity, dirty);
                for (bool first = true; g_variant_iter_next(flags, "&s", &flag); first = false)
                        g_string_append_printf(s, "%s%s", first ? "" : ",", flag);
                g_variant_iter_free(flags);
        }
        return g_string_free(g_steal_pointer(&s), FALSE);
}

static void assert_list(BusFixture *f, const char *image, const char *expected) {
        g_autofree char *list = list_bitmaps(f, image);
        g_assert_cmpstr(list, ==, expected);
}

static void call(BusFixture *f, const char *method, GVariant *params) {
        g_variant_unref(bus_call(f, MANAGER_PATH, MANAGER_IFACE, method, params, "()"));
}

static void call_fails(BusFixture *f, const char *method, GVariant *params, const char *error_name,
                       const char *expected_message) {
        g_autofree char *m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, method, params, error_name);
        if (!strstr(m, expected_message))
                g_error("%s: '%s' does not say '%s'", method, m, expected_message);
}

static GVariant *name_args(const char *image, const char *name) {
        return g_variant_new("(ss)", image, name);
}

static GVariant *add_args(const char *image, const char *name, GVariant *options) {
        return g_variant_new("(ss@a{sv})", image, name, options ?: g_variant_new("a{sv}", NULL));
}

/* ---- each method against the oracle ---------------------------------------------------------- */

static void test_methods(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2");

        /* Bitmaps qemu-img made are listed as qemu-img info lists them; qemu-io's writes marked
         * the enabled ones. */
        sh(f, "qemu-img create -q -f qcow2 -o cluster_size=128k a.qcow2 8M && "
              "qemu-img bitmap --add a.qcow2 q0 && qemu-img bitmap --add -g 512 --disable a.qcow2 q1 && "
              "qemu-io -f qcow2 -c 'write 0 1k' -c 'write 5M 64k' a.qcow2 >/dev/null");
        assert_oracle(img, "q0:65536:auto q1:512:");
        assert_list(f, img, "q0:65536:131072:auto q1:512:0:disabled");

        /* What blockjobd adds is what qemu-img sees: the default granularity for 128 KiB
         * clusters is QEMU's 64 KiB, an explicit one as given. */
        call(f, "AddBitmap", add_args(img, "b0", NULL));
        call(f, "AddBitmap", add_args(img, "b1", bus_opts("granularity", g_variant_new_uint32(4096), "disabled",
                                                          g_variant_new_boolean(TRUE), NULL)));
        assert_oracle(img, "q0:65536:auto q1:512: b0:65536:auto b1:4096:");

        /* A QEMU writer marks what it writes in the enabled bitmaps, ours too. */
        sh(f, "qemu-io -f qcow2 -c 'write 2M 4k' a.qcow2 >/dev/null");
        assert_list(f, img, "q0:65536:196608:auto q1:512:0:disabled b0:65536:65536:auto b1:4096:0:disabled");

        call(f, "MergeBitmaps", g_variant_new("(ss^as)", img, "q1", (const char *const[]) { "q0", "b0", NULL }));
        call(f, "EnableBitmap", name_args(img, "b1"));
        call(f, "DisableBitmap", name_args(img, "q0"));
        assert_oracle(img, "q0:65536: q1:512: b0:65536:auto b1:4096:auto");
        assert_list(f, img, "q0:65536:196608:disabled q1:512:196608:disabled b0:65536:65536:auto b1:4096:0:auto");
        /* And what a disabled bitmap holds, QEMU reads: merged into an enabled one by qemu-img. */
        sh(f, "qemu-img bitmap --merge q1 a.qcow2 b1");
        assert_list(f, img, "q0:65536:196608:disabled q1:512:196608:disabled b0:65536:65536:auto b1:4096:196608:auto");

        call(f, "ClearBitmap", name_args(img, "b1"));
        call(f, "RemoveBitmap", name_args(img, "q0"));
        call(f, "RemoveBitmap", name_args(img, "b0"));
        assert_oracle(img, "q1:512: b1:4096:auto");
        assert_list(f, img, "q1:512:196608:disabled b1:4096:0:auto");

        /* The reverse: what qemu-img then does to our bitmaps works. */
        sh(f, "qemu-img bitmap --remove a.qcow2 b1 && qemu-img bitmap --add a.qcow2 b1");
        assert_list(f, img, "q1:512:196608:disabled b1:65536:0:auto");

        /* The data is untouched by all this. */
        sh(f, "qemu-io -f qcow2 -c 'read -P 0xcd 2M 4k' a.qcow2 | grep -q 'read 4096/4096'");
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void test_errors(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2"), *raw = bus_fixture_path(f, "a.raw");
        g_autofree char *v2 = bus_fixture_path(f, "v2.qcow2"), *missing = bus_fixture_path(f, "none.qcow2");
        g_autofree char *long_name = g_strnfill(1024, 'x');

        sh(f, "qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img bitmap --add a.qcow2 b && "
              "qemu-img create -q -f raw a.raw 1M && qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M");

        /* The bitmap: QEMU's texts. */
        call_fails(f, "RemoveBitmap", name_args(img, "nope"), ERR_BITMAP, "Dirty bitmap 'nope' not found");
        call_fails(f, "ClearBitmap", name_args(img, "nope"), ERR_BITMAP, "Dirty bitmap 'nope' not found");
        call_fails(f, "EnableBitmap", name_args(img, "nope"), ERR_BITMAP, "Dirty bitmap 'nope' not found");
        call_fails(f, "DisableBitmap", name_args(img, "nope"), ERR_BITMAP, "Dirty bitmap 'nope' not found");
        call_fails(f, "MergeBitmaps", g_variant_new("(ss^as)", img, "b", (const char *const[]) { "nope", NULL }),
                   ERR_BITMAP, "Dirty bitmap 'nope' not found");
        call_fails(f, "AddBitmap", add_args(img, "b", NULL), ERR_BITMAP, "Bitmap already exists: b");

        /* Images that cannot have them. */
        call_fails(f, "AddBitmap", add_args(raw, "b", NULL), ERR_BITMAP,
                   "it is not a qcow2 image");
        call_fails(f, "ListBitmaps", g_variant_new("(s)", raw), ERR_BITMAP, "is not a qcow2 image");
        call_fails(f, "AddBitmap", add_args(v2, "b", NULL), ERR_BITMAP, "Cannot store dirty bitmaps in qcow2 v2 files");
        assert_list(f, v2, "");
        call_fails(f, "ListBitmaps", g_variant_new("(s)", missing), ERR_IMAGE, "none.qcow2");
        /* Only the image itself is opened: an overlay whose backing file is gone has its bitmaps
         * listed and changed all the same (they are its own). */
        g_autofree char *overlay = bus_fixture_path(f, "overlay.qcow2");
        sh(f, "qemu-img create -q -f qcow2 gone.qcow2 1M && qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 overlay.qcow2 && "
              "qemu-img bitmap --add overlay.qcow2 o && rm gone.qcow2");
        call(f, "AddBitmap", add_args(overlay, "p", NULL));
        assert_list(f, overlay, "o:65536:0:auto p:65536:0:auto");

        /* Arguments QEMU refuses, before anything is opened. */
        call_fails(f, "AddBitmap", add_args(img, "", NULL), ERR_INVALID_ARGS, "Bitmap name cannot be empty");
        call_fails(f, "AddBitmap", add_args(img, long_name, NULL), ERR_INVALID_ARGS, "Bitmap name too long");
        call_fails(f, "RemoveBitmap", name_args(img, ""), ERR_INVALID_ARGS, "Bitmap name cannot be empty");
        call_fails(f, "MergeBitmaps", g_variant_new("(ss^as)", img, "b", (const char *const[]) { "", NULL }),
                   ERR_INVALID_ARGS, "Bitmap name cannot be empty");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("granularity", g_variant_new_uint32(256), NULL)),
                   ERR_INVALID_ARGS, "Granularity must be power of 2 and at least 512");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("granularity", g_variant_new_uint32(3 << 10), NULL)),
                   ERR_INVALID_ARGS, "Granularity must be power of 2 and at least 512");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("granularity", g_variant_new_uint32(0), NULL)),
                   ERR_INVALID_ARGS, "Granularity must be power of 2 and at least 512");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("persistent", g_variant_new_boolean(TRUE), NULL)),
                   ERR_INVALID_ARGS, "Unknown option 'persistent' for AddBitmap()");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("granularity", g_variant_new_uint64(4096), NULL)),
                   ERR_INVALID_ARGS, "Option 'granularity' must be of type 'u', not 't'");
        call_fails(f, "AddBitmap", add_args(img, "c", bus_opts("disabled", g_variant_new_boolean(TRUE), "disabled",
                                                               g_variant_new_boolean(FALSE), NULL)),
                   ERR_INVALID_ARGS, "Option 'disabled' given twice");
        call_fails(f, "AddBitmap", add_args("a.qcow2", "c", NULL), ERR_INVALID_ARGS, "is not absolute");
        call_fails(f, "ListBitmaps", g_variant_new("(s)", ""), ERR_INVALID_ARGS, "Image path is empty");
        /* A granularity the image cannot hold: QEMU's reason. */
        sh(f, "qemu-img create -q -f qcow2 big.qcow2 8T");
        g_autofree char *big = bus_fixture_path(f, "big.qcow2");
        call_fails(f, "AddBitmap", add_args(big, "c", bus_opts("granularity", g_variant_new_uint32(512), NULL)),
                   ERR_INVALID_ARGS, "Too much space will be occupied by the bitmap. Use larger granularity");

        /* None of it changed anything. */
        assert_oracle(img, "b:65536:auto");
        assert_oracle(big, "");
        sh(f, "qemu-img info -U a.raw | grep -q 'file format: raw'");
}

/* A bitmap a QEMU writer had open when it died: in_use on disk, inconsistent to everyone. */
static void test_inconsistent(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2");
        g_autoptr(GError) error = NULL;
        GSubprocess *qemu_io;

        sh(f, "qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img bitmap --add a.qcow2 b && "
              "qemu-img bitmap --add a.qcow2 c");
        qemu_io = oracle_qemu_io_hold(img, "qcow2", false);
        /* QEMU marks them in_use once it has loaded them, a moment after it took its locks. */
        for (int i = 0;; i++) {
                g_autofree char *now = oracle_bitmap_list(img);
                if (g_str_equal(now, "b:65536:in-use,auto c:65536:in-use,auto"))
                        break;
                g_assert_cmpint(i, <, 500);
                g_usleep(20 * 1000);
        }
        g_subprocess_send_signal(qemu_io, SIGKILL);
        g_assert_true(g_subprocess_wait(qemu_io, NULL, &error));
        g_object_unref(qemu_io);
        assert_oracle(img, "b:65536:in-use,auto c:65536:in-use,auto");
        assert_list(f, img, "b:65536:0:in-use,auto,inconsistent c:65536:0:in-use,auto,inconsistent");

        call_fails(f, "ClearBitmap", name_args(img, "b"), ERR_BITMAP, "Bitmap 'b' is inconsistent and cannot be used");
        call_fails(f, "EnableBitmap", name_args(img, "b"), ERR_BITMAP, "Bitmap 'b' is inconsistent and cannot be used");
        call_fails(f, "MergeBitmaps", g_variant_new("(ss^as)", img, "c", (const char *const[]) { "b", NULL }),
                   ERR_BITMAP, "is inconsistent and cannot be used");
        /* Removing it is what is left to do. */
        call(f, "RemoveBitmap", name_args(img, "b"));
        assert_oracle(img, "c:65536:in-use,auto");
}

/* A name QEMU accepts that is no D-Bus string (not UTF-8) or holds a control character: listed
 * escaped, never a failed reply. */
static void test_hostile_name(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2");

        sh(f, "qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img bitmap --add a.qcow2 \"$(printf 'b\\377ad\\001')\" && "
              "qemu-img bitmap --add a.qcow2 plain");
        assert_list(f, img, "b\\xffad\\x01:65536:0:auto plain:65536:0:auto");
}

/* ---- images in use --------------------------------------------------------------------------- */

/* A running QEMU that writes the image: no change, no listing (as qemu-img info without -U); a
 * reader lets us list, not change. */
static void test_held_by_qemu(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2");
        GSubprocess *qemu_io;

        sh(f, "qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img bitmap --add a.qcow2 b");

        qemu_io = oracle_qemu_io_hold(img, "qcow2", false);
        call_fails(f, "AddBitmap", add_args(img, "c", NULL), ERR_IN_USE, "is in use by another process");
        call_fails(f, "RemoveBitmap", name_args(img, "b"), ERR_IN_USE, "is in use by another process");
        call_fails(f, "ListBitmaps", g_variant_new("(s)", img), ERR_IN_USE, "is in use by another process");
        /* The same answer a job creation gets for that image. */
        g_autofree char *target = bus_fixture_path(f, "t.qcow2");
        call_fails(f, "Backup", g_variant_new("(ss@a{sv})", img, target, g_variant_new("a{sv}", NULL)), ERR_IN_USE,
                   "is in use by another process");
        oracle_qemu_io_release(qemu_io);

        qemu_io = oracle_qemu_io_hold(img, "qcow2", true);
        call_fails(f, "ClearBitmap", name_args(img, "b"), ERR_IN_USE, "is in use by another process");
        assert_list(f, img, "b:65536:0:auto");
        oracle_qemu_io_release(qemu_io);

        /* And afterwards, as ever. */
        call(f, "AddBitmap", add_args(img, "c", NULL));
        assert_oracle(img, "b:65536:auto c:65536:auto");
}

/* A job of ours: the image it writes is refused, naming the job; a backup's source, which it only
 * reads, may be listed but not changed. */
static void test_held_by_job(BusFixture *f, gconstpointer data) {
        g_autofree char *top = bus_fixture_path(f, "top.qcow2"), *src = bus_fixture_path(f, "src.qcow2");
        g_autofree char *target = bus_fixture_path(f, "t.qcow2"), *stream = NULL, *backup = NULL;

        sh(f, "qemu-img create -q -f qcow2 base.qcow2 4M && qemu-io -f qcow2 -c 'write 0 4M' base.qcow2 >/dev/null && "
              "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && qemu-img bitmap --add top.qcow2 b && "
              "qemu-img create -q -f qcow2 src.qcow2 4M && qemu-io -f qcow2 -c 'write 0 4M' src.qcow2 >/dev/null && "
              "qemu-img bitmap --add src.qcow2 b");

        /* At a byte a second, neither job ends while we look. */
        stream = bus_start(f, "Stream", top, NULL, bus_opts("speed", g_variant_new_uint64(1), NULL));
        g_autofree char *busy = g_strdup_printf("Image '%s' is in use by job 'stream0' (stream)", top);
        call_fails(f, "AddBitmap", add_args(top, "c", NULL), ERR_IN_USE, busy);
        call_fails(f, "ListBitmaps", g_variant_new("(s)", top), ERR_IN_USE, "is written by job 'stream0' (stream)");

        backup = bus_start(f, "Backup", src, target, bus_opts("speed", g_variant_new_uint64(1), NULL));
        call_fails(f, "ClearBitmap", name_args(src, "b"), ERR_IN_USE, "is in use by job 'backup0' (backup)");
        assert_list(f, src, "b:65536:0:auto");

        bus_job_call(f, stream, "Cancel");
        bus_job_call(f, backup, "Cancel");
        bus_wait_for_status(f, "stream0", "null");
        bus_wait_for_status(f, "backup0", "null");

        /* Free again once they are gone. */
        call(f, "AddBitmap", add_args(top, "c", NULL));
        call(f, "ClearBitmap", name_args(src, "b"));
        assert_oracle(top, "b:65536:auto c:65536:auto");
}

/* ---- bounds ---------------------------------------------------------------------------------- */

/* A user other than root has at most 16 operations in progress: with its openers stopped (a file
 * system that does not answer), the 17th is refused at once, and the others finish once they
 * can. ListBitmaps() needs no polkit, so nobody gets that far here. */
#define OPS_MAX 16

static void test_limit(BusFixture *f, gconstpointer data) {
        g_autofree char *img = bus_fixture_path(f, "a.qcow2"), *args = NULL, *out = NULL, *refusal = NULL;
        g_autoptr(GPtrArray) pending = g_ptr_array_new();
        BusStopper *stopper;

        if (!bus_can_run_as_nobody())
                return;
        sh(f, "qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img bitmap --add a.qcow2 b && chmod 0644 a.qcow2");
        args = g_strdup_printf("('%s',)", img);

        /* One call at a time: one whose opener is caught stopped stays in progress; an opener is
         * quick, and one the stopper missed just answers. Until a call is refused. */
        stopper = bus_stopper_start(bus_daemon_pid(f), "blockjobd-opener", 65534);
        for (unsigned tries = 0; !refusal; tries++) {
                g_assert_cmpuint(tries, <, 50 * OPS_MAX);
                unsigned before = bus_stopper_count(stopper);
                GSubprocess *p = bus_as_nobody_start(f, "call", MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", args, NULL);
                for (gint64 end = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;
                     bus_stopper_count(stopper) == before && g_get_monotonic_time() < end;)
                        bus_iterate_for(f, 1000);
                if (bus_stopper_count(stopper) > before) {
                        g_ptr_array_add(pending, p);
                        continue;
                }
                g_autofree char *answer = bus_as_nobody_finish(p);
                g_object_unref(p);
                if (!g_str_has_prefix(answer, "ok"))
                        refusal = g_steal_pointer(&answer);
        }
        g_assert_cmpuint(pending->len, >=, OPS_MAX);
        bus_assert_answer(refusal, "org.blockjobd.Jobs1.Error.LimitExceeded: User 65534 has 16 bitmap operations in "
                                   "progress, and may have at most 16");
        /* Root is not bound by nobody's count. */
        assert_list(f, img, "b:65536:0:auto");

        bus_stopper_finish(stopper);
        for (unsigned i = 0; i < pending->len; i++) {
                g_autofree char *answer = bus_as_nobody_finish(pending->pdata[i]);
                bus_assert_answer(answer, "ok");
                g_object_unref(pending->pdata[i]);
        }
        /* And the count went back down. */
        out = bus_as_nobody(f, "call", MANAGER_PATH, MANAGER_IFACE, "ListBitmaps", args, NULL);
        bus_assert_answer(out, "ok");
}

int main(int argc, char *argv[]) {
        /* Run again as nobody, it is a client of the test's bus (bus_as_nobody()). */
        int r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return g_test_run();
#define BITMAP_TEST(path, fn) g_test_add(path, BusFixture, NULL, bus_fixture_setup, fn, bus_fixture_teardown)
        BITMAP_TEST("/bitmaps/hostile-name", test_hostile_name);
        BITMAP_TEST("/bitmaps/methods", test_methods);
        BITMAP_TEST("/bitmaps/errors", test_errors);
        BITMAP_TEST("/bitmaps/inconsistent", test_inconsistent);
        BITMAP_TEST("/bitmaps/held-by-qemu", test_held_by_qemu);
        BITMAP_TEST("/bitmaps/held-by-job", test_held_by_job);
        BITMAP_TEST("/bitmaps/limit", test_limit);
        return g_test_run();
}
