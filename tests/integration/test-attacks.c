/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The attacks of issue 10, mounted as the security review mounted them: the real blockjobd, the
 * real blockjobd-opener and the real polkitd on a private system bus, an unprivileged caller
 * (nobody, through setpriv) with files, images and processes of its own, and root's calls where
 * the attack is on root. Each test asserts the safe outcome, the one that must hold once the
 * attack is fixed; the assertions on names and messages follow /work/notes/issue10-api.md
 * (SourceFormat, ImageInUse, LimitExceeded, per-owner ids and object paths).
 *
 * Each case runs in a process of its own (this program again, "--case PATH"), so that one
 * attack that kills the daemon or trips an assertion does not hide the others: the parent
 * reports each case, with the child's output, and cleans up after a child that died (its loop
 * devices, its directories, polkit's files); the child's standard output goes to the parent's
 * standard error, each line marked "| ". The child installs polkit's files under the machine
 * lock of polkit-fixture.h. Needs root, setpriv, polkitd and qemu-img; skipped elsewhere. */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "polkit-fixture.h"
#include "qemu-oracle.h"

#define KiB (G_GUINT64_CONSTANT(1) << 10)
#define MiB (G_GUINT64_CONSTANT(1) << 20)

#define CASE_TIMEOUT_USEC (150 * G_USEC_PER_SEC)
#define WAIT_MAX_USEC (30 * G_USEC_PER_SEC)

#define ERR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"
#define ERR_ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define ERR_LIMIT "org.blockjobd.Jobs1.Error.LimitExceeded"
#define ERR_NO_SUCH_JOB "org.blockjobd.Jobs1.Error.NoSuchJob"
#define ERR_IMAGE_IN_USE "org.blockjobd.Jobs1.Error.ImageInUse"
#define ERR_IMAGE "org.blockjobd.Jobs1.Error.ImageError"

/* ---- the running case, for the signal handler --------------------------------------------------- */

static char daemon_log_path[4096];

/* Async-signal-safe: what the daemon said, onto stderr, and stopped processes resumed. */
static void on_fatal(void) {
        char buf[4096];
        ssize_t n;
        int fd;

        bus_stopper_resume_all();
        if (!daemon_log_path[0] || (fd = open(daemon_log_path, O_RDONLY | O_CLOEXEC)) < 0)
                return;
        /* The end of it: a flood of lines says nothing more at the 1000th. */
        if (lseek(fd, -64 * 1024, SEEK_END) > 0)
                (void) !write(STDERR_FILENO, "---- blockjobd said, last 64 KiB:\n", 34);
        else
                (void) !write(STDERR_FILENO, "---- blockjobd said:\n", 21);
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                (void) !write(STDERR_FILENO, buf, (size_t) n);
        (void) !write(STDERR_FILENO, "---- (end)\n", 11);
        close(fd);
}

/* ---- running things --------------------------------------------------------------------------- */

static bool exists(const char *path) {
        struct stat st;
        return lstat(path, &st) >= 0;
}

static char *run_sh(const char *user_dir, bool as_nobody, const char *cmd) {
        g_autofree char *script = g_strdup_printf("cd '%s' && %s", user_dir, cmd), *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        const char *nobody[] = { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--pdeathsig=KILL",
                                 "/bin/sh", "-ec", script, NULL };
        const char *root[] = { "/bin/sh", "-ec", script, NULL };
        int status;

        if (!g_spawn_sync(NULL, (char **) (as_nobody ? nobody : root), NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                          &err, &status, &error))
                g_error("could not run %s: %s", cmd, error->message);
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s%s failed: %s%s", as_nobody ? "(as nobody) " : "", cmd, out, err);
        return g_steal_pointer(&out);
}

/* A shell command line, in the test's directory, as root; it must succeed. */
static void root_sh(BusFixture *f, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void root_sh(BusFixture *f, const char *format, ...) {
        g_autofree char *cmd = NULL;
        va_list ap;

        va_start(ap, format);
        cmd = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_free(run_sh(f->dir, false, cmd));
}

/* The same as nobody, in nobody's directory: what nobody makes is nobody's. */
static void nobody_sh(PolkitFixture *pf, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void nobody_sh(PolkitFixture *pf, const char *format, ...) {
        g_autofree char *cmd = NULL;
        va_list ap;

        va_start(ap, format);
        cmd = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_free(run_sh(pf->nobody_dir, true, cmd));
}

static char *nobody_path(PolkitFixture *pf, const char *name) {
        return g_build_filename(pf->nobody_dir, name, NULL);
}

/* A manager method called by nobody; ARGS in GVariant text format. */
static char *nobody_manager_call(PolkitFixture *pf, const char *method, const char *args) {
        return bus_as_nobody(&pf->bus, "call", MANAGER_PATH, MANAGER_IFACE, method, args, NULL);
}

/* The object path in a client's "ok (objectpath '...',)". */
static char *answer_path(const char *out) {
        const char *p = strstr(out, "objectpath '");
        bus_assert_answer(out, "ok");
        g_assert_nonnull(p);
        p += strlen("objectpath '");
        return g_strndup(p, strchr(p, '\'') - p);
}

/* nobody creates a job; the answer must be ok; returns the job's object path. */
static char *nobody_start(PolkitFixture *pf, const char *method, const char *args) {
        g_autofree char *out = nobody_manager_call(pf, method, args);
        return answer_path(out);
}

static bool daemon_alive(BusFixture *f) {
        return bus_name_has_owner(f);
}

#define WAIT_FOR(f, cond, ...)                                                                          \
        do {                                                                                            \
                gint64 _end = g_get_monotonic_time() + WAIT_MAX_USEC;                                   \
                while (!(cond)) {                                                                       \
                        if (g_get_monotonic_time() > _end)                                              \
                                g_error("timed out waiting: " __VA_ARGS__);                             \
                        bus_iterate_for((f), 10 * 1000);                                                \
                }                                                                                       \
        } while (0)

/* Whether "<id>:<status>" is among the recorded StatusChanged, since 'from' (a length of the
 * record taken before). */
static bool status_seen_since(BusFixture *f, gsize from, const char *id, const char *status) {
        g_autofree char *word = g_strdup_printf(" %s:%s ", id, status);
        g_autofree char *record = g_strconcat(" ", f->statuses->str + from, NULL);
        return strstr(record, word);
}

static bool status_seen(BusFixture *f, const char *id, const char *status) {
        return status_seen_since(f, 0, id, status);
}

/* Until the job is gone (auto-dismissed) or has concluded, or the daemon is. */
static void wait_job_over(BusFixture *f, const char *id) {
        WAIT_FOR(f, status_seen(f, id, "null") || status_seen(f, id, "concluded") || !daemon_alive(f),
                 "job '%s' to end (seen: %s)", id, f->statuses->str);
}

static void assert_daemon_alive(BusFixture *f, const char *after) {
        if (!daemon_alive(f))
                g_error("blockjobd is gone after %s", after);
        if (f->daemon && g_subprocess_get_identifier(f->daemon) == NULL)
                g_error("blockjobd exited after %s", after);
}

/* Root's job runs to its end: the daemon still serves everyone. */
static void assert_root_job_completes(BusFixture *f, const char *id) {
        g_autofree char *source = bus_fixture_path(f, "root-alive.img"), *target = NULL, *path = NULL;

        assert_daemon_alive(f, "the attack");
        if (!exists(source))
                bus_make_file(source, 4 * MiB);
        target = g_strdup_printf("%s/%s.img", f->dir, id);
        path = bus_backup(f, source, target, bus_opts("job-id", g_variant_new_string(id), NULL));
        WAIT_FOR(f, status_seen(f, id, "null") || !daemon_alive(f), "root's job '%s' to complete", id);
        g_assert_true(daemon_alive(f));
        g_assert_true(status_seen(f, id, "pending"));
        bus_assert_same_file(source, target);
}

static char *checksum_file(const char *path) {
        g_autofree char *data = NULL;
        gsize len;

        g_assert_true(g_file_get_contents(path, &data, &len, NULL));
        return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *) data, len);
}

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                g_error("expected a text containing \"%s\", got: %s", part, text);
}

/* The answer to a call, in the client's format: "ok <reply>" or "<error name>: <message>". */
static char *format_answer(GVariant *reply, GError *error) {
        if (error) {
                g_autofree char *name = g_dbus_error_get_remote_error(error);
                g_dbus_error_strip_remote_error(error);
                return g_strdup_printf("%s: %s", name ?: "(local)", error->message);
        }
        g_autofree char *text = g_variant_print(reply, TRUE);
        return g_strdup_printf("ok %s", text);
}

/* A manager method called by root, with descriptors (NULL: none); never fails the test. */
static char *root_manager_call_fds(BusFixture *f, const char *method, GVariant *params, GUnixFDList *fds) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = bus_call_with_fds(f, MANAGER_PATH, MANAGER_IFACE, method, params, fds, &error);
        return format_answer(reply, error);
}

static char *root_manager_call(BusFixture *f, const char *method, GVariant *params) {
        return root_manager_call_fds(f, method, params, NULL);
}

/* The answer is this D-Bus error (and, if given, says 'part'). */
static void assert_error(const char *answer, const char *error_name, const char *part) {
        g_autofree char *prefix = g_strconcat(error_name, ": ", NULL);
        if (!g_str_has_prefix(answer, prefix))
                g_error("expected %s, got: %s", error_name, answer);
        if (part)
                assert_contains(answer, part);
}

static guint64 daemon_rss(BusFixture *f) {
        g_autofree char *file = g_strdup_printf("/proc/%d/status", (int) bus_daemon_pid(f)), *text = NULL;
        const char *p;

        g_assert_true(g_file_get_contents(file, &text, NULL, NULL));
        p = strstr(text, "\nVmRSS:");
        g_assert_nonnull(p);
        return g_ascii_strtoull(p + strlen("\nVmRSS:"), NULL, 10) * KiB;
}

static guint64 progress_of(BusFixture *f, const char *path) {
        return bus_get_uint64(f, path, "CurrentProgress");
}

