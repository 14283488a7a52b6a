/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Job records (service/state/): the text format round-trips every field and every byte of a
 * name, and refuses each kind of damage with a message naming the line; the state directory
 * replaces records atomically, cleans up after an interrupted write, and refuses directories and
 * records others could touch. */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "escape.h"
#include "job-record.h"
#include "log.h"
#include "state-dir.h"

/* ---- escaping -------------------------------------------------------------------------------- */

static void assert_xescape_round_trip(const char *s) {
        char *e = xescape(s), *d = NULL;

        g_assert_nonnull(e);
        g_assert_true(g_utf8_validate(e, -1, NULL));
        for (const char *p = e; *p; p++)
                g_assert_true((unsigned char) *p >= 0x20 && *p != 0x7f);
        g_assert_cmpint(xunescape(e, &d), ==, 0);
        g_assert_cmpstr(d, ==, s);
        free(e);
        free(d);
}

static void test_xescape(void) {
        char all[256], *e;

        assert_xescape_round_trip("");
        assert_xescape_round_trip("/plain/path.qcow2");
        assert_xescape_round_trip("a\\b\nc\td\x1b[31m\x7f");
        assert_xescape_round_trip("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");      /* valid UTF-8 stays */
        assert_xescape_round_trip("\xc2\x85\xc2\x9f");                               /* C1 controls */
        assert_xescape_round_trip("\xff\xfe\xc3\x28\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80"); /* invalid UTF-8 */

        for (int i = 1; i < 256; i++)
                all[i - 1] = (char) i;
        all[255] = '\0';
        assert_xescape_round_trip(all);

        e = xescape("\\\n\xc3\xa9\xff");
        g_assert_cmpstr(e, ==, "\\x5c\\x0a\xc3\xa9\\xff");
        free(e);

        /* Random bytes. */
        for (int n = 0; n < 2000; n++) {
                char s[64];
                size_t len = (size_t) g_test_rand_int_range(0, sizeof(s));
                for (size_t i = 0; i < len; i++)
                        s[i] = (char) g_test_rand_int_range(1, 256);
                s[len] = '\0';
                assert_xescape_round_trip(s);
        }
}

static void test_xunescape_refused(void) {
        static const char *const bad[] = {
                "\\x41",                /* escaped, needs no escaping */
                "\\x5C",                /* uppercase */
                "\\X5c",
                "\\n",
                "\\",
                "\\x5",
                "\\x00",                /* NUL */
                "a\tb",                 /* raw control character */
                "\x7f",
                "\xff",                 /* raw invalid UTF-8 */
                "\xc2\x85",             /* raw C1 control */
                "\\xc3\\xa9",           /* valid UTF-8 escaped */
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                char *d = NULL;
                g_assert_cmpint(xunescape(bad[i], &d), ==, -EINVAL);
                g_assert_null(d);
        }
}

/* ---- records --------------------------------------------------------------------------------- */

static void set_file(JobRecord *r, JobRecordFile *f, const char *path, uint64_t ino, const char *fd_role) {
        f->present = true;
        f->path = path ? g_strdup(path) : NULL;
        f->identity = (JobRecordIdentity) {
                .dev = 2049,
                .ino = ino,
                .size = ino * 65536,
                .mtime_ns = INT64_C(1764940000123456789),
                .ctime_ns = -INT64_C(5),
        };
        if (fd_role)
                g_assert_cmpint(job_record_fdname(r->owner, r->id, fd_role, &f->fdname), ==, 0);
}

static JobRecord *full_backup(void) {
        JobRecord *r = job_record_new(JOB_TYPE_BACKUP, 1000, "nightly-1");

        g_assert_nonnull(r);
        r->status = JOB_STATUS_CONCLUDED;
        r->user_paused = true;
        r->error = g_strdup("Could not write to '/srv/backups/a.qcow2': No space left on device");
        r->txn_name = g_strdup("txn-nightly");
        r->n_txn_members = 3;
        r->txn_members = g_new0(char *, 3);
        r->txn_members[0] = g_strdup("nightly-0");
        r->txn_members[1] = g_strdup("nightly-1");
        r->txn_members[2] = g_strdup("nightly-2");
        r->auto_finalize = false;
        r->auto_dismiss = false;
        r->speed = UINT64_MAX;
        r->on_source_error = JOB_ON_ERROR_STOP;
        r->on_target_error = JOB_ON_ERROR_ENOSPC;
        r->sync = JOB_RECORD_SYNC_BITMAP;
        r->source_format = IMAGE_FORMAT_QCOW2;
        r->target_format = IMAGE_FORMAT_RAW;
        r->overwrite = true;
        r->bitmap = g_strdup("daily bitmap \xe2\x9c\x93");
        r->bitmap_mode = JOB_RECORD_BITMAP_ALWAYS;
        set_file(r, &r->source, "/var/lib/machines/vm 1/disk.qcow2", 12, NULL);
        set_file(r, &r->layers[0], "/var/lib/machines/base.qcow2", 13, NULL);
        set_file(r, &r->layers[1], NULL, 14, "layer2");
        r->n_layers = 2;
        set_file(r, &r->target, "/srv/backups/a.qcow2", 15, NULL);
        g_assert_cmpint(job_record_hidden_target_name(r->target.path, r->owner, r->id, &r->target_hidden), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 0, 1 << 20), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 4 << 20, 65536), ==, 0);
        g_assert_cmpint(job_record_add_range(r, UINT64_MAX - 512, 512), ==, 0);
        return r;
}

static JobRecord *full_commit(void) {
        JobRecord *r = job_record_new(JOB_TYPE_COMMIT, 0, "c");

        g_assert_nonnull(r);
        r->status = JOB_STATUS_READY;
        r->source_format = IMAGE_FORMAT_QCOW2;
        r->base_format = IMAGE_FORMAT_QCOW2;
        r->backing_file = g_strdup("../base.qcow2");
        set_file(r, &r->source, "/img/top.qcow2", 1, "source");
        for (int i = 0; i < JOB_RECORD_LAYERS_MAX; i++) {
                g_autofree char *p = g_strdup_printf("/img/layer%d.qcow2", i + 1);
                set_file(r, &r->layers[i], p, (uint64_t) i + 2, NULL);
        }
        r->n_layers = JOB_RECORD_LAYERS_MAX;
        set_file(r, &r->top, "/img/layer1.qcow2", 2, "top");
        set_file(r, &r->base, "/img/layer5.qcow2", 6, NULL);
        r->offset = 123456789;
        r->rewrite = JOB_RECORD_REWRITE_PENDING;
        r->rewrite_old_backing = g_strdup("layer1.qcow2");
        r->rewrite_new_backing = g_strdup("");
        return r;
}