static unsigned count_occurrences(const char *text, const char *needle) {
        unsigned n = 0;
        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static char *daemon_log(BusFixture *f) {
        char *text = NULL;
        g_assert_true(g_file_get_contents(f->daemon_log, &text, NULL, NULL));
        return text;
}

static void put_be64(guint8 *p, guint64 v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (guint8) v;
}

static void put_be32(guint8 *p, guint32 v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (guint8) v;
}

static guint64 get_be(const guint8 *p, unsigned n) {
        guint64 v = 0;
        for (unsigned i = 0; i < n; i++)
                v = v << 8 | p[i];
        return v;
}

/* Reads or writes the first bytes of a file in place. */
static void file_pread(const char *path, void *buf, size_t n, off_t offset) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, buf, n, offset), ==, (ssize_t) n);
        close(fd);
}

static void file_pwrite(const char *path, const void *buf, size_t n, off_t offset) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, buf, n, offset), ==, (ssize_t) n);
        g_assert_cmpint(fsync(fd), ==, 0);
        close(fd);
}

/* The first L1 entry of a qcow2 image (the pointer to its first L2 table) made to point 256 MiB
 * into the file, past its end: the image opens, and reading its first cluster fails as corrupt. */
static void corrupt_first_l2_pointer(const char *path) {
        guint8 hdr[48], entry[8];

        file_pread(path, hdr, sizeof(hdr), 0);
        g_assert_true(memcmp(hdr, "QFI\xfb", 4) == 0);
        file_pread(path, entry, sizeof(entry), (off_t) get_be(hdr + 40, 8));
        g_assert_cmpuint(get_be(entry, 8), !=, 0);
        put_be64(entry, (G_GUINT64_CONSTANT(1) << 63) | (256 * MiB));
        file_pwrite(path, entry, sizeof(entry), (off_t) get_be(hdr + 40, 8));
}

/* A program run with these arguments (no shell: names may hold any byte), as nobody in nobody's
 * directory; it must succeed. */
static void nobody_run(PolkitFixture *pf, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        int status;

        for (const char *const *a = (const char *const[]) { "setpriv", "--reuid=nobody", "--regid=nogroup",
                                                             "--clear-groups", "--pdeathsig=KILL", NULL };
             *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        const char *program = args[0];

        for (; *args; args++)
                g_ptr_array_add(argv, (char *) *args);
        g_ptr_array_add(argv, NULL);
        if (!g_spawn_sync(pf->nobody_dir, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                          &status, &error))
                g_error("could not run %s: %s", program, error->message);
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s failed: %s%s", program, out, err);
}

/* ---- a file only root may read ----------------------------------------------------------------- */

static char secret_mark[64];

/* <dir>/rootonly/secret: 64 KiB of a recognizable line, mode 0600 in a directory of mode 0700. */
static char *make_secret(BusFixture *f) {
        g_autofree char *dir = bus_fixture_path(f, "rootonly");
        char *path = g_build_filename(dir, "secret", NULL);
        g_autoptr(GString) text = g_string_new(NULL);

        g_snprintf(secret_mark, sizeof(secret_mark), "ROOT-ONLY-SECRET-%08x", g_random_int());
        while (text->len < 64 * KiB)
                g_string_append_printf(text, "%s\n", secret_mark);
        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        g_assert_true(g_file_set_contents(path, text->str, (gssize) text->len, NULL));
        g_assert_cmpint(g_chmod(path, 0600), ==, 0);
        return path;
}

static bool file_has_secret(const char *path) {
        g_autofree char *data = NULL;
        gsize len;

        g_assert_true(g_file_get_contents(path, &data, &len, NULL));
        return memmem(data, len, secret_mark, strlen(secret_mark)) != NULL;
}

/* The file (if it exists) holds the secret nowhere: neither in its bytes nor in what it reads as,
 * as an image of its own (a qcow2 image's backing file is not opened: it would be read by us). */
static void assert_no_secret(BusFixture *f, const char *path) {
        g_autofree char *flat = g_strconcat(path, ".flat", NULL), *head = NULL, *out = NULL, *err = NULL;
        gsize len = 0;

        if (!exists(path))
                return;
        if (file_has_secret(path))
                g_error("%s holds the root-only file's content (%s...)", path, secret_mark);
        g_assert_true(g_file_get_contents(path, &head, &len, NULL));
        if (len >= 4 && memcmp(head, "QFI\xfb", 4) == 0) {
                if (oracle_try(&out, &err,
                               "qemu-img convert -U -O raw 'json:{\"driver\": \"qcow2\", \"backing\": null, "
                               "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}' %s",
                               path, flat) != 0)
                        g_error("qemu-img convert %s: %s%s", path, out, err);
                if (file_has_secret(flat))
                        g_error("%s reads as the root-only file's content (%s...)", path, secret_mark);
                g_unlink(flat);
        }
}

/* ---- polkit rules ------------------------------------------------------------------------------ */

/* nobody may create every kind of job and use every verb on its own jobs (not manage other
 * users' jobs). With 'hold', the check of that action waits until the file <dir>/release exists
 * (at most ~8 s: polkit.spawn gives up after 10). */
static char *rules_for_nobody(BusFixture *f, const char *hold) {
        g_autofree char *release = bus_fixture_path(f, "release");

        return g_strdup_printf(
                "polkit.addRule(function(action, subject) {\n"
                "        if (subject.user != 'nobody' || action.id.indexOf('org.blockjobd.') != 0 ||\n"
                "            action.id == 'org.blockjobd.job.manage-other-users')\n"
                "                return polkit.Result.NOT_HANDLED;\n"
                "        if (action.id == '%s')\n"
                "                polkit.spawn(['/bin/sh', '-c', 'i=0; while [ ! -e %s ] && [ $i -lt 160 ]; do "
                "sleep 0.05; i=$((i+1)); done']);\n"
                "        return polkit.Result.YES;\n"
                "});\n",
                hold ?: "-", release);
}

static void start_polkit_for_nobody(PolkitFixture *pf, const char *hold) {
        g_autofree char *rules = rules_for_nobody(&pf->bus, hold);
        polkit_fixture_start(pf, rules);
}

static void release_polkit(BusFixture *f) {
        g_autofree char *release = bus_fixture_path(f, "release");
        g_assert_true(g_file_set_contents(release, "", 0, NULL));
}

/* ---- the cases --------------------------------------------------------------------------------- */

typedef struct AttackCase {
        const char *name;
        void (*run)(PolkitFixture *pf);
        const char *daemon_args;        /* NULL: --idle-timeout=0 */
        bool without_polkit;            /* root's calls only: no polkit files, no machine lock */
        bool needs_loop;
} AttackCase;

/* ---- 1. any file read as root ------------------------------------------------------------------- */

/* nobody's top.qcow2 (512 B clusters, 512 bytes written at 65024: a partial write into the first
 * 64 KiB cluster of a qcow2 copy) over b.raw, then rebased (-u: only the name in the header
 * changes) onto 'backing_name'. */
static void make_rebased_top(PolkitFixture *pf, const char *backing_name) {
        nobody_sh(pf,
                  "qemu-img create -q -f raw b.raw 1M && "
                  "qemu-img create -q -f qcow2 -o cluster_size=512 -b b.raw -F raw top.qcow2 && "
                  "qemu-io -f qcow2 -c 'write -P 0x5a 65024 512' top.qcow2 >/dev/null && "
                  "qemu-img rebase -u -b '%s' -F raw top.qcow2",
                  backing_name);
}

/* The review's attack: the chain passed as descriptors, the top naming the secret; a sync=top
 * copy into a qcow2 target of nobody's. */
static void test_any_file_read_fds(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *secret = make_secret(f), *top = nobody_path(pf, "top.qcow2"), *b = nobody_path(pf, "b.raw");
        g_autofree char *out = nobody_path(pf, "out.qcow2"), *fd_top = g_strdup_printf("--fd=r:%s", top);
        g_autofree char *fd_b = g_strdup_printf("--fd=r:%s", b), *args = NULL, *answer = NULL;

        start_polkit_for_nobody(pf, NULL);
        make_rebased_top(pf, secret);

        args = g_strdup_printf("('%s', '%s', @a{sv} {'source-fd': <handle 0>, 'chain-fds': <[handle 1]>, "
                               "'sync': <'top'>, 'format': <'qcow2'>, 'job-id': <'leak'>})",
                               top, out);
        answer = bus_as_nobody(f, fd_top, fd_b, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        g_test_message("nobody's Backup: %s", answer);
        if (g_str_has_prefix(answer, "ok"))
                wait_job_over(f, "leak");
        assert_daemon_alive(f, "nobody's backup");
        assert_no_secret(f, out);
}

/* A directory of nobody's on a tmpfs (/dev/shm), named after the case's directory, so that the
 * parent removes it should the case die: for symlinks that flip faster than ext4's journal lets
 * them where the jobs write. */
static char *nobody_shm_dir(void) {
        g_autofree char *base = g_path_get_basename(g_get_tmp_dir());
        char *dir = g_build_filename("/dev/shm", base, NULL);

        g_assert_true(g_str_has_prefix(base, "blockjobd-attacks-"));
        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        g_assert_cmpint(chown(dir, 65534, 65534), ==, 0);
        return dir;
}

static void remove_shm_dir(const char *dir) {
        g_autofree char *cmd = g_strdup_printf("rm -rf %s", dir);
        g_free(oracle_run("%s", cmd));
}

/* The same by name, through the opener: the opener follows the top's backing name (a symlink of
 * nobody's) as nobody, the daemon then again as root; nobody flips the symlink between b.raw and
 * the secret meanwhile. Each try wins the race with a fair chance (1 in 4) while the daemon opens
 * names itself. */
#define TRIES 40

static void test_any_file_read_names(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *secret = make_secret(f), *top = nobody_path(pf, "top.qcow2"), *b = nobody_path(pf, "b.raw");
        g_autofree char *shm = nobody_shm_dir(), *link = g_build_filename(shm, "link", NULL);
        g_autoptr(GSubprocess) flipper = NULL;
        unsigned accepted = 0;

        start_polkit_for_nobody(pf, NULL);
        make_rebased_top(pf, link);
        g_assert_cmpint(symlink(b, link), ==, 0);
        g_assert_cmpint(lchown(link, 65534, 65534), ==, 0);

        flipper = bus_as_nobody_start(f, "flip-link", link, b, secret, "60", NULL);
        for (unsigned i = 0; i < TRIES; i++) {
                g_autofree char *id = g_strdup_printf("leak%u", i), *out = g_strdup_printf("%s/out%u.qcow2", pf->nobody_dir, i);
                g_autofree char *args = g_strdup_printf("('%s', '%s', @a{sv} {'sync': <'top'>, 'format': <'qcow2'>, "
                                                        "'job-id': <'%s'>})",
                                                        top, out, id);
                g_autofree char *answer = nobody_manager_call(pf, "Backup", args);

                g_test_message("try %u: %.160s", i, answer);
                if (g_str_has_prefix(answer, "ok")) {
                        accepted++;
                        wait_job_over(f, id);
                }
                assert_daemon_alive(f, "nobody's backup");
                assert_no_secret(f, out);
        }
        /* Still flipping (an early end would have made the tries pointless). */
        if (!g_subprocess_get_identifier(flipper)) {
                g_autofree char *flipped = bus_as_nobody_finish(flipper);
                g_error("the symlink flipper ended early: %s", flipped);
        }
        g_subprocess_force_exit(flipper);
        g_assert_true(g_subprocess_wait(flipper, NULL, NULL));
        g_test_message("%u of %u backups were accepted", accepted, TRIES);
        remove_shm_dir(shm);
}

/* ---- 2. a header that overflows qcow2_set_backing ------------------------------------------------ */

/* Rewrites the header extensions of a v3 qcow2 image with 512-byte clusters: one unknown
 * extension whose data ends 4 bytes before the end of cluster 0, and the 4-byte backing file
 * name in those last bytes, inside the extension's padding (no backing format extension). QEMU
 * reads extensions only up to the backing name, and qemu-img check finds nothing wrong. */
static void make_tight_header(const char *path, const char *name4) {
        guint8 hdr[512];
        guint32 length;

        g_assert_cmpuint(strlen(name4), ==, 4);
        file_pread(path, hdr, sizeof(hdr), 0);
        g_assert_true(memcmp(hdr, "QFI\xfb", 4) == 0);
        g_assert_cmpuint(get_be(hdr + 4, 4), ==, 3);
        g_assert_cmpuint(get_be(hdr + 20, 4), ==, 9);
        length = (guint32) get_be(hdr + 100, 4);
        g_assert_cmpuint(length % 8, ==, 0);

        memset(hdr + length, 0, sizeof(hdr) - length);
        put_be32(hdr + length, 0x6b1a7e57);
        put_be32(hdr + length + 4, (guint32) sizeof(hdr) - 4 - length - 8);
        memcpy(hdr + sizeof(hdr) - 4, name4, 4);
        put_be64(hdr + 8, sizeof(hdr) - 4);
        put_be32(hdr + 16, 4);
        file_pwrite(path, hdr, sizeof(hdr), 0);
}

static void assert_checks_clean(PolkitFixture *pf, const char *image) {
        g_autofree char *p = nobody_path(pf, image), *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img check -U %s", p) != 0)
                g_error("qemu-img check %s: %s%s", image, out, err);
}

/* A call of nobody's that rewrites an image's header: whatever it answers, the daemon lives on. */
static void nobody_rewrite(PolkitFixture *pf, const char *method, const char *image, const char *options,
                           const char *id) {
        BusFixture *f = &pf->bus;
        g_autofree char *p = nobody_path(pf, image), *args = g_strdup_printf("('%s', @a{sv} %s)", p, options);
        g_autofree char *answer = nobody_manager_call(pf, method, args), *after = NULL;

        g_test_message("nobody's %s %s %s: %s", method, image, options, answer);
        if (g_str_has_prefix(answer, "ok")) {
                wait_job_over(f, id);
                /* The job's end may still be on its way out: one more look a little later. */
                bus_iterate_for(f, 200 * 1000);
        }
        after = g_strdup_printf("nobody's %s of %s", method, image);
        assert_daemon_alive(f, after);
}

static void test_header_overflow(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *base = nobody_path(pf, "base"), *midq = nobody_path(pf, "midq"), *opts = NULL;

        start_polkit_for_nobody(pf, NULL);

        /* Stream: top.qcow2 over "base" (raw). */
        nobody_sh(pf, "qemu-img create -q -f raw base 1M && "
                      "qemu-img create -q -f qcow2 -o cluster_size=512 -b base -F raw top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -P 0x11 0 64k' top.qcow2 >/dev/null");
        g_autofree char *top = nobody_path(pf, "top.qcow2");
        make_tight_header(top, "base");
        assert_checks_clean(pf, "top.qcow2");

        /* Commit of the middle: top2.qcow2 over "midq" (qcow2) over base2.raw; committing midq
         * rewrites top2's header. */
        nobody_sh(pf, "qemu-img create -q -f raw base2.raw 1M && "
                      "qemu-img create -q -f qcow2 -b base2.raw -F raw midq && "
                      "qemu-io -f qcow2 -c 'write -P 0x22 64k 64k' midq >/dev/null && "
                      "qemu-img create -q -f qcow2 -o cluster_size=512 -b midq -F qcow2 top2.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -P 0x33 0 64k' top2.qcow2 >/dev/null");
        g_autofree char *top2 = nobody_path(pf, "top2.qcow2");
        make_tight_header(top2, "midq");
        assert_checks_clean(pf, "top2.qcow2");

        /* As the review did it, then with the base's format named (new option). */
        opts = g_strdup_printf("{'base': <'%s'>, 'job-id': <'s1'>}", base);
        nobody_rewrite(pf, "Stream", "top.qcow2", opts, "s1");
        g_free(opts);
        opts = g_strdup_printf("{'base': <'%s'>, 'base-format': <'raw'>, 'job-id': <'s2'>}", base);
        nobody_rewrite(pf, "Stream", "top.qcow2", opts, "s2");
        g_free(opts);
        opts = g_strdup_printf("{'top': <'%s'>, 'job-id': <'c1'>}", midq);
        nobody_rewrite(pf, "Commit", "top2.qcow2", opts, "c1");
        g_free(opts);
        opts = g_strdup_printf("{'top': <'%s'>, 'base-format': <'raw'>, 'job-id': <'c2'>}", midq);
        nobody_rewrite(pf, "Commit", "top2.qcow2", opts, "c2");

        assert_root_job_completes(f, "alive");
        assert_checks_clean(pf, "top.qcow2");
        assert_checks_clean(pf, "top2.qcow2");
}

/* ---- 3. format probing ----------------------------------------------------------------------------- */

/* A file whose content is a small qcow2 image naming the secret as its backing file, padded to
 * 1 MiB: what a guest can write into its raw disk. */
static void make_fake_qcow2(BusFixture *f, const char *name, const char *secret) {
        root_sh(f, "qemu-img create -q -f qcow2 -u -b %s -F raw hdr.qcow2 1M && cp hdr.qcow2 %s && "
                   "truncate -s 1M %s && rm hdr.qcow2",
                secret, name, name);
}

/* A backup that must not carry the secret: refused as InvalidArgs (a probed qcow2 with a
 * backing file), or made without it. */
static void backup_without_format(BusFixture *f, const char *source, const char *target, const char *id) {
        g_autofree char *answer = root_manager_call(
                f, "Backup", g_variant_new("(ss@a{sv})", source, target, bus_opts("job-id", g_variant_new_string(id), NULL)));

        g_test_message("root's Backup of %s without source-format: %s", source, answer);
        if (g_str_has_prefix(answer, "ok"))
                wait_job_over(f, id);
        else
                assert_error(answer, ERR_INVALID_ARGS, NULL);
        assert_no_secret(f, target);
}

/* A backup with the source's format named: it runs, and the job says which format it read. */
static void backup_with_format(BusFixture *f, const char *source, const char *target, const char *format,
                               const char *target_format, const char *id) {
        g_autofree char *path = NULL, *error = NULL, *source_format = NULL;
        GVariant *options = target_format ? bus_opts("source-format", g_variant_new_string(format), "format",
                                                     g_variant_new_string(target_format), "job-id",
                                                     g_variant_new_string(id), "auto-dismiss",
                                                     g_variant_new_boolean(FALSE), NULL)
                                          : bus_opts("source-format", g_variant_new_string(format), "job-id",
                                                     g_variant_new_string(id), "auto-dismiss",
                                                     g_variant_new_boolean(FALSE), NULL);
        g_autofree char *answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", source, target, options));

        g_test_message("root's Backup of %s with source-format %s: %s", source, format, answer);
        path = answer_path(answer);
        WAIT_FOR(f, status_seen(f, id, "concluded"), "job '%s' to conclude", id);
        error = bus_get_string(f, path, "Error");
        g_assert_cmpstr(error, ==, "");
        source_format = bus_get_string(f, path, "SourceFormat");
        g_assert_cmpstr(source_format, ==, format);
        bus_job_call(f, path, "Dismiss");
        assert_no_secret(f, target);
}

/* (a) A raw disk whose guest wrote a qcow2 header into it. */
static void test_format_probing_raw_guest(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *secret = make_secret(f), *guest = bus_fixture_path(f, "guest.raw");
        g_autofree char *t1 = bus_fixture_path(f, "backup1.img"), *t2 = bus_fixture_path(f, "backup2.img");

        make_fake_qcow2(f, "guest.raw", secret);
        backup_without_format(f, guest, t1, "probed");
        backup_with_format(f, guest, t2, "raw", NULL, "as-raw");
        /* Given as raw: copied byte for byte, header and all. */
        bus_assert_same_file(guest, t2);
}

/* (b) A v2 image (compat=0.10) whose backing file is recorded as raw, and looks like qcow2. */
static void test_format_probing_v2_backing(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *secret = make_secret(f), *top = bus_fixture_path(f, "top.qcow2");
        g_autofree char *oracle = bus_fixture_path(f, "oracle.raw"), *t1 = bus_fixture_path(f, "backup1.img");
        g_autofree char *t2 = bus_fixture_path(f, "backup2.raw");

        make_fake_qcow2(f, "base.raw", secret);
        root_sh(f, "qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw top.qcow2 && "
                   "qemu-io -f qcow2 -c 'write -P 0x44 512k 64k' top.qcow2 >/dev/null && "
                   "qemu-img convert -O raw top.qcow2 oracle.raw");
        g_assert_false(file_has_secret(oracle));

        backup_without_format(f, top, t1, "probed");
        backup_with_format(f, top, t2, "qcow2", "raw", "as-qcow2");
        /* base.raw read as raw, as QEMU reads it. */
        bus_assert_same_file(oracle, t2);
}

/* ---- 4. a verb authorized for one's own job, applied to another's ---------------------------------- */

static void test_verb_on_replaced_job(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "s.img"), *target = nobody_path(pf, "t.img"), *args = NULL;
        g_autofree char *mine = NULL, *roots = NULL, *answer = NULL, *status = NULL;
        g_autofree char *root_source = bus_fixture_path(f, "root.img"), *root_target = bus_fixture_path(f, "root-t.img");
        g_autoptr(GSubprocess) cancel = NULL;
        gsize mark;

        /* Every Cancel of nobody's waits in polkit until the test lets it go. */
        start_polkit_for_nobody(pf, "org.blockjobd.job.cancel");
        polkit_fixture_watch_checks(pf);
        bus_make_file(source, MiB);
        bus_make_file(root_source, 32 * MiB);

        /* nobody's job 'x', concluded and kept. */
        args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'x'>, 'auto-dismiss': <false>})", source, target);
        mine = nobody_start(pf, "Backup", args);
        WAIT_FOR(f, status_seen(f, "x", "concluded"), "nobody's job to conclude");

        /* nobody cancels its own job; polkit takes its time. */
        cancel = bus_as_nobody_start(f, "call", mine, JOB_IFACE, "Cancel", "()", NULL);
        WAIT_FOR(f, polkit_fixture_checks_seen(pf, "org.blockjobd.job.cancel") >= 1, "the check of nobody's Cancel");

        /* Meanwhile x goes, and root's own job x comes. */
        mark = f->statuses->len;
        bus_job_call(f, mine, "Dismiss");
        WAIT_FOR(f, status_seen_since(f, mark, "x", "null"), "nobody's job to go");
        roots = bus_backup(f, root_source, root_target,
                           bus_opts("job-id", g_variant_new_string("x"), "speed", g_variant_new_uint64(MiB), NULL));
        mark = f->statuses->len;
        WAIT_FOR(f, progress_of(f, roots) > 0, "root's job to make progress");

        /* polkit answers nobody's Cancel. */
        release_polkit(f);
        answer = bus_as_nobody_finish(cancel);
        g_test_message("nobody's Cancel answered: %s", answer);
        bus_iterate_for(f, 300 * 1000);

        if (status_seen_since(f, mark, "x", "aborting") || status_seen_since(f, mark, "x", "null"))
                g_error("root's job was cancelled by nobody's Cancel (seen: %s)", f->statuses->str + mark);
        status = bus_get_string(f, roots, "Status");
        g_assert_cmpstr(status, ==, "running");
        assert_error(answer, ERR_NO_SUCH_JOB, NULL);

        /* Root's job runs to its end. */
        g_variant_unref(bus_call(f, roots, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL));
        WAIT_FOR(f, status_seen_since(f, mark, "x", "null"), "root's job to complete");
        g_assert_false(status_seen_since(f, mark, "x", "aborting"));
        bus_assert_same_file(root_source, root_target);
}