static JobRecord *full_mirror(void) {
        JobRecord *r = job_record_new(JOB_TYPE_MIRROR, 4294967294U, "m");

        g_assert_nonnull(r);
        r->status = JOB_STATUS_STANDBY;
        r->user_paused = true;
        r->sync = JOB_RECORD_SYNC_TOP;
        r->granularity = 65536;
        r->buf_size = 1 << 30;
        set_file(r, &r->source, "/dev/vg/disk", 7, NULL);
        set_file(r, &r->target, NULL, 8, "target");
        return r;
}

static JobRecord *minimal(void) {
        JobRecord *r = job_record_new(JOB_TYPE_STREAM, 1000, "s");

        g_assert_nonnull(r);
        set_file(r, &r->source, "/a", 1, NULL);
        return r;
}

/* Serialized, parsed back the same, and serialized again to the same text. */
static char *assert_round_trip(const JobRecord *r) {
        g_autofree char *name = NULL, *error = NULL, *again = NULL;
        JobRecord *p = NULL;
        char *text = NULL;
        size_t size, size2;

        g_assert_cmpint(job_record_serialize(r, &text, &size, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpuint(strlen(text), ==, size);
        g_assert_true(g_utf8_validate(text, -1, NULL));
        g_assert_cmpint(job_record_file_name(r->owner, r->id, &name), ==, 0);
        if (job_record_parse(text, size, name, &p, &error) < 0)
                g_error("%s\n%s", error, text);
        g_assert_true(job_record_equal(r, p));
        g_assert_cmpint(job_record_serialize(p, &again, &size2, NULL), ==, 0);
        g_assert_cmpstr(again, ==, text);
        job_record_free(p);
        return text;
}

static void test_round_trip(void) {
        JobRecord *records[] = { full_backup(), full_commit(), full_mirror(), minimal(), full_commit() };

        /* backing-file "" as a caller may give it. */
        free(records[4]->backing_file);
        records[4]->backing_file = g_strdup("");

        for (size_t i = 0; i < G_N_ELEMENTS(records); i++) {
                g_autofree char *text = assert_round_trip(records[i]);
                if (i == 0)
                        g_test_message("A record:\n%s", text);
                job_record_free(records[i]);
        }
}

static void test_minimal_text(void) {
        g_autofree char *text = NULL;
        JobRecord *r = minimal();

        text = assert_round_trip(r);
        g_assert_cmpstr(text, ==,
                        "BLOCKJOBD-JOB-RECORD=1\n"
                        "ID=s\n"
                        "TYPE=stream\n"
                        "OWNER=1000\n"
                        "STATUS=created\n"
                        "USER_PAUSED=no\n"
                        "AUTO_FINALIZE=yes\n"
                        "AUTO_DISMISS=yes\n"
                        "SPEED=0\n"
                        "ON_SOURCE_ERROR=report\n"
                        "ON_TARGET_ERROR=report\n"
                        "SOURCE=/a\n"
                        "SOURCE_IDENTITY=dev=2049 ino=1 size=65536 mtime=1764940000123456789 ctime=-5\n"
                        "OFFSET=0\n");
        job_record_free(r);
}

/* Every byte but NUL and '/' in a name, in every place that holds one. */
static void test_every_byte(void) {
        JobRecord *r = full_backup();
        GString *component = g_string_new(NULL), *error = g_string_new(NULL);
        g_autofree char *text = NULL, *path = NULL, *path2 = NULL;

        for (int i = 1; i < 256; i++)
                if (i != '/')
                        g_string_append_c(component, (char) i);
        /* 254 bytes: a valid name, split so that the hidden target name stays within NAME_MAX. */
        path = g_strdup_printf("/%.*s/%s", 127, component->str, component->str + 127);
        path2 = g_strdup_printf("/%s/x", component->str);
        for (int i = 1; i < 256; i++)
                g_string_append_c(error, (char) i);

        free(r->source.path);
        r->source.path = g_strdup(path2);
        free(r->layers[0].path);
        r->layers[0].path = g_strdup(path);
        free(r->target.path);
        r->target.path = g_strdup_printf("/t/%s", component->str + 200);
        free(r->target_hidden);
        g_assert_cmpint(job_record_hidden_target_name(r->target.path, r->owner, r->id, &r->target_hidden), ==, 0);
        free(r->error);
        r->error = g_strdup(error->str);
        free(r->bitmap);
        r->bitmap = g_strdup(error->str);

        text = assert_round_trip(r);
        /* One line per field, whatever the names hold. */
        g_assert_null(strchr(text, '\r'));
        g_assert_null(strchr(text, '\t'));

        job_record_free(r);
        g_string_free(component, true);
        g_string_free(error, true);
}

static void test_names(void) {
        g_autofree char *name = NULL, *id = NULL, *hidden = NULL, *fdname = NULL;
        g_autofree char *long_name = g_strnfill(250, 'x'), *long_path = g_strdup_printf("/d/%s", long_name);
        uint32_t owner;

        g_assert_cmpint(job_record_file_name(1000, "backup0", &name), ==, 0);
        g_assert_cmpstr(name, ==, "1000-backup0.job");
        g_assert_cmpint(job_record_file_name_parse(name, &owner, &id), ==, 0);
        g_assert_cmpuint(owner, ==, 1000);
        g_assert_cmpstr(id, ==, "backup0");
        g_assert_true(job_record_file_name_is_valid("0-a-b.c_d.job"));
        g_assert_false(job_record_file_name_is_valid("01-a.job"));
        g_assert_false(job_record_file_name_is_valid("4294967295-a.job"));
        g_assert_false(job_record_file_name_is_valid("-a.job"));
        g_assert_false(job_record_file_name_is_valid("1-.job"));
        g_assert_false(job_record_file_name_is_valid("1-9a.job"));
        g_assert_false(job_record_file_name_is_valid("1-a.job.tmp"));
        g_assert_false(job_record_file_name_is_valid(".#1-a.job.tmp"));
        g_assert_false(job_record_file_name_is_valid("1-a/b.job"));
        g_assert_cmpint(job_record_file_name(1, "9a", &name), ==, -EINVAL);

        g_assert_cmpint(job_record_hidden_target_name("/srv/b/a.qcow2", 1000, "backup0", &hidden), ==, 0);
        g_assert_cmpstr(hidden, ==, ".a.qcow2.blockjobd-1000-backup0");
        g_assert_cmpint(job_record_hidden_target_name(long_path, 1000, "backup0", &hidden), ==, -ENAMETOOLONG);
        g_assert_cmpint(job_record_fdname(1000, "backup0", "layer3", &fdname), ==, 0);
        g_assert_cmpstr(fdname, ==, "1000-backup0-layer3");
}

static void assert_ranges(const JobRecord *r, const uint64_t *expected, size_t n) {
        g_assert_cmpuint(r->n_ranges, ==, n);
        for (size_t i = 0; i < n; i++) {
                g_assert_cmpuint(r->ranges[i].start, ==, expected[2 * i]);
                g_assert_cmpuint(r->ranges[i].length, ==, expected[2 * i + 1]);
        }
}

static void test_add_range(void) {
        JobRecord *r = full_backup();

        g_clear_pointer(&r->ranges, free);
        r->n_ranges = 0;
        g_assert_cmpint(job_record_add_range(r, 100, 10), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 0, 10), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 200, 10), ==, 0);
        assert_ranges(r, (const uint64_t[]) { 0, 10, 100, 10, 200, 10 }, 3);
        /* Touching merges. */
        g_assert_cmpint(job_record_add_range(r, 10, 5), ==, 0);
        assert_ranges(r, (const uint64_t[]) { 0, 15, 100, 10, 200, 10 }, 3);
        /* Spanning several. */
        g_assert_cmpint(job_record_add_range(r, 50, 155), ==, 0);
        assert_ranges(r, (const uint64_t[]) { 0, 15, 50, 160 }, 2);
        /* Inside one. */
        g_assert_cmpint(job_record_add_range(r, 60, 1), ==, 0);
        assert_ranges(r, (const uint64_t[]) { 0, 15, 50, 160 }, 2);
        g_assert_cmpint(job_record_add_range(r, 15, 35), ==, 0);
        assert_ranges(r, (const uint64_t[]) { 0, 210 }, 1);

        g_assert_cmpint(job_record_add_range(r, 5, 0), ==, -EINVAL);
        g_assert_cmpint(job_record_add_range(r, UINT64_MAX, 2), ==, -EINVAL);

        /* The bound: sequential but sparse copies. */
        for (uint64_t i = 1; i < JOB_RECORD_RANGES_MAX; i++)
                g_assert_cmpint(job_record_add_range(r, 1000 * i, 1), ==, 0);
        g_assert_cmpuint(r->n_ranges, ==, JOB_RECORD_RANGES_MAX);
        g_assert_cmpint(job_record_add_range(r, UINT64_C(1) << 40, 1), ==, -E2BIG);
        g_assert_cmpuint(r->n_ranges, ==, JOB_RECORD_RANGES_MAX);
        /* One that merges still fits. */
        g_assert_cmpint(job_record_add_range(r, 1001, 1), ==, 0);
        g_free(assert_round_trip(r));
        job_record_free(r);
}