/* ---- 5. root's commit follows a name nobody planted ------------------------------------------------ */

/* Root commits 'image' (job "c") and, if that starts, sees it to its end. Returns the answer. */
static char *root_commit_to_end(BusFixture *f, const char *image) {
        char *answer = root_manager_call(f, "Commit", g_variant_new("(s@a{sv})", image,
                                                                    bus_opts("job-id", g_variant_new_string("c"), NULL)));

        g_test_message("root's Commit: %s", answer);
        if (g_str_has_prefix(answer, "ok")) {
                g_autofree char *path = answer_path(answer);
                WAIT_FOR(f, status_seen(f, "c", "ready") || status_seen(f, "c", "concluded"), "the commit");
                if (status_seen(f, "c", "ready"))
                        bus_job_call(f, path, "Complete");
                wait_job_over(f, "c");
        }
        return answer;
}

static void test_commit_follows_planted_name(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *dir = bus_fixture_path(f, "rootonly"), *crontab = g_build_filename(dir, "crontab", NULL);
        g_autofree char *top = nobody_path(pf, "top.qcow2"), *sum = NULL, *sum_after = NULL, *answer = NULL;

        /* A file of root's, in a directory only root may enter, as large as nobody's image. */
        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        bus_make_file(crontab, MiB);
        sum = checksum_file(crontab);

        /* nobody's chain, then its base replaced by a link to root's file. */
        nobody_sh(pf, "qemu-img create -q -f raw base.raw 1M && "
                      "qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -P 0x66 0 256k' top.qcow2 >/dev/null && "
                      "rm base.raw && ln -s %s base.raw",
                      crontab);

        /* Root commits nobody's image. */
        answer = root_commit_to_end(f, top);

        sum_after = checksum_file(crontab);
        if (!g_str_equal(sum, sum_after))
                g_error("root's commit wrote into %s, which nobody's base.raw linked to", crontab);
}

/* ---- 5b. root's overlay on a user's base ------------------------------------------------------------ */

/* Root's own image over nobody's: nobody writes nothing of root's, but its base names what the
 * chain goes on with. Root's default commit goes to the bottom of the chain, which nobody chose
 * to be a file of root's. */
static void test_commit_through_root_overlay(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *dir = bus_fixture_path(f, "rootonly"), *crontab = g_build_filename(dir, "crontab", NULL);
        g_autofree char *base = nobody_path(pf, "base.qcow2"), *top = bus_fixture_path(f, "overlay.qcow2");
        g_autofree char *sum = NULL, *sum_after = NULL, *answer = NULL;

        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        bus_make_file(crontab, MiB);
        sum = checksum_file(crontab);

        /* nobody's base, on a raw file of its own at first; then rebased onto root's file. */
        nobody_sh(pf, "qemu-img create -q -f raw mine.raw 1M && "
                      "qemu-img create -q -f qcow2 -b mine.raw -F raw base.qcow2 && "
                      "qemu-img rebase -u -b %s -F raw base.qcow2", crontab);
        root_sh(f, "qemu-img create -q -f qcow2 -b %s -F qcow2 overlay.qcow2 && "
                   "qemu-io -f qcow2 -c 'write -P 0x66 0 256k' overlay.qcow2 >/dev/null", base);

        answer = root_commit_to_end(f, top);

        sum_after = checksum_file(crontab);
        if (!g_str_equal(sum, sum_after))
                g_error("root's commit wrote into %s, which nobody's base named as its backing file", crontab);
        assert_error(answer, ERR_ACCESS_DENIED, "Permission denied");
}

/* ---- 16b. a symlink to a device at root's target ------------------------------------------------------ */

static void test_target_symlink_to_device(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *disk = bus_fixture_path(f, "bobs-disk.img"), *source = bus_fixture_path(f, "src.raw");
        g_autofree char *target = nobody_path(pf, "backup.img"), *sum = NULL, *sum_after = NULL;
        g_autofree char *out = NULL, *err = NULL, *device = NULL, *answer = NULL;
        struct stat st;

        /* Another user's disk, as a block device; and a source as large. */
        root_sh(f, "truncate -s 4M bobs-disk.img && truncate -s 4M src.raw && "
                   "dd if=/dev/urandom of=src.raw bs=1M count=4 conv=notrunc status=none");
        if (oracle_try(&out, &err, "losetup --find --show %s", disk) != 0) {
                g_test_skip("cannot make loop devices here");
                return;
        }
        device = g_strdup(g_strstrip(out));
        sum = checksum_file(disk);

        /* nobody plants a link to it where root's nightly backup goes. */
        nobody_sh(pf, "ln -s %s backup.img", device);
        answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", source, target,
                                                              bus_opts("overwrite", g_variant_new_boolean(TRUE), "job-id",
                                                                       g_variant_new_string("b"), NULL)));
        g_test_message("root's Backup: %s", answer);
        if (g_str_has_prefix(answer, "ok"))
                wait_job_over(f, "b");

        sum_after = checksum_file(disk);
        g_free(oracle_run("losetup --detach %s", device));
        if (!g_str_equal(sum, sum_after))
                g_error("root's backup wrote into %s through nobody's symlink", device);
        /* The link was a name like any other: replaced by the backup. */
        g_assert_true(g_str_has_prefix(answer, "ok"));
        g_assert_cmpint(lstat(target, &st), ==, 0);
        g_assert_true(S_ISREG(st.st_mode));
}

/* ---- 6. a block toggling between data and hole ----------------------------------------------------- */

static void on_done(GObject *source, GAsyncResult *result, gpointer userdata) {
        *(bool *) userdata = true;
}

static void test_daemon_abort_by_toggling(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "src.raw"), *mirror = nobody_path(pf, "mirror.raw");
        g_autofree char *args = NULL, *answer = NULL, *toggled = NULL;
        g_autoptr(GSubprocess) toggler = NULL;
        bool toggler_done = false;
        unsigned backups = 0;

        start_polkit_for_nobody(pf, NULL);
        /* 64 MiB of hole, but for the block that toggles, at 0. */
        nobody_sh(pf, "truncate -s 64M src.raw");

        /* A mirror of it, which looks at it again whenever it changes. */
        args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'m'>})", source, mirror);
        g_free(nobody_start(pf, "Mirror", args));
        WAIT_FOR(f, status_seen(f, "m", "ready") || !daemon_alive(f), "the mirror to get ready");

        /* 3 s of toggling, and backups of the file one after another meanwhile. */
        toggler = bus_as_nobody_start(f, "toggle", source, "0", "3", NULL);
        g_subprocess_wait_async(toggler, NULL, on_done, &toggler_done);
        while (!toggler_done && daemon_alive(f)) {
                g_autofree char *id = g_strdup_printf("b%u", backups), *target = g_strdup_printf("%s/b%u.raw", pf->nobody_dir, backups);
                g_free(args);
                args = g_strdup_printf("('%s', '%s', @a{sv} {'job-id': <'%s'>})", source, target, id);
                g_free(answer);
                answer = nobody_manager_call(pf, "Backup", args);
                if (g_str_has_prefix(answer, "ok"))
                        wait_job_over(f, id);
                backups++;
        }
        toggled = bus_as_nobody_finish(toggler);
        g_test_message("%u backups while nobody %s", backups, toggled);

        assert_root_job_completes(f, "alive");
}