/* The fuzzer's seeds (tests/fuzz/job-records/) are records the writer would write: the fuzzer
 * starts from valid records of each type, not from text it would refuse at once. */
static void test_fuzz_seeds(void) {
        const char *dir = g_getenv("JOB_RECORD_SEEDS");
        const char *name;
        unsigned n = 0;
        GDir *g;

        if (!dir) {
                g_test_skip("JOB_RECORD_SEEDS is not set (run through meson test)");
                return;
        }
        g = g_dir_open(dir, 0, NULL);
        g_assert_nonnull(g);
        while ((name = g_dir_read_name(g))) {
                g_autofree char *path = g_build_filename(dir, name, NULL), *text = NULL, *error = NULL, *again = NULL;
                JobRecord *r = NULL;
                gsize size;

                g_assert_true(g_file_get_contents(path, &text, &size, NULL));
                if (job_record_parse(text, size, NULL, &r, &error) < 0)
                        g_error("%s: %s", name, error);
                g_assert_cmpint(job_record_serialize(r, &again, NULL, NULL), ==, 0);
                g_assert_cmpstr(again, ==, text);
                job_record_free(r);
                n++;
        }
        g_dir_close(g);
        g_assert_cmpuint(n, >=, 4);
}

/* ---- damaged records ------------------------------------------------------------------------- */

static const char base_text[] =
        "BLOCKJOBD-JOB-RECORD=1\n"      /* 1 */
        "ID=b\n"                        /* 2 */
        "TYPE=backup\n"                 /* 3 */
        "OWNER=1000\n"                  /* 4 */
        "STATUS=running\n"              /* 5 */
        "USER_PAUSED=no\n"              /* 6 */
        "AUTO_FINALIZE=yes\n"           /* 7 */
        "AUTO_DISMISS=yes\n"            /* 8 */
        "SPEED=0\n"                     /* 9 */
        "ON_SOURCE_ERROR=report\n"      /* 10 */
        "ON_TARGET_ERROR=report\n"      /* 11 */
        "SYNC=full\n"                   /* 12 */
        "OVERWRITE=no\n"                /* 13 */
        "SOURCE=/src\n"                 /* 14 */
        "SOURCE_IDENTITY=dev=1 ino=2 size=3 mtime=4 ctime=5\n" /* 15 */
        "TARGET=/dst/t\n"               /* 16 */
        "TARGET_IDENTITY=dev=1 ino=3 size=0 mtime=4 ctime=5\n" /* 17 */
        "TARGET_HIDDEN=.t.blockjobd-1000-b\n" /* 18 */
        "COPIED=0+4096\n";              /* 19 */

/* base_text with line 'line' (1-based) replaced by 'with' (NULL: removed), or 'with' appended
 * (line 0). */
static char *edit(unsigned line, const char *with) {
        g_auto(GStrv) lines = g_strsplit(base_text, "\n", -1);
        GString *s = g_string_new(NULL);

        for (unsigned i = 0; lines[i] && lines[i][0]; i++) {
                if (i + 1 == line) {
                        if (with)
                                g_string_append_printf(s, "%s\n", with);
                } else
                        g_string_append_printf(s, "%s\n", lines[i]);
        }
        if (line == 0)
                g_string_append_printf(s, "%s\n", with);
        return g_string_free(s, false);
}

static void assert_refused_n(const char *text, size_t size, const char *file_name, const char *message) {
        g_autofree char *error = NULL;
        JobRecord *r = NULL;

        g_assert_cmpint(job_record_parse(text, size, file_name, &r, &error), ==, -EBADMSG);
        g_assert_null(r);
        g_assert_nonnull(error);
        if (!strstr(error, message))
                g_error("expected '%s' in: %s", message, error);
}

static void assert_refused(char *text, const char *message) {
        assert_refused_n(text, strlen(text), "1000-b.job", message);
        g_free(text);
}