/* ---- 7. limits ----------------------------------------------------------------------------------- */

#define N_CALLS 6

/* (a) Six calls at once, with a limit of 2 jobs per user: each waits in polkit until all six are
 * in, so that none of them exists yet when the others are counted. */
static void test_limits_pending(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "s.img");
        GSubprocess *calls[N_CALLS];
        bool done[N_CALLS] = {};
        unsigned ok = 0, limited = 0, finished = 0;

        start_polkit_for_nobody(pf, "org.blockjobd.create.backup");
        polkit_fixture_watch_checks(pf);
        bus_make_file(source, 8 * MiB);

        for (unsigned i = 0; i < N_CALLS; i++) {
                g_autofree char *args = g_strdup_printf("('%s', '%s/t%u.img', @a{sv} {'job-id': <'j%u'>, "
                                                        "'speed': <uint64 1048576>})",
                                                        source, pf->nobody_dir, i, i);
                calls[i] = bus_as_nobody_start(f, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
                g_subprocess_wait_async(calls[i], NULL, on_done, &done[i]);
        }
        /* All six either answered already or asked polkit about. */
        for (gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC; g_get_monotonic_time() < end;) {
                finished = 0;
                for (unsigned i = 0; i < N_CALLS; i++)
                        finished += done[i];
                if (finished + polkit_fixture_checks_seen(pf, "org.blockjobd.create.backup") >= N_CALLS)
                        break;
                bus_iterate_for(f, 10 * 1000);
        }
        release_polkit(f);

        for (unsigned i = 0; i < N_CALLS; i++) {
                g_autofree char *answer = bus_as_nobody_finish(calls[i]);
                g_test_message("call %u: %s", i, answer);
                if (g_str_has_prefix(answer, "ok"))
                        ok++;
                else if (g_str_has_prefix(answer, ERR_LIMIT ": "))
                        limited++;
                g_object_unref(calls[i]);
        }
        if (ok > 2 || ok + limited != N_CALLS)
                g_error("%u of %u concurrent calls created a job (limit 2), %u answered LimitExceeded", ok, N_CALLS,
                        limited);
}

/* (b) nobody's openers stopped (as nobody may stop its own processes): root's job goes on, and
 * root's new call is answered. */
static void test_limits_opener_stall(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "s.img"), *root_source = bus_fixture_path(f, "root.img");
        g_autofree char *root_target = bus_fixture_path(f, "root-t.img"), *roots = NULL, *answer = NULL;
        g_autofree char *small = bus_fixture_path(f, "small.img"), *small_target = bus_fixture_path(f, "small-t.img");
        GSubprocess *calls[N_CALLS];
        BusStopper *stopper;
        guint64 before, after;
        gint64 start, took, window_end;
        unsigned stopped;

        start_polkit_for_nobody(pf, NULL);
        bus_make_file(source, MiB);
        bus_make_file(root_source, 64 * MiB);
        bus_make_file(small, MiB);

        roots = bus_backup(f, root_source, root_target,
                           bus_opts("job-id", g_variant_new_string("r"), "speed", g_variant_new_uint64(4 * MiB), NULL));
        WAIT_FOR(f, progress_of(f, roots) > 0, "root's job to make progress");

        stopper = bus_stopper_start(bus_daemon_pid(f), "blockjobd-opener", 65534);
        for (unsigned i = 0; i < N_CALLS; i++) {
                g_autofree char *args = g_strdup_printf("('%s', '%s/t%u.img', @a{sv} {'job-id': <'n%u'>})", source,
                                                        pf->nobody_dir, i, i);
                calls[i] = bus_as_nobody_start(f, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        }
        /* As many openers stopped as there are workers (4), or as the daemon runs at once. */
        for (gint64 end = g_get_monotonic_time() + 3 * G_USEC_PER_SEC;
             g_get_monotonic_time() < end && bus_stopper_count(stopper) < 4;)
                bus_iterate_for(f, 10 * 1000);

        /* 3 s with them stopped: root's job progresses, root's call is answered. */
        before = progress_of(f, roots);
        window_end = g_get_monotonic_time() + 3 * G_USEC_PER_SEC;
        start = g_get_monotonic_time();
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
                        f->conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Backup",
                        g_variant_new("(ss@a{sv})", small, small_target,
                                      bus_opts("job-id", g_variant_new_string("during"), NULL)),
                        NULL, G_DBUS_CALL_FLAGS_NONE, 5000, NULL, &error);
                answer = format_answer(reply, error);
        }
        took = g_get_monotonic_time() - start;
        if (g_get_monotonic_time() < window_end)
                bus_iterate_for(f, window_end - g_get_monotonic_time());
        after = progress_of(f, roots);
        stopped = bus_stopper_finish(stopper);

        for (unsigned i = 0; i < N_CALLS; i++) {
                g_autofree char *out = bus_as_nobody_finish(calls[i]);
                g_test_message("nobody's call %u: %s", i, out);
                g_object_unref(calls[i]);
        }
        g_test_message("%u openers stopped; root's progress %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT
                       "; root's call answered in %" G_GINT64_FORMAT " ms: %s",
                       stopped, before, after, took / 1000, answer);
        g_assert_cmpuint(stopped, >, 0);
        if (after <= before)
                g_error("root's job stood still while nobody's openers were stopped (progress %" G_GUINT64_FORMAT ")",
                        before);
        if (took > 2 * G_USEC_PER_SEC)
                g_error("root's Backup took %" G_GINT64_FORMAT " ms to be answered while nobody's openers were "
                        "stopped: %s",
                        took / 1000, answer);
        bus_assert_answer(answer, "ok");
}

/* ---- 8. names that are not UTF-8, or forge log lines ---------------------------------------------- */

/* nobody's top image over a layer of this name whose first L2 pointer is corrupt. */
static void make_bad_layer_chain(PolkitFixture *pf, const char *layer, const char *top) {
        g_autofree char *layer_path = nobody_path(pf, layer);

        nobody_run(pf, (const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", layer, "1M", NULL });
        nobody_run(pf, (const char *const[]) { "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", layer, NULL });
        nobody_run(pf, (const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", layer, "-F",
                                               "qcow2", top, "1M", NULL });
        corrupt_first_l2_pointer(layer_path);
}

static GVariant *root_try_call(BusFixture *f, const char *path, const char *iface, const char *method,
                               GVariant *params, const char *what) {
        g_autoptr(GError) error = NULL;
        GVariant *reply = g_dbus_connection_call_sync(f->conn, BUS_NAME, path, iface, method, params, NULL,
                                                      G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        if (!reply)
                g_error("%s failed for root: %s", what, error->message);
        return reply;
}

static void test_bad_utf8_error(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        static const char *const layers[] = { "l\xffyer.qcow2", "l\n<0>forged.qcow2" };
        static const char *const ids[] = { "badutf8", "forged" };
        char *paths[2] = {};
        g_autofree char *log = NULL;

        start_polkit_for_nobody(pf, NULL);
        for (unsigned i = 0; i < 2; i++) {
                g_autofree char *top = g_strdup_printf("top%u.qcow2", i), *top_path = nobody_path(pf, top);
                g_autofree char *args = NULL, *answer = NULL;

                make_bad_layer_chain(pf, layers[i], top);
                args = g_strdup_printf("('%s', '%s/out%u.raw', @a{sv} {'job-id': <'%s'>, 'auto-dismiss': <false>})",
                                       top_path, pf->nobody_dir, i, ids[i]);
                answer = nobody_manager_call(pf, "Backup", args);
                g_test_message("nobody's Backup over a bad layer: %s", answer);
                /* Refused at once is fine too (the answer made it here, as valid UTF-8). */
                if (!g_str_has_prefix(answer, "ok"))
                        continue;
                paths[i] = answer_path(answer);
                WAIT_FOR(f, status_seen(f, ids[i], "concluded") || !daemon_alive(f), "job '%s' to fail", ids[i]);
        }

        /* Everyone still reads the jobs: root, here. */
        g_variant_unref(root_try_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "ListJobs"));
        g_variant_unref(root_try_call(f, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
                                      "GetManagedObjects"));
        for (unsigned i = 0; i < 2; i++) {
                if (!paths[i])
                        continue;
                g_autoptr(GVariant) reply = root_try_call(f, paths[i], "org.freedesktop.DBus.Properties", "Get",
                                                          g_variant_new("(ss)", JOB_IFACE, "Error"), "Get(Error)");
                g_autoptr(GVariant) value = NULL;
                const char *error;

                g_variant_get(reply, "(v)", &value);
                error = g_variant_get_string(value, NULL);
                g_test_message("job '%s' failed: %s", ids[i], error);
                g_assert_true(g_utf8_validate(error, -1, NULL));
                g_assert_cmpstr(error, !=, "");
                g_assert_null(strchr(error, '\n'));
                g_free(paths[i]);
        }

        /* The log holds what the names held, escaped: no raw byte, no line of their making. */
        log = daemon_log(f);
        if (strchr(log, '\xff'))
                g_error("the daemon's log holds a raw 0xff byte from an image's backing name");
        if (strstr(log, "\n<0>forged"))
                g_error("an image's backing name forged an emergency line in the daemon's log");
}

/* ---- 9. memory that a header asks for ----------------------------------------------------------- */

static void test_header_driven_memory(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *big = nobody_path(pf, "big.qcow2"), *target = nobody_path(pf, "m.qcow2");
        g_autofree char *args = NULL, *answer = NULL, *path = NULL;
        guint64 before, after;

        start_polkit_for_nobody(pf, NULL);
        nobody_sh(pf, "qemu-img create -q -f qcow2 big.qcow2 64G && test $(stat -c %%s big.qcow2) -lt 262144");

        before = daemon_rss(f);
        args = g_strdup_printf("('%s', '%s', @a{sv} {'granularity': <uint32 512>, 'job-id': <'big'>})", big, target);
        answer = nobody_manager_call(pf, "Mirror", args);
        g_test_message("nobody's Mirror of a 64 GiB image with granularity 512: %s", answer);
        if (g_str_has_prefix(answer, ERR_LIMIT ": "))
                return;
        path = answer_path(answer);
        after = daemon_rss(f);
        g_test_message("the daemon's RSS: %" G_GUINT64_FORMAT " MiB -> %" G_GUINT64_FORMAT " MiB", before / MiB,
                       after / MiB);
        bus_job_call(f, path, "Cancel");
        wait_job_over(f, "big");
        if (after > before + 64 * MiB)
                g_error("the daemon's RSS grew by %" G_GUINT64_FORMAT " MiB for nobody's 196 KiB image",
                        (after - before) / MiB);
}

/* A chain of many layers, each with the largest L1 table QEMU allows itself, and each as small on
 * disk as holes make it: the daemon stops opening it at the first layer past the bound, before
 * the tables are all in memory. */
static void test_chain_memory(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *top = nobody_path(pf, "l39.qcow2"), *args = NULL, *answer = NULL;
        guint64 before, after;

        start_polkit_for_nobody(pf, NULL);
        /* 1 PiB: an L1 table of 16 MiB, all holes; 40 layers would be 640 MiB of tables. */
        nobody_sh(pf, "qemu-img create -q -f qcow2 l.qcow2 1P && cp --sparse=always l.qcow2 l0.qcow2 && "
                      "for i in $(seq 1 39); do cp --sparse=always l.qcow2 l$i.qcow2 && "
                      "qemu-img rebase -u -b l$((i - 1)).qcow2 -F qcow2 l$i.qcow2 || exit 1; done");

        before = daemon_rss(f);
        args = g_strdup_printf("('%s', '%s/out.qcow2', @a{sv} {'source-format': <'qcow2'>, 'job-id': <'deep'>})", top,
                               pf->nobody_dir);
        answer = nobody_manager_call(pf, "Backup", args);
        after = daemon_rss(f);
        g_test_message("nobody's Backup of 40 layers of 16 MiB tables: %s; the daemon's RSS: %" G_GUINT64_FORMAT
                       " MiB -> %" G_GUINT64_FORMAT " MiB",
                       answer, before / MiB, after / MiB);
        assert_error(answer, ERR_LIMIT, "MiB");
        if (after > before + 600 * MiB)
                g_error("the daemon's RSS grew by %" G_GUINT64_FORMAT " MiB", (after - before) / MiB);
}

/* ---- 10. on-source-error=ignore over a corrupt image -------------------------------------------- */

static void test_ignore_retry_flood(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "src.qcow2"), *args = NULL, *path = NULL, *log = NULL;
        unsigned signals, lines;

        start_polkit_for_nobody(pf, NULL);
        nobody_sh(pf, "qemu-img create -q -f qcow2 src.qcow2 1M && "
                      "qemu-io -f qcow2 -c 'write -P 7 0 64k' src.qcow2 >/dev/null");
        corrupt_first_l2_pointer(source);

        args = g_strdup_printf("('%s', '%s/out.raw', @a{sv} {'on-source-error': <'ignore'>, 'job-id': <'flood'>, "
                               "'auto-dismiss': <false>})",
                               source, pf->nobody_dir);
        path = nobody_start(pf, "Backup", args);
        bus_iterate_for(f, 3 * G_USEC_PER_SEC);

        signals = count_occurrences(f->io_errors->str, ":");
        log = daemon_log(f);
        lines = count_occurrences(log, "read error");
        g_test_message("in 3 s: %u IoError signals, %u \"read error\" lines; IoError actions: %.200s", signals, lines,
                       f->io_errors->str);
        if (signals >= 50 || lines >= 50)
                g_error("nobody's failing backup sent %u IoError signals and logged %u lines in 3 s", signals, lines);
        /* A corrupt image is not worth retrying: the job ends, reporting it. */
        g_assert_true(status_seen(f, "flood", "concluded"));
        assert_contains(f->io_errors->str, "read:report");
}

/* ---- 11. overwrite of an image a running QEMU holds ---------------------------------------------- */


static void test_overwrite_held_image(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *image = bus_fixture_path(f, "image.qcow2"), *other = bus_fixture_path(f, "other.raw");
        g_autofree char *answer = NULL;
        GSubprocess *vm;
        struct stat before, after;

        root_sh(f, "qemu-img create -q -f qcow2 image.qcow2 4M && "
                   "qemu-io -f qcow2 -c 'write -P 0x77 0 1M' image.qcow2 >/dev/null");
        bus_make_file(other, 4 * MiB);

        /* A running VM, as far as the image can tell: qemu-io holding it for writing. */
        vm = oracle_qemu_io_hold(image, "qcow2", false);
        g_assert_cmpint(stat(image, &before), ==, 0);

        answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", other, image,
                                                              bus_opts("overwrite", g_variant_new_boolean(TRUE), "job-id",
                                                                       g_variant_new_string("over"), NULL)));
        g_test_message("root's Backup over the held image: %s", answer);
        if (g_str_has_prefix(answer, "ok"))
                wait_job_over(f, "over");
        g_assert_cmpint(stat(image, &after), ==, 0);

        oracle_qemu_io_release(vm);

        if (after.st_ino != before.st_ino)
                g_error("the image qemu-io held was replaced (inode %ju -> %ju): the VM writes a deleted file",
                        (uintmax_t) before.st_ino, (uintmax_t) after.st_ino);
        if (!g_str_has_prefix(answer, ERR_IMAGE_IN_USE ": ") && !g_str_has_prefix(answer, ERR_ACCESS_DENIED ": ") &&
            !g_str_has_prefix(answer, ERR_IMAGE ": "))
                g_error("expected ImageInUse, AccessDenied or ImageError, got: %s", answer);
        if (!strstr(answer, "lock") && !strstr(answer, "in use"))
                g_error("expected an answer naming the lock, got: %s", answer);
}

/* ---- 12. jobs that share a file ------------------------------------------------------------------- */

/* An answer refusing a second job: ImageInUse, naming the file and the first job. */
static void assert_in_use(const char *answer, const char *file, const char *first_id) {
        g_autofree char *job = g_strdup_printf("'%s'", first_id), *base = g_path_get_basename(file);

        assert_error(answer, ERR_IMAGE_IN_USE, job);
        assert_contains(answer, base);
}

/* Whether ListJobs lists a job of this id. */
static bool job_listed(BusFixture *f, const char *id) {
        g_autoptr(GVariant) reply = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariantIter) iter = NULL;
        const char *listed;

        g_variant_get(reply, "(a(ossstts))", &iter);
        while (g_variant_iter_next(iter, "(&o&s&s&stt&s)", NULL, &listed, NULL, NULL, NULL, NULL, NULL))
                if (g_str_equal(listed, id))
                        return true;
        return false;
}

static GUnixFDList *fd_list_of(const char *path, int flags) {
        GUnixFDList *fds = g_unix_fd_list_new();
        int fd = open(path, flags | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        close(fd);
        return fds;
}

static void test_shared_target(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = bus_fixture_path(f, "src.img"), *shared = bus_fixture_path(f, "shared.img");
        g_autofree char *dirlink = bus_fixture_path(f, "dirlink"), *other_spelling = NULL, *answer = NULL;
        g_autofree char *in_place = bus_fixture_path(f, "in-place.img"), *hard = bus_fixture_path(f, "hard.img");
        g_autofree char *soft = bus_fixture_path(f, "soft.img"), *fresh = bus_fixture_path(f, "fresh.img");
        GVariantBuilder actions;

        bus_make_file(source, 8 * MiB);

        /* Two backups to one new name. */
        g_free(bus_backup(f, source, shared,
                          bus_opts("job-id", g_variant_new_string("first"), "overwrite", g_variant_new_boolean(TRUE),
                                   "speed", g_variant_new_uint64(MiB), NULL)));
        answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", source, shared,
                                                              bus_opts("job-id", g_variant_new_string("second"), "overwrite",
                                                                       g_variant_new_boolean(TRUE), NULL)));
        g_test_message("a second backup to the same name: %s", answer);
        assert_in_use(answer, shared, "first");

        /* The same name, spelt through a symlinked directory. */
        g_assert_cmpint(symlink(f->dir, dirlink), ==, 0);
        other_spelling = g_build_filename(dirlink, "shared.img", NULL);
        g_free(answer);
        answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", source, other_spelling,
                                                              bus_opts("job-id", g_variant_new_string("third"), "overwrite",
                                                                       g_variant_new_boolean(TRUE), NULL)));
        g_test_message("a backup to the same name through another path: %s", answer);
        assert_in_use(answer, shared, "first");

        /* A file written in place (target-fd), then the same file through a hard link and a
         * symlink. */
        bus_make_file(in_place, 8 * MiB);
        g_assert_cmpint(link(in_place, hard), ==, 0);
        g_assert_cmpint(symlink(in_place, soft), ==, 0);
        {
                g_autoptr(GUnixFDList) fds = fd_list_of(in_place, O_RDWR);
                g_autofree char *first = root_manager_call_fds(
                        f, "Backup",
                        g_variant_new("(ss@a{sv})", source, in_place,
                                      bus_opts("target-fd", g_variant_new_handle(0), "overwrite", g_variant_new_boolean(TRUE),
                                               "speed", g_variant_new_uint64(MiB), "job-id", g_variant_new_string("in-place"),
                                               NULL)),
                        fds);
                bus_assert_answer(first, "ok");
        }
        for (unsigned i = 0; i < 2; i++) {
                const char *spelling = i == 0 ? hard : soft;
                g_autoptr(GUnixFDList) fds = fd_list_of(spelling, O_RDWR);
                g_free(answer);
                answer = root_manager_call_fds(
                        f, "Backup",
                        g_variant_new("(ss@a{sv})", source, spelling,
                                      bus_opts("target-fd", g_variant_new_handle(0), "overwrite", g_variant_new_boolean(TRUE),
                                               NULL)),
                        fds);
                g_test_message("a backup into the in-place target through %s: %s", spelling, answer);
                assert_error(answer, ERR_IMAGE_IN_USE, "'in-place'");
        }

        /* A grouped transaction whose two members write one name: refused whole. */
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", source, fresh,
                              bus_opts("job-id", g_variant_new_string("t1"), NULL));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", source, fresh,
                              bus_opts("job-id", g_variant_new_string("t2"), NULL));
        g_free(answer);
        answer = root_manager_call(f, "Transaction",
                                   g_variant_new("(@a(sssa{sv})@a{sv})", g_variant_builder_end(&actions),
                                                 bus_opts("completion-mode", g_variant_new_string("grouped"), NULL)));
        g_test_message("a transaction of two backups to one name: %s", answer);
        bus_iterate_for(f, 200 * 1000);
        g_assert_false(status_seen(f, "t1", "created") || status_seen(f, "t2", "created"));
        g_assert_false(job_listed(f, "t1") || job_listed(f, "t2"));
        assert_error(answer, ERR_IMAGE_IN_USE, "fresh.img");
        g_assert_false(exists(fresh));
}