static void test_base_parses(void) {
        g_autofree char *error = NULL;
        JobRecord *r = NULL;

        g_assert_cmpint(job_record_parse(base_text, strlen(base_text), "1000-b.job", &r, &error), ==, 0);
        g_assert_cmpstr(r->id, ==, "b");
        g_assert_cmpint(r->type, ==, JOB_TYPE_BACKUP);
        g_assert_cmpstr(r->target_hidden, ==, ".t.blockjobd-1000-b");
        g_free(assert_round_trip(r));
        job_record_free(r);

        /* Lines in another order. */
        {
                g_autofree char *moved = edit(14, NULL), *text = g_strconcat(moved, "SOURCE=/src\n", NULL);
                g_assert_cmpint(job_record_parse(text, strlen(text), NULL, &r, NULL), ==, 0);
                job_record_free(r);
        }
}

static void test_refused(void) {
        /* The text. */
        assert_refused(edit(0, "FOO=1"), "line 20: unknown key 'FOO'");
        assert_refused(edit(0, "source=/x"), "line 20: unknown key 'source'");
        assert_refused(edit(0, "LAYER64=/x"), "unknown key 'LAYER64'");
        assert_refused(edit(0, "LAYER01_IDENTITY=dev=1 ino=2 size=3 mtime=4 ctime=5"), "unknown key");
        assert_refused(edit(0, "SPEED=0"), "line 20: SPEED: given twice (first on line 9)");
        assert_refused(edit(0, "SOURCE=/src"), "line 20: SOURCE: given twice (first on line 14)");
        assert_refused(edit(0, "no equals sign"), "line 20: not KEY=VALUE");
        assert_refused(edit(0, ""), "line 20: not KEY=VALUE");
        assert_refused(edit(1, "BLOCKJOBD-JOB-RECORD=2"), "line 1: version '2' is not one this blockjobd reads");
        assert_refused(edit(1, "ID=b"), "line 1: not a blockjobd job record");
        assert_refused(g_strconcat("\n", base_text, NULL), "line 1: not KEY=VALUE");

        /* Missing keys. */
        assert_refused(edit(5, NULL), "Job record '1000-b.job': STATUS: missing");
        assert_refused(edit(3, NULL), "TYPE: missing");
        assert_refused(edit(15, NULL), "line 14: SOURCE: a file with no identity");
        assert_refused(edit(17, "TARGET_FDNAME=1000-b-target"), "line 16: TARGET: a file with no identity");
        {
                const char *t = strstr(base_text, "TARGET="), *c = strstr(base_text, "COPIED=");
                g_autofree char *text = g_strdup_printf("%.*s%s", (int) (t - base_text), base_text, c);
                assert_refused(g_steal_pointer(&text), "Job record '1000-b.job': TARGET_IDENTITY: missing");
        }
        assert_refused(edit(12, NULL), "SYNC: missing");
        assert_refused(edit(0, "BITMAP=x"), "BITMAP_MODE: missing");
        assert_refused(edit(0, "BITMAP_MODE=always"), "line 20: BITMAP_MODE: without a bitmap");
        assert_refused(edit(0, "TRANSACTION=t"), "TRANSACTION_MEMBERS: missing its companion");
        assert_refused(edit(0, "TRANSACTION_MEMBERS=b"), "TRANSACTION: missing its companion");

        /* Keys of another job type. */
        assert_refused(edit(0, "GRANULARITY=65536"), "line 20: GRANULARITY: not for backup jobs");
        assert_refused(edit(0, "OFFSET=0"), "line 20: OFFSET: not for backup jobs");
        assert_refused(edit(0, "TOP_IDENTITY=dev=1 ino=2 size=3 mtime=4 ctime=5"), "TOP_IDENTITY: not for backup jobs");

        /* Numbers. */
        assert_refused(edit(9, "SPEED=12x"), "line 9: SPEED: '12x' is not a number");
        assert_refused(edit(9, "SPEED=012"), "is not a number");
        assert_refused(edit(9, "SPEED=-1"), "is not a number");
        assert_refused(edit(9, "SPEED=+1"), "is not a number");
        assert_refused(edit(9, "SPEED= 1"), "is not a number");
        assert_refused(edit(9, "SPEED="), "is not a number");
        assert_refused(edit(9, "SPEED=18446744073709551616"), "is not a number");
        assert_refused(edit(4, "OWNER=4294967295"), "line 4: OWNER: 4294967295 is out of range");
        assert_refused(edit(15, "SOURCE_IDENTITY=dev=1 ino=2 size=3 mtime=-0 ctime=5"), "line 15: SOURCE_IDENTITY:");
        assert_refused(edit(15, "SOURCE_IDENTITY=dev=1 ino=2 size=9223372036854775808 mtime=4 ctime=5"),
                       "SOURCE_IDENTITY");
        assert_refused(edit(15, "SOURCE_IDENTITY=dev=1 ino=2 size=3 mtime=4"), "SOURCE_IDENTITY");
        assert_refused(edit(15, "SOURCE_IDENTITY=dev=1 ino=2 size=3 mtime=4 ctime=5 "), "SOURCE_IDENTITY");
        assert_refused(edit(15, "SOURCE_IDENTITY=ino=2 dev=1 size=3 mtime=4 ctime=5"), "SOURCE_IDENTITY");
        assert_refused(edit(15, "SOURCE_IDENTITY=dev=1  ino=2 size=3 mtime=4 ctime=5"), "SOURCE_IDENTITY");

        /* Enums and booleans. */
        assert_refused(edit(3, "TYPE=copy"), "line 3: TYPE: 'copy' is not a known value");
        assert_refused(edit(5, "STATUS=null"), "line 5: STATUS:");
        assert_refused(edit(5, "STATUS=undefined"), "line 5: STATUS:");
        assert_refused(edit(6, "USER_PAUSED=true"), "line 6: USER_PAUSED: 'true' is neither yes nor no");
        assert_refused(edit(0, "TARGET_FORMAT=probe"), "line 20: TARGET_FORMAT: 'probe' is not an image format");
        assert_refused(edit(12, "SYNC=bitmap"), "SYNC: sync=bitmap without a bitmap");

        /* Ranges of values. */
        assert_refused(edit(0, "ERROR=x"), "line 20: ERROR: a job in status running has no error");
        assert_refused(edit(2, "ID=9b"), "line 2: ID: '9b' is not a valid job id");
        assert_refused(edit(2, "ID=b c"), "is not a valid job id");
        assert_refused(edit(0, "TRANSACTION=t\nTRANSACTION_MEMBERS=a c"), "this job ('b') is not a member");
        assert_refused(edit(0, "TRANSACTION=t\nTRANSACTION_MEMBERS=a b a"), "'a' listed twice");
        assert_refused(edit(0, "TRANSACTION=t\nTRANSACTION_MEMBERS=a  b"), "an empty item");
        assert_refused(edit(0, "TRANSACTION=t\nTRANSACTION_MEMBERS=b "), "an empty item");
        assert_refused(edit(0, "TRANSACTION=t t\nTRANSACTION_MEMBERS=b"), "not a valid transaction name");

        /* Paths. */
        assert_refused(edit(14, "SOURCE=src"), "line 14: SOURCE: 'src' is not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE=/a//b"), "not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE=/a/./b"), "not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE=/a/../b"), "not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE=/a/b/"), "not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE="), "not an absolute, normalized path");
        assert_refused(edit(14, "SOURCE=/a\\x41"), "line 14: SOURCE: bad escaping");
        assert_refused(edit(14, "SOURCE=/a\\x00"), "bad escaping");
        assert_refused(edit(14, "SOURCE=/a\tb"), "bad escaping");
        assert_refused(edit(14, "SOURCE=/a\xff"), "bad escaping");

        /* Names that must be this job's. */
        assert_refused(edit(18, "TARGET_HIDDEN=.t.blockjobd-1000-c"), "line 18: TARGET_HIDDEN: '.t.blockjobd-1000-c' is not");
        assert_refused(edit(18, "TARGET_HIDDEN=victim"), "is not this job's hidden name");
        assert_refused(edit(0, "SOURCE_FDNAME=1001-b-source"), "SOURCE_FDNAME: '1001-b-source' is not this job's");
        assert_refused(edit(0, "SOURCE_FDNAME=1000-b-target"), "is not this job's");

        /* Layers: numbered from 1 without a gap. */
        assert_refused(edit(0, "LAYER2_IDENTITY=dev=1 ino=2 size=3 mtime=4 ctime=5\nLAYER2=/l"), "LAYER1_IDENTITY: layers are not numbered");

        /* Ranges. */
        assert_refused(edit(19, "COPIED=0+10 5+10"), "line 19: COPIED: range 2 overlaps");
        assert_refused(edit(19, "COPIED=0+10 10+10"), "range 2 overlaps, touches");
        assert_refused(edit(19, "COPIED=20+10 0+10"), "range 2 overlaps, touches or comes before");
        assert_refused(edit(19, "COPIED=0+0"), "range 1 is empty");
        assert_refused(edit(19, "COPIED=18446744073709551615+2"), "range 1 ends beyond 2^64");
        assert_refused(edit(19, "COPIED=0-10"), "'0-10' is not START+LENGTH");
        assert_refused(edit(19, "COPIED="), "an empty item");
        {
                GString *s = g_string_new("COPIED=");
                for (unsigned i = 0; i <= JOB_RECORD_RANGES_MAX; i++)
                        g_string_append_printf(s, "%s%u+1", i ? " " : "", 2 * i);
                assert_refused(edit(19, s->str), "line 19: COPIED: more than 4096 items");
                g_string_free(s, true);
        }

        /* Sizes. */
        {
                g_autofree char *long_value = g_strnfill(JOB_RECORD_LINE_MAX, 'a');
                g_autofree char *line = g_strconcat("BITMAP=", long_value, NULL);
                assert_refused(edit(0, line), "line 20: longer than 262144 bytes");
        }
        {
                g_autofree char *long_value = g_strnfill(JOB_RECORD_ERROR_MAX + 1, 'a');
                g_autofree char *line = g_strconcat("ERROR=", long_value, NULL);
                g_autofree char *text = edit(5, "STATUS=concluded");
                g_autofree char *with = g_strconcat(text, line, "\n", NULL);
                assert_refused_n(with, strlen(with), NULL, "ERROR: longer than 16384 bytes");
        }
        {
                size_t n = JOB_RECORD_SIZE_MAX + 1;
                char *big = g_malloc(n);
                memset(big, '\n', n);
                assert_refused_n(big, n, NULL, "Job record: larger than 1048576 bytes");
                g_free(big);
        }

        /* Bytes. */
        {
                g_autofree char *text = g_strdup(base_text);
                text[strlen("BLOCKJOBD-JOB-RECORD=1\nID=b\nTY")] = '\0';
                assert_refused_n(text, strlen(base_text), "1000-b.job", "line 3: a NUL byte");
        }
        assert_refused_n(base_text, strlen(base_text) - 1, "1000-b.job", "line 19: no newline at the end");
        assert_refused_n(base_text, 0, "1000-b.job", "empty");

        /* The file name. */
        assert_refused_n(base_text, strlen(base_text), "1001-b.job", "OWNER: 1000, but the file name says 1001");
        assert_refused_n(base_text, strlen(base_text), "1000-c.job", "ID: 'b', but the file name says 'c'");
        assert_refused_n(base_text, strlen(base_text), "b.job", "not a job record's file name");

}

static void test_validate(void) {
        g_autofree char *error = NULL, *text = NULL;
        JobRecord *r = minimal();

        /* What the writer is given is checked as what the reader is: never a record it cannot read. */
        r->granularity = 4096;
        g_assert_cmpint(job_record_serialize(r, &text, NULL, &error), ==, -EINVAL);
        g_assert_null(text);
        g_assert_cmpstr(error, ==, "Job record: GRANULARITY: not for stream jobs");
        r->granularity = 0;
        free(r->source.path);
        r->source.path = g_strdup("/a/");
        g_assert_cmpint(job_record_validate(r, NULL), ==, -EINVAL);
        job_record_free(r);
}

/* ---- the state directory --------------------------------------------------------------------- */

typedef struct Dir {
        char *path;
        char *jobs;
} Dir;

static void dir_setup(Dir *d) {
        d->path = g_dir_make_tmp("test-state-XXXXXX", NULL);
        g_assert_nonnull(d->path);
        d->jobs = g_build_filename(d->path, STATE_DIR_JOBS, NULL);
}

static void dir_teardown(Dir *d) {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", d->path);
        g_assert_cmpint(system(cmd), ==, 0);
        g_free(d->path);
        g_free(d->jobs);
}

static void write_file(const char *dir, const char *name, const char *content, mode_t mode) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        g_assert_true(g_file_set_contents(path, content, -1, NULL));
        g_assert_cmpint(chmod(path, mode), ==, 0);
}

static void assert_list(StateDir *sd, const char *const *expected) {
        char **names = NULL;
        size_t n = 0;

        g_assert_cmpint(state_dir_list(sd, &names, &n, NULL), ==, 0);
        g_assert_cmpuint(n, ==, g_strv_length((char **) expected));
        for (size_t i = 0; i < n; i++)
                g_assert_cmpstr(names[i], ==, expected[i]);
        g_assert_null(names[n]);
        state_dir_names_free(names);
}