/* ---- 13. a job id squatted ----------------------------------------------------------------------- */

static void test_id_squatting(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "s.img"), *args = NULL, *squatter = NULL, *answer = NULL;
        g_autofree char *roots = NULL, *root_source = bus_fixture_path(f, "root.img");
        g_autofree char *root_target = bus_fixture_path(f, "nightly.img"), *expected = NULL;
        g_autoptr(GVariant) found = NULL;
        const char *found_path;

        start_polkit_for_nobody(pf, NULL);
        bus_make_file(source, 8 * MiB);
        bus_make_file(root_source, 8 * MiB);

        args = g_strdup_printf("('%s', '%s/t.img', @a{sv} {'job-id': <'nightly'>, 'auto-dismiss': <false>, "
                               "'speed': <uint64 1048576>})",
                               source, pf->nobody_dir);
        squatter = nobody_start(pf, "Backup", args);

        /* Root's nightly script. */
        answer = root_manager_call(f, "Backup", g_variant_new("(ss@a{sv})", root_source, root_target,
                                                              bus_opts("job-id", g_variant_new_string("nightly"), "speed",
                                                                       g_variant_new_uint64(MiB), NULL)));
        g_test_message("root's Backup with job-id nightly: %s", answer);
        roots = answer_path(answer);
        g_assert_cmpstr(roots, !=, squatter);

        /* Each finds its own. */
        found = bus_call(f, MANAGER_PATH, MANAGER_IFACE, "GetJob", g_variant_new("(s)", "nightly"), "(o)");
        g_variant_get(found, "(&o)", &found_path);
        g_assert_cmpstr(found_path, ==, roots);
        g_free(answer);
        answer = nobody_manager_call(pf, "GetJob", "('nightly',)");
        expected = g_strdup_printf("ok (objectpath '%s',)\n", squatter);
        g_assert_cmpstr(answer, ==, expected);
}

/* ---- 14. a descriptor opened O_APPEND -------------------------------------------------------------- */

static void test_o_append_fd(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = nobody_path(pf, "s.img"), *log = nobody_path(pf, "app.log");
        g_autofree char *fd_log = g_strdup_printf("--fd=rwa:%s", log), *args = NULL, *answer = NULL;
        g_autofree char *sum = NULL, *sum_after = NULL;

        start_polkit_for_nobody(pf, NULL);
        nobody_sh(pf, "head -c 1048576 /dev/urandom > s.img && printf 'nobody may only append here\\n' > app.log");
        sum = checksum_file(log);

        args = g_strdup_printf("('%s', '%s', @a{sv} {'target-fd': <handle 0>, 'overwrite': <true>, "
                               "'job-id': <'append'>})",
                               source, log);
        answer = bus_as_nobody(f, fd_log, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        g_test_message("nobody's Backup into an O_APPEND descriptor: %s", answer);
        if (g_str_has_prefix(answer, "ok"))
                wait_job_over(f, "append");
        sum_after = checksum_file(log);
        if (!g_str_equal(sum, sum_after))
                g_error("a descriptor opened O_APPEND was written at random offsets (truncated and overwritten)");
        if (g_str_has_prefix(answer, "ok"))
                g_error("a descriptor opened O_APPEND was taken as a target: %s", answer);
}

/* ---- files a process serves (FUSE) ----------------------------------------------------------------- */

/* A FUSE file system's server answers every call on its files, close() included, when it likes:
 * one that never answers would stall the daemon for good. Such files are never used, by name
 * nor as descriptors. bindfs stands in for a server of the user's. */
static void test_fuse_files(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *mnt = bus_fixture_path(f, "fuse"), *inside = g_build_filename(mnt, "s.img", NULL);
        g_autofree char *own = nobody_path(pf, "s.img"), *args = NULL, *answer = NULL, *fd_arg = NULL;
        g_autofree char *out = NULL, *err = NULL, *bindfs = g_find_program_in_path("bindfs");

        if (!bindfs) {
                g_test_skip("bindfs is not installed");
                return;
        }
        start_polkit_for_nobody(pf, NULL);
        nobody_sh(pf, "head -c 1048576 /dev/urandom > s.img");
        g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
        if (oracle_try(&out, &err, "bindfs -o allow_other %s %s", pf->nobody_dir, mnt) != 0) {
                g_test_skip("cannot mount FUSE file systems here");
                return;
        }

        /* By name, as the source and as the target's directory. */
        args = g_strdup_printf("('%s', '%s/t.img', @a{sv} {})", inside, pf->nobody_dir);
        answer = nobody_manager_call(pf, "Backup", args);
        g_test_message("nobody's Backup from FUSE: %s", answer);
        assert_error(answer, ERR_IMAGE, "FUSE");
        g_free(args);
        g_free(answer);
        args = g_strdup_printf("('%s', '%s/t.img', @a{sv} {})", own, mnt);
        answer = nobody_manager_call(pf, "Backup", args);
        g_test_message("nobody's Backup to FUSE: %s", answer);
        assert_error(answer, ERR_IMAGE, "FUSE");

        /* As a descriptor. */
        g_free(args);
        g_free(answer);
        fd_arg = g_strdup_printf("--fd=r:%s", inside);
        args = g_strdup_printf("('%s', '%s/t2.img', @a{sv} {'source-fd': <handle 0>})", inside, pf->nobody_dir);
        answer = bus_as_nobody(f, fd_arg, "call", MANAGER_PATH, MANAGER_IFACE, "Backup", args, NULL);
        g_test_message("nobody's Backup of a FUSE descriptor: %s", answer);

        g_free(oracle_run("fusermount3 -u %s", mnt));
        assert_error(answer, ERR_INVALID_ARGS, "FUSE");
}

/* ---- 15. the bus goes away ------------------------------------------------------------------------- */

static void test_bus_restart(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = bus_fixture_path(f, "src.img"), *dir = bus_fixture_path(f, "targets");
        g_autofree char *target = g_build_filename(dir, "t.img", NULL), *path = NULL;
        g_autoptr(GDir) d = NULL;
        bool exited = false;
        const char *name;

        bus_make_file(source, 64 * MiB);
        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        path = bus_backup(f, source, target,
                          bus_opts("job-id", g_variant_new_string("r"), "speed", g_variant_new_uint64(2 * MiB), NULL));
        WAIT_FOR(f, progress_of(f, path) > 0, "the job to make progress");

        /* dbus-daemon goes (a restart, an upgrade): the daemon loses its connection. */
        g_subprocess_send_signal(f->bus, SIGTERM);
        g_assert_true(g_subprocess_wait(f->bus, NULL, NULL));
        g_subprocess_wait_async(f->daemon, NULL, on_done, &exited);
        for (gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC; !exited;) {
                if (g_get_monotonic_time() > end)
                        g_error("blockjobd did not exit within 10 s of losing the bus");
                g_main_context_iteration(NULL, FALSE);
                g_usleep(10 * 1000);
        }
        if (!g_subprocess_get_if_exited(f->daemon))
                g_error("blockjobd died of signal %d when the bus went away", g_subprocess_get_term_sig(f->daemon));
        g_assert_cmpint(g_subprocess_get_exit_status(f->daemon), ==, 0);
        g_clear_object(&f->daemon);

        /* Nothing left behind: no temporary file, no half-written target. */
        d = g_dir_open(dir, 0, NULL);
        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d)))
                g_error("%s left in the target's directory", name);
}

/* ---- 16. a loop device over the source ---------------------------------------------------------------- */

static void test_loop_device_self(PolkitFixture *pf) {
        BusFixture *f = &pf->bus;
        g_autofree char *source = bus_fixture_path(f, "src.qcow2"), *sum = NULL, *out = NULL, *err = NULL, *device = NULL;
        static const char *const methods[] = { "Backup", "Mirror" };

        /* A qcow2 image whose file is as long as its virtual size, so that a loop device over it
         * has the size of the disk. */
        root_sh(f, "qemu-img create -q -f qcow2 src.qcow2 4M && "
                   "qemu-io -f qcow2 -c 'write -P 0x33 0 1M' src.qcow2 >/dev/null && truncate -s 4M src.qcow2");
        sum = checksum_file(source);
        if (oracle_try(&out, &err, "losetup --find --show %s", source) != 0) {
                g_test_skip("cannot make loop devices here");
                return;
        }
        device = g_strdup(g_strstrip(out));

        for (unsigned i = 0; i < G_N_ELEMENTS(methods); i++) {
                g_autofree char *id = g_ascii_strdown(methods[i], -1), *answer = NULL, *sum_after = NULL;

                answer = root_manager_call(f, methods[i], g_variant_new("(ss@a{sv})", source, device,
                                                                       bus_opts("overwrite", g_variant_new_boolean(TRUE),
                                                                                "job-id", g_variant_new_string(id), NULL)));
                g_test_message("%s of %s into %s (over it): %s", methods[i], source, device, answer);
                if (g_str_has_prefix(answer, "ok")) {
                        g_autofree char *path = answer_path(answer);
                        WAIT_FOR(f, status_seen(f, id, "ready") || status_seen(f, id, "null") ||
                                            status_seen(f, id, "concluded"),
                                 "the %s", methods[i]);
                        if (status_seen(f, id, "ready"))
                                bus_job_call(f, path, "Cancel");
                        wait_job_over(f, id);
                }
                sum_after = checksum_file(source);
                if (!g_str_equal(sum, sum_after)) {
                        g_free(oracle_run("losetup --detach %s", device));
                        g_error("%s wrote into its own source through %s", methods[i], device);
                }
                assert_error(answer, ERR_INVALID_ARGS, "same");
        }
        g_free(oracle_run("losetup --detach %s", device));
}