static gint compare_strp(gconstpointer a, gconstpointer b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void assert_dir_names(const char *dir, const char *const *expected) {
        GDir *g = g_dir_open(dir, 0, NULL);
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
        const char *name;

        while ((name = g_dir_read_name(g)))
                g_ptr_array_add(a, g_strdup(name));
        g_dir_close(g);
        g_ptr_array_sort(a, compare_strp);
        g_assert_cmpuint(a->len, ==, g_strv_length((char **) expected));
        for (guint i = 0; i < a->len; i++)
                g_assert_cmpstr(a->pdata[i], ==, expected[i]);
        g_ptr_array_free(a, true);
}

static void test_state_dir_records(void) {
        g_autofree char *data = NULL, *error = NULL;
        StateDir *sd = NULL;
        Dir d;
        size_t size;
        struct stat st;

        dir_setup(&d);
        g_assert_cmpint(state_dir_open(d.path, &sd, &error), ==, 0);
        g_assert_cmpint(stat(d.jobs, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0700);
        assert_list(sd, (const char *const[]) { NULL });

        g_assert_cmpint(state_dir_write(sd, "1000-b.job", base_text, strlen(base_text), NULL), ==, 0);
        g_assert_cmpint(state_dir_write(sd, "0-a.job", "old\n", 4, NULL), ==, 0);
        g_assert_cmpint(stat(d.jobs, &st), ==, 0);
        {
                g_autofree char *p = g_build_filename(d.jobs, "0-a.job", NULL);
                g_assert_cmpint(stat(p, &st), ==, 0);
                g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
        }
        assert_list(sd, (const char *const[]) { "0-a.job", "1000-b.job", NULL });
        g_assert_cmpint(state_dir_read(sd, "1000-b.job", &data, &size, NULL), ==, 0);
        g_assert_cmpuint(size, ==, strlen(base_text));
        g_assert_cmpstr(data, ==, base_text);
        g_clear_pointer(&data, free);

        /* Replaced whole. */
        g_assert_cmpint(state_dir_write(sd, "0-a.job", "new\n", 4, NULL), ==, 0);
        g_assert_cmpint(state_dir_read(sd, "0-a.job", &data, &size, NULL), ==, 0);
        g_assert_cmpstr(data, ==, "new\n");
        g_clear_pointer(&data, free);

        /* An interrupted write leaves its temporary file and the old record: a write of the same
         * record is refused meanwhile (it is not ours to truncate), and listing at the next start
         * removes it, the record whole. */
        write_file(d.jobs, ".#0-a.job.tmp", "half a rec", 0600);
        write_file(d.jobs, ".#1-gone.job.tmp", "", 0600);
        g_assert_cmpint(state_dir_write(sd, "0-a.job", "newer\n", 6, &error), ==, -EEXIST);
        g_assert_nonnull(strstr(error, ".#0-a.job.tmp"));
        g_clear_pointer(&error, free);
        write_file(d.jobs, "README", "not a record", 0600);
        assert_list(sd, (const char *const[]) { "0-a.job", "1000-b.job", NULL });
        assert_dir_names(d.jobs, (const char *const[]) { "0-a.job", "1000-b.job", "README", NULL });
        g_assert_cmpint(state_dir_read(sd, "0-a.job", &data, &size, NULL), ==, 0);
        g_assert_cmpstr(data, ==, "new\n");
        g_clear_pointer(&data, free);
        g_assert_cmpint(state_dir_write(sd, "0-a.job", "newer\n", 6, NULL), ==, 0);
        g_assert_cmpint(state_dir_read(sd, "0-a.job", &data, &size, NULL), ==, 0);
        g_assert_cmpstr(data, ==, "newer\n");
        g_clear_pointer(&data, free);

        /* Removed, durably, once. */
        g_assert_cmpint(state_dir_remove(sd, "0-a.job", NULL), ==, 0);
        g_assert_cmpint(state_dir_remove(sd, "0-a.job", NULL), ==, -ENOENT);
        g_assert_cmpint(state_dir_read(sd, "0-a.job", &data, &size, NULL), ==, -ENOENT);
        assert_list(sd, (const char *const[]) { "1000-b.job", NULL });

        /* Only record names. */
        g_assert_cmpint(state_dir_write(sd, "../x.job", "x", 1, &error), ==, -EINVAL);
        g_clear_pointer(&error, free);
        g_assert_cmpint(state_dir_write(sd, ".#0-a.job.tmp", "x", 1, NULL), ==, -EINVAL);
        g_assert_cmpint(state_dir_read(sd, "README", &data, &size, NULL), ==, -EINVAL);
        g_assert_cmpint(state_dir_remove(sd, "README", NULL), ==, -EINVAL);

        state_dir_free(sd);
        dir_teardown(&d);
}

/* A record damaged beyond telling its job is set aside as "damaged/<name>.damaged": no longer
 * listed, out of "jobs/" (which the path unit watches), kept for whoever looks; an older one of the
 * same name is replaced. */
static void test_state_dir_set_aside(void) {
        g_autofree char *data = NULL, *error = NULL;
        StateDir *sd = NULL;
        Dir d;
        size_t size;

        dir_setup(&d);
        g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
        g_assert_cmpint(state_dir_write(sd, "0-a.job", "garbage\n", 8, NULL), ==, 0);
        g_assert_cmpint(state_dir_write(sd, "0-b.job", base_text, strlen(base_text), NULL), ==, 0);
        g_assert_cmpint(state_dir_set_aside(sd, "0-a.job", NULL), ==, 0);
        assert_list(sd, (const char *const[]) { "0-b.job", NULL });
        g_autofree char *damaged = g_build_filename(d.path, STATE_DIR_DAMAGED, NULL);
        assert_dir_names(d.jobs, (const char *const[]) { "0-b.job", NULL });
        assert_dir_names(damaged, (const char *const[]) { "0-a.job.damaged", NULL });
        struct stat st;
        g_assert_cmpint(stat(damaged, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0700);
        g_assert_cmpint(state_dir_read(sd, "0-a.job", &data, &size, NULL), ==, -ENOENT);

        g_assert_cmpint(state_dir_write(sd, "0-a.job", "more garbage\n", 13, NULL), ==, 0);
        g_assert_cmpint(state_dir_set_aside(sd, "0-a.job", NULL), ==, 0);
        assert_dir_names(d.jobs, (const char *const[]) { "0-b.job", NULL });
        assert_dir_names(damaged, (const char *const[]) { "0-a.job.damaged", NULL });
        g_autofree char *aside = g_build_filename(damaged, "0-a.job.damaged", NULL);
        g_assert_true(g_file_get_contents(aside, &data, NULL, NULL));
        g_assert_cmpstr(data, ==, "more garbage\n");

        g_assert_cmpint(state_dir_set_aside(sd, "0-a.job", &error), ==, -ENOENT);
        g_assert_nonnull(strstr(error, "0-a.job"));
        g_assert_cmpint(state_dir_set_aside(sd, "../x.job", NULL), ==, -EINVAL);

        state_dir_free(sd);
        dir_teardown(&d);
}

static void test_state_dir_read_refused(void) {
        g_autofree char *data = NULL, *error = NULL, *big = NULL;
        StateDir *sd = NULL;
        size_t size;
        Dir d;

        dir_setup(&d);
        g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);

        /* Others may read it. */
        write_file(d.jobs, "1-a.job", base_text, 0644);
        g_assert_cmpint(state_dir_read(sd, "1-a.job", &data, &size, &error), ==, -EPERM);
        g_assert_nonnull(strstr(error, "mode 0644"));
        g_clear_pointer(&error, free);

        /* Someone else's. */
        if (geteuid() == 0) {
                g_autofree char *p = g_build_filename(d.jobs, "1-b.job", NULL);
                write_file(d.jobs, "1-b.job", base_text, 0600);
                g_assert_cmpint(chown(p, 1000, 1000), ==, 0);
                g_assert_cmpint(state_dir_read(sd, "1-b.job", &data, &size, &error), ==, -EPERM);
                g_assert_nonnull(strstr(error, "belongs to uid 1000"));
                g_clear_pointer(&error, free);
        }

        /* A symlink, to a record that would pass. */
        write_file(d.path, "elsewhere", base_text, 0600);
        {
                g_autofree char *p = g_build_filename(d.jobs, "1-c.job", NULL);
                g_assert_cmpint(symlink("../elsewhere", p), ==, 0);
        }
        g_assert_cmpint(state_dir_read(sd, "1-c.job", &data, &size, &error), ==, -ELOOP);
        g_clear_pointer(&error, free);

        /* Not a regular file: a FIFO does not hang the reader, a directory is refused. */
        {
                g_autofree char *p = g_build_filename(d.jobs, "1-d.job", NULL), *q = g_build_filename(d.jobs, "1-e.job", NULL);
                g_assert_cmpint(mkfifo(p, 0600), ==, 0);
                g_assert_cmpint(mkdir(q, 0700), ==, 0);
        }
        g_assert_cmpint(state_dir_read(sd, "1-d.job", &data, &size, &error), ==, -EBADMSG);
        g_assert_nonnull(strstr(error, "not a regular file"));
        g_clear_pointer(&error, free);
        g_assert_cmpint(state_dir_read(sd, "1-e.job", &data, &size, NULL), ==, -EBADMSG);

        /* Larger than 1 MiB: damaged; exactly 1 MiB is read. */
        big = g_malloc(JOB_RECORD_SIZE_MAX + 2);
        memset(big, 'x', JOB_RECORD_SIZE_MAX + 1);
        big[JOB_RECORD_SIZE_MAX + 1] = '\0';
        g_assert_cmpint(state_dir_write(sd, "1-f.job", big, JOB_RECORD_SIZE_MAX + 1, NULL), ==, 0);
        g_assert_cmpint(state_dir_read(sd, "1-f.job", &data, &size, &error), ==, -EBADMSG);
        g_assert_nonnull(strstr(error, "larger than 1048576 bytes"));
        g_clear_pointer(&error, free);
        g_assert_cmpint(state_dir_write(sd, "1-f.job", big, JOB_RECORD_SIZE_MAX, NULL), ==, 0);
        g_assert_cmpint(state_dir_read(sd, "1-f.job", &data, &size, NULL), ==, 0);
        g_assert_cmpuint(size, ==, JOB_RECORD_SIZE_MAX);
        g_assert_cmpuint(strlen(data), ==, JOB_RECORD_SIZE_MAX);
        g_clear_pointer(&data, free);

        state_dir_free(sd);
        dir_teardown(&d);
}

static void test_state_dir_open_refused(void) {
        g_autofree char *error = NULL, *link = NULL;
        StateDir *sd = NULL;
        Dir d;

        dir_setup(&d);

        /* Group or others may look in. */
        g_assert_cmpint(chmod(d.path, 0750), ==, 0);
        g_assert_cmpint(state_dir_open(d.path, &sd, &error), ==, -EPERM);
        g_assert_null(sd);
        g_assert_nonnull(strstr(error, "has mode 0750"));
        g_clear_pointer(&error, free);
        g_assert_cmpint(chmod(d.path, 0700), ==, 0);

        /* jobs/ likewise, whoever made it. */
        g_assert_cmpint(mkdir(d.jobs, 0700), ==, 0);
        g_assert_cmpint(chmod(d.jobs, 0701), ==, 0);
        g_assert_cmpint(state_dir_open(d.path, &sd, &error), ==, -EPERM);
        g_assert_nonnull(strstr(error, "jobs' has mode 0701"));
        g_clear_pointer(&error, free);
        g_assert_cmpint(chmod(d.jobs, 0700), ==, 0);

        /* Someone else's. */
        if (geteuid() == 0) {
                g_assert_cmpint(chown(d.jobs, 1000, 1000), ==, 0);
                g_assert_cmpint(state_dir_open(d.path, &sd, &error), ==, -EPERM);
                g_assert_nonnull(strstr(error, "belongs to uid 1000"));
                g_clear_pointer(&error, free);
                g_assert_cmpint(chown(d.jobs, 0, 0), ==, 0);
        }

        /* A symlink is not followed, to the directory or to jobs/. */
        link = g_strconcat(d.path, "-link", NULL);
        g_assert_cmpint(symlink(d.path, link), ==, 0);
        {
                /* O_DIRECTORY|O_NOFOLLOW on a symlink: Linux says ENOTDIR. */
                int r = state_dir_open(link, &sd, &error);
                g_assert_true(r == -ENOTDIR || r == -ELOOP);
                g_assert_null(sd);
        }
        g_assert_nonnull(strstr(error, "symlink is not followed"));
        g_clear_pointer(&error, free);
        g_assert_cmpint(unlink(link), ==, 0);

        /* jobs/ a symlink to a directory that would pass. */
        {
                g_autofree char *other = g_strconcat(d.path, "/other", NULL);
                g_assert_cmpint(rmdir(d.jobs), ==, 0);
                g_assert_cmpint(mkdir(other, 0700), ==, 0);
                g_assert_cmpint(symlink("other", d.jobs), ==, 0);
                int r = state_dir_open(d.path, &sd, &error);
                g_assert_true(r == -ENOTDIR || r == -ELOOP);
                g_assert_null(sd);
                g_clear_pointer(&error, free);
                g_assert_cmpint(unlink(d.jobs), ==, 0);
        }

        g_assert_cmpint(state_dir_open("/nonexistent/blockjobd", &sd, &error), ==, -ENOENT);
        g_clear_pointer(&error, free);

        g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
        state_dir_free(sd);
        dir_teardown(&d);
}

/* What a restart sees: the records a crash left, parsed, whatever state each write was in. */
static void test_state_dir_crash(void) {
        g_autofree char *text1 = NULL, *text2 = NULL, *data = NULL;
        JobRecord *r = full_backup(), *p = NULL;
        StateDir *sd = NULL;
        size_t size;
        Dir d;

        dir_setup(&d);
        g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
        g_assert_cmpint(job_record_serialize(r, &text1, &size, NULL), ==, 0);
        g_assert_cmpint(state_dir_write(sd, "1000-nightly-1.job", text1, size, NULL), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 1 << 20, 1 << 20), ==, 0);
        g_assert_cmpint(job_record_serialize(r, &text2, &size, NULL), ==, 0);

        /* The new record's write was cut short: half of it in the temporary file. */
        {
                g_autofree char *half = g_strndup(text2, size / 2);
                write_file(d.jobs, ".#1000-nightly-1.job.tmp", half, 0600);
        }
        state_dir_free(sd);
        g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
        assert_list(sd, (const char *const[]) { "1000-nightly-1.job", NULL });
        assert_dir_names(d.jobs, (const char *const[]) { "1000-nightly-1.job", NULL });
        g_assert_cmpint(state_dir_read(sd, "1000-nightly-1.job", &data, &size, NULL), ==, 0);
        g_assert_cmpstr(data, ==, text1);
        g_assert_cmpint(job_record_parse(data, size, "1000-nightly-1.job", &p, NULL), ==, 0);
        g_assert_cmpuint(p->n_ranges, ==, 3);
        job_record_free(p);
        g_clear_pointer(&data, free);

        /* The next checkpoint goes through. */
        g_assert_cmpint(state_dir_write(sd, "1000-nightly-1.job", text2, strlen(text2), NULL), ==, 0);
        g_assert_cmpint(state_dir_read(sd, "1000-nightly-1.job", &data, &size, NULL), ==, 0);
        g_assert_cmpint(job_record_parse(data, size, "1000-nightly-1.job", &p, NULL), ==, 0);
        g_assert_true(job_record_equal(r, p));
        job_record_free(p);

        job_record_free(r);
        state_dir_free(sd);
        dir_teardown(&d);
}

/* A process killed at a random point while it replaces a record over and over: the directory then
 * holds one of the two records whole, and listing removes whatever the write left behind. (A
 * power cut is the fsyncs' business, which a test cannot cut; a kill is the same rename dance.) */
static void test_state_dir_killed(void) {
        g_autofree char *a = NULL, *b = NULL;
        g_autofree char *tmp_path = NULL;
        JobRecord *r = full_backup();
        unsigned cut = 0;
        size_t na, nb;
        Dir d;

        g_assert_cmpint(job_record_serialize(r, &a, &na, NULL), ==, 0);
        g_assert_cmpint(job_record_add_range(r, 1 << 20, 1 << 20), ==, 0);
        g_assert_cmpint(job_record_serialize(r, &b, &nb, NULL), ==, 0);
        job_record_free(r);

        dir_setup(&d);
        tmp_path = g_build_filename(d.jobs, ".#1000-nightly-1.job.tmp", NULL);
        for (int round = 0; round < 20; round++) {
                g_autofree char *data = NULL;
                StateDir *sd = NULL;
                char **names = NULL;
                size_t n, size;
                int status;
                pid_t pid;

                g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
                /* The record exists before the first replacement (a kill during a creation leaves
                 * no record, which is right too, but not what this checks). */
                if (round == 0)
                        g_assert_cmpint(state_dir_write(sd, "1000-nightly-1.job", a, na, NULL), ==, 0);
                pid = fork();
                g_assert_cmpint(pid, >=, 0);
                if (pid == 0) {
                        for (unsigned i = 0;; i++)
                                if (state_dir_write(sd, "1000-nightly-1.job", i % 2 ? b : a, i % 2 ? nb : na, NULL) < 0)
                                        _exit(1);
                }
                g_usleep(g_test_rand_int_range(1000, 50000));
                g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
                g_assert_true(WIFSIGNALED(status));
                state_dir_free(sd);

                /* The next start. */
                cut += g_file_test(tmp_path, G_FILE_TEST_EXISTS);
                g_assert_cmpint(state_dir_open(d.path, &sd, NULL), ==, 0);
                g_assert_cmpint(state_dir_list(sd, &names, &n, NULL), ==, 0);
                g_assert_cmpuint(n, ==, 1);
                state_dir_names_free(names);
                assert_dir_names(d.jobs, (const char *const[]) { "1000-nightly-1.job", NULL });
                g_assert_cmpint(state_dir_read(sd, "1000-nightly-1.job", &data, &size, NULL), ==, 0);
                g_assert_true((size == na && memcmp(data, a, na) == 0) || (size == nb && memcmp(data, b, nb) == 0));
                state_dir_free(sd);
        }
        g_test_message("%u of 20 kills left a temporary file behind", cut);
        dir_teardown(&d);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        /* The notes about removed temporary files, on stderr, would only clutter the TAP output. */
        log_set_max_level(LOG_ERR);
        g_test_add_func("/escape/round-trip", test_xescape);
        g_test_add_func("/escape/refused", test_xunescape_refused);
        g_test_add_func("/record/round-trip", test_round_trip);
        g_test_add_func("/record/minimal-text", test_minimal_text);
        g_test_add_func("/record/every-byte", test_every_byte);
        g_test_add_func("/record/names", test_names);
        g_test_add_func("/record/add-range", test_add_range);
        g_test_add_func("/record/base-parses", test_base_parses);
        g_test_add_func("/record/fuzz-seeds", test_fuzz_seeds);
        g_test_add_func("/record/refused", test_refused);
        g_test_add_func("/record/validate", test_validate);
        g_test_add_func("/state-dir/records", test_state_dir_records);
        g_test_add_func("/state-dir/set-aside", test_state_dir_set_aside);
        g_test_add_func("/state-dir/read-refused", test_state_dir_read_refused);
        g_test_add_func("/state-dir/open-refused", test_state_dir_open_refused);
        g_test_add_func("/state-dir/crash", test_state_dir_crash);
        g_test_add_func("/state-dir/killed", test_state_dir_killed);
        return g_test_run();
}