/* ---- the runner ------------------------------------------------------------------------------------- */

static const AttackCase cases[] = {
        { "/attacks/any-file-read/fds", test_any_file_read_fds },
        { "/attacks/any-file-read/names", test_any_file_read_names },
        { "/attacks/header-overflow", test_header_overflow },
        { "/attacks/format-probing/raw-guest", test_format_probing_raw_guest, .without_polkit = true },
        { "/attacks/format-probing/v2-backing", test_format_probing_v2_backing, .without_polkit = true },
        { "/attacks/verb-on-replaced-job", test_verb_on_replaced_job },
        { "/attacks/commit-follows-planted-name", test_commit_follows_planted_name },
        { "/attacks/commit-through-root-overlay", test_commit_through_root_overlay },
        { "/attacks/target-symlink-to-device", test_target_symlink_to_device, .needs_loop = true },
        { "/attacks/daemon-abort-by-toggling", test_daemon_abort_by_toggling },
        { "/attacks/limits/pending-jobs", test_limits_pending, "--idle-timeout=0 --max-jobs-per-user=2" },
        { "/attacks/limits/opener-stall", test_limits_opener_stall },
        { "/attacks/bad-utf8-error", test_bad_utf8_error },
        { "/attacks/header-driven-memory", test_header_driven_memory },
        { "/attacks/chain-memory", test_chain_memory },
        { "/attacks/ignore-retry-flood", test_ignore_retry_flood },
        { "/attacks/overwrite-held-image", test_overwrite_held_image, .without_polkit = true },
        { "/attacks/shared-target", test_shared_target, .without_polkit = true },
        { "/attacks/id-squatting", test_id_squatting },
        { "/attacks/o-append-fd", test_o_append_fd },
        { "/attacks/fuse-files", test_fuse_files },
        { "/attacks/bus-restart", test_bus_restart, .without_polkit = true },
        { "/attacks/loop-device-self", test_loop_device_self, .without_polkit = true, .needs_loop = true },
};

/* In the child: the case itself. */
static void child_case(gconstpointer data) {
        const AttackCase *c = data;
        PolkitFixture pf = {};

        if (c->without_polkit) {
                if (geteuid() == 0)
                        bus_fixture_setup(&pf.bus, c->daemon_args);
        } else
                polkit_fixture_setup(&pf, c->daemon_args);
        if (pf.bus.dir)
                g_strlcpy(daemon_log_path, pf.bus.daemon_log, sizeof(daemon_log_path));

        if (c->without_polkit ? (pf.bus.dir && bus_can_run_as_nobody()) : polkit_fixture_usable(&pf))
                c->run(&pf);
        else if (!pf.bus.dir)
                g_test_skip("needs root");

        polkit_fixture_teardown(&pf);
        daemon_log_path[0] = 0;
}

static bool program_exists(const char *name) {
        g_autofree char *p = g_find_program_in_path(name);
        return p;
}

static char *run_quietly(const char *cmdline, int *ret_status) {
        g_autofree char *err = NULL;
        char *out = NULL;

        *ret_status = oracle_try(&out, &err, "%s", cmdline);
        return out;
}

/* Loop devices can be made here (attached and detached again). */
static bool loop_devices_work(const char *dir) {
        g_autofree char *file = g_build_filename(dir, "loop-probe", NULL), *cmd = NULL, *out = NULL;
        int status;

        bus_make_file(file, MiB);
        cmd = g_strdup_printf("losetup --find --show %s", file);
        out = run_quietly(cmd, &status);
        if (status == 0) {
                g_free(cmd);
                cmd = g_strdup_printf("losetup --detach %s", g_strstrip(out));
                g_free(run_quietly(cmd, &status));
                status = 0;
        }
        g_unlink(file);
        return status == 0;
}

/* Loop devices over files of the case's directory, left attached by a child that died. */
static void detach_loop_devices(const char *dir) {
        int status;
        g_autofree char *list = run_quietly("losetup --list --noheadings --output NAME,BACK-FILE", &status);
        g_auto(GStrv) lines = list ? g_strsplit(list, "\n", -1) : NULL;

        for (char **l = lines; l && *l; l++) {
                g_auto(GStrv) fields = g_strsplit_set(g_strstrip(*l), " \t", 2);
                if (g_strv_length(fields) == 2 && g_str_has_prefix(g_strstrip(fields[1]), dir)) {
                        g_autofree char *cmd = g_strdup_printf("losetup --detach %s", fields[0]);
                        g_free(run_quietly(cmd, &status));
                }
        }
}

/* Whatever a case mounted below 'dir' (the FUSE case), lazily unmounted. */
static void unmount_below(const char *dir) {
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        int status;

        if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL))
                return;
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) fields = g_strsplit(*l, " ", 6);
                if (g_strv_length(fields) >= 5 && g_str_has_prefix(fields[4], dir)) {
                        g_autofree char *cmd = g_strdup_printf("umount -l %s", fields[4]);
                        g_free(run_quietly(cmd, &status));
                }
        }
}

static void on_child_done(GObject *source, GAsyncResult *result, gpointer userdata) {
        *(bool *) userdata = true;
}

/* In the parent: the case in a child of its own, bounded, and whatever it leaves removed. */
static void parent_case(gconstpointer data) {
        const AttackCase *c = data;
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL), *dir = NULL, *out_path = NULL;
        g_autofree char *output = NULL, *cmd = NULL, *base = NULL;
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GSubprocess) child = NULL;
        g_autoptr(GError) error = NULL;
        gint64 deadline = g_get_monotonic_time() + CASE_TIMEOUT_USEC;
        bool done = false, alarmed = false;
        int status;

        if (geteuid() != 0 || !polkit_fixture_available() || !program_exists("setpriv") ||
            !program_exists("qemu-img")) {
                g_test_skip("needs root, setpriv, polkitd and qemu-img");
                return;
        }
        dir = g_dir_make_tmp("blockjobd-attacks-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
        if (c->needs_loop && !loop_devices_work(dir)) {
                g_rmdir(dir);
                g_test_skip("cannot make loop devices here");
                return;
        }

        out_path = g_build_filename(dir, "case.out", NULL);
        launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
        g_subprocess_launcher_setenv(launcher, "TMPDIR", dir, TRUE);
        g_subprocess_launcher_set_stdout_file_path(launcher, out_path);
        child = g_subprocess_launcher_spawn(launcher, &error, self, "--case", "-p", c->name, "--tap", NULL);
        g_assert_no_error(error);
        g_subprocess_wait_async(child, NULL, on_child_done, &done);
        while (!done) {
                gint64 now = g_get_monotonic_time();
                if (now > deadline && !alarmed) {
                        g_test_message("%s took too long: stopped with SIGALRM", c->name);
                        g_subprocess_send_signal(child, SIGALRM);
                        alarmed = true;
                        deadline = now + 30 * G_USEC_PER_SEC;
                } else if (now > deadline)
                        g_subprocess_force_exit(child);
                g_main_context_iteration(NULL, FALSE);
                g_usleep(10 * 1000);
        }

        /* What the child said, for the log (stdout is the parent's TAP stream). */
        if (g_file_get_contents(out_path, &output, NULL, NULL)) {
                g_auto(GStrv) lines = g_strsplit(output, "\n", -1);
                for (char **l = lines; *l && (**l || l[1]); l++)
                        g_printerr("| %s\n", *l);
        }

        detach_loop_devices(dir);
        unmount_below(dir);
        if (!c->without_polkit && !g_subprocess_get_successful(child))
                polkit_fixture_remove_leftovers();
        cmd = g_strdup_printf("rm -rf --one-file-system %s", dir);
        g_free(run_quietly(cmd, &status));
        g_free(cmd);
        base = g_path_get_basename(dir);
        cmd = g_strdup_printf("rm -rf --one-file-system /dev/shm/%s", base);
        g_free(run_quietly(cmd, &status));

        if (!g_subprocess_get_if_exited(child))
                g_test_fail_printf("%s: killed by signal %d (its output is on stderr)", c->name,
                                   g_subprocess_get_term_sig(child));
        else if (g_subprocess_get_exit_status(child) != 0)
                g_test_fail_printf("%s: exit status %d (its output is on stderr)", c->name,
                                   g_subprocess_get_exit_status(child));
        else if (output && strstr(output, "# SKIP")) {
                g_autofree char *reason = g_strdup(strstr(output, "# SKIP") + strlen("# SKIP"));
                g_test_skip(g_strstrip(strtok(reason, "\n") ?: reason));
        }
}

int main(int argc, char *argv[]) {
        bool child;
        int r;

        r = bus_client_main(argc, argv);
        if (r >= 0)
                return r;

        child = argc > 1 && g_str_equal(argv[1], "--case");
        if (child) {
                memmove(argv + 1, argv + 2, (argc - 1) * sizeof(char *));
                argc--;
                polkit_fixture_install_handlers(on_fatal);
        }

        /* One case that fails does not stop the others. */
        g_autofree char **args = g_new0(char *, argc + 2);
        memcpy(args, argv, argc * sizeof(char *));
        if (!child)
                args[argc++] = (char *) "--keep-going";
        argv = args;

        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
                g_test_add_data_func(cases[i].name, &cases[i], child ? child_case : parent_case);
        return g_test_run();
}
