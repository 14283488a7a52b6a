/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* spawn_with_stdin(): the child gets the descriptor it is given as standard input and nothing
 * else of ours (whatever we hold, locked or not, close-on-exec or not), default signals and an
 * empty environment; our descriptors and locks are untouched, the spawn slot is back on
 * /dev/null, and an exec that fails is reported. Both ways: the cheap one and posix_spawn(). */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn-util.h"

#define N_FDS 2000

typedef struct Fixture {
        bool skip;                      /* too few descriptors allowed */
        char *dir;
        char *locked_path;              /* OFD read locks through every other one of 'fds' */
        char *posix_path;               /* a classic POSIX lock, through 'posix_fd' */
        int fds[N_FDS];
        int fd_flags[N_FDS];
        struct stat fd_st[N_FDS];
        int posix_fd;
        int sv[2];                      /* sv[1] becomes the child's standard input */
        sigset_t saved_mask;
        struct sigaction saved_usr2, saved_pipe, saved_hup;
} Fixture;

static void on_hup(int sig) {
        (void) sig;
}

static bool have_fds(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return false;
        if (rl.rlim_cur < N_FDS + 100) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) N_FDS + 100);
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= N_FDS + 100;
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        struct sigaction ign = { .sa_handler = SIG_IGN }, hup = { .sa_handler = on_hup };
        struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
        sigset_t block;
        int fd;

        (void) data;
        if (!have_fds()) {
                f->skip = true;
                return;
        }
        f->dir = g_dir_make_tmp("test-spawn-XXXXXX", NULL);
        g_assert_nonnull(f->dir);
        f->locked_path = g_build_filename(f->dir, "locked", NULL);
        f->posix_path = g_build_filename(f->dir, "posix", NULL);
        g_assert_true(g_file_set_contents(f->locked_path, "x", 1, NULL));
        g_assert_true(g_file_set_contents(f->posix_path, "x", 1, NULL));

        /* Half of them carry an OFD lock, a quarter are not close-on-exec. */
        for (int i = 0; i < N_FDS; i++) {
                bool locked = i % 2 == 0, cloexec = i % 4 != 1;
                fd = open(locked ? f->locked_path : "/dev/null", O_RDONLY | (cloexec ? O_CLOEXEC : 0));
                g_assert_cmpint(fd, >=, 0);
                if (locked)
                        g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
                f->fds[i] = fd;
                f->fd_flags[i] = fcntl(fd, F_GETFD);
                g_assert_cmpint(fstat(fd, &f->fd_st[i]), ==, 0);
        }
        f->posix_fd = open(f->posix_path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(f->posix_fd, >=, 0);
        fl.l_type = F_WRLCK;
        g_assert_cmpint(fcntl(f->posix_fd, F_SETLK, &fl), ==, 0);

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv), ==, 0);

        /* What the child must not inherit: blocked, ignored and caught signals. */
        sigemptyset(&block);
        sigaddset(&block, SIGUSR1);
        sigaddset(&block, SIGTERM);
        g_assert_cmpint(sigprocmask(SIG_BLOCK, &block, &f->saved_mask), ==, 0);
        g_assert_cmpint(sigaction(SIGUSR2, &ign, &f->saved_usr2), ==, 0);
        g_assert_cmpint(sigaction(SIGPIPE, &ign, &f->saved_pipe), ==, 0);
        g_assert_cmpint(sigaction(SIGHUP, &hup, &f->saved_hup), ==, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        (void) data;
        if (f->skip)
                return;
        (void) sigprocmask(SIG_SETMASK, &f->saved_mask, NULL);
        (void) sigaction(SIGUSR2, &f->saved_usr2, NULL);
        (void) sigaction(SIGPIPE, &f->saved_pipe, NULL);
        (void) sigaction(SIGHUP, &f->saved_hup, NULL);
        for (int i = 0; i < N_FDS; i++)
                close(f->fds[i]);
        close(f->posix_fd);
        close(f->sv[0]);
        close(f->sv[1]);
        unlink(f->locked_path);
        unlink(f->posix_path);
        rmdir(f->dir);
        g_free(f->locked_path);
        g_free(f->posix_path);
        g_free(f->dir);
}

static char *link_of(const char *proc_fd_dir, const char *name) {
        g_autofree char *p = g_build_filename(proc_fd_dir, name, NULL);
        return g_file_read_link(p, NULL);
}

static char *our_link(int fd) {
        g_autofree char *name = g_strdup_printf("%d", fd);
        return link_of("/proc/self/fd", name);
}

/* Waits until 'pid' sleeps (cat, in its read of standard input): its descriptors are settled. */
static void wait_sleeping(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);

        for (int i = 0; i < 1000; i++) {
                g_autofree char *stat = NULL;
                const char *p;

                g_assert_true(g_file_get_contents(path, &stat, NULL, NULL));
                p = strrchr(stat, ')');
                g_assert_nonnull(p);
                if (p[2] == 'S')
                        return;
                g_usleep(10 * 1000);
        }
        g_assert_not_reached();
}

/* A signal set of /proc/PID/status, "SigBlk" or "SigIgn". */
static uint64_t status_sigset(pid_t pid, const char *field) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) pid);
        g_autofree char *status = NULL;
        g_autofree char *key = g_strdup_printf("\n%s:\t", field);
        const char *p;

        g_assert_true(g_file_get_contents(path, &status, NULL, NULL));
        p = strstr(status, key);
        g_assert_nonnull(p);
        return g_ascii_strtoull(p + strlen(key), NULL, 16);
}

static void assert_untouched(Fixture *f) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        int slot = spawn_slot_reserve(), fd;
        g_autofree char *slot_link = NULL;

        for (int i = 0; i < N_FDS; i++) {
                struct stat st;
                g_assert_cmpint(fcntl(f->fds[i], F_GETFD), ==, f->fd_flags[i]);
                g_assert_cmpint(fstat(f->fds[i], &st), ==, 0);
                g_assert_true(st.st_dev == f->fd_st[i].st_dev && st.st_ino == f->fd_st[i].st_ino);
        }

        /* The OFD read locks are still there... */
        fd = open(f->locked_path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
        g_assert_cmpint(fl.l_type, ==, F_RDLCK);
        close(fd);
        /* ...and so is the POSIX lock, which any close of the file in our table would drop (an
         * OFD lock query sees our own POSIX locks). */
        fd = open(f->posix_path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        fl = (struct flock) { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
        g_assert_cmpint(fl.l_type, ==, F_WRLCK);
        g_assert_cmpint(fl.l_pid, ==, getpid());
        close(fd);

        /* The slot is back on /dev/null, close-on-exec. */
        g_assert_cmpint(slot, >=, 3);
        slot_link = our_link(slot);
        g_assert_cmpstr(slot_link, ==, "/dev/null");
        g_assert_cmpint(fcntl(slot, F_GETFD), ==, FD_CLOEXEC);
}

static void test_spawn(Fixture *f, gconstpointer data) {
        bool cheap = GPOINTER_TO_INT(data);
        char *argv[] = { (char *) "cat", NULL };
        g_autofree char *fd_dir = NULL, *socket_link = our_link(f->sv[1]);
        g_autoptr(GDir) dir = NULL;
        const char *name;
        unsigned n = 0;
        struct timespec t0, t1;
        int status;
        pid_t pid;

        if (f->skip) {
                g_test_skip("not enough descriptors");
                return;
        }
        spawn_set_force_posix_spawn(!cheap);
        g_assert_cmpint(clock_gettime(CLOCK_MONOTONIC, &t0), ==, 0);
        g_assert_cmpint(spawn_with_stdin("/bin/cat", argv, f->sv[1], &pid), ==, 0);
        g_assert_cmpint(clock_gettime(CLOCK_MONOTONIC, &t1), ==, 0);
        g_test_message("%s spawn with %d descriptors: %.3f ms", cheap ? "cheap" : "posix_spawn", N_FDS,
                       (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
#if defined(__SANITIZE_ADDRESS__)
        if (cheap && !spawn_last_was_cheap())
                g_test_message("AddressSanitizer: posix_spawn() was used");
#else
        g_assert_true(spawn_last_was_cheap() == cheap);
#endif
        spawn_set_force_posix_spawn(false);
        assert_untouched(f);

        /* Its descriptors: our socket as standard input, our standard output and error, nothing
         * else (cat opens nothing before it reads). */
        wait_sleeping(pid);
        fd_dir = g_strdup_printf("/proc/%d/fd", (int) pid);
        dir = g_dir_open(fd_dir, 0, NULL);
        g_assert_nonnull(dir);
        while ((name = g_dir_read_name(dir))) {
                g_autofree char *l = link_of(fd_dir, name);
                int fd = atoi(name);

                g_assert_nonnull(l);
                if (fd == STDIN_FILENO)
                        g_assert_cmpstr(l, ==, socket_link);
                else {
                        g_autofree char *ours = our_link(fd);
                        if (fd > STDERR_FILENO)
                                g_error("the child has our descriptor %d (%s)", fd, l);
                        g_assert_cmpstr(l, ==, ours);
                }
                n++;
        }
        g_assert_cmpuint(n, >=, 1);

        /* Nothing blocked, nothing ignored. posix_spawn() leaves glibc's own two (32 and 33,
         * which no program can ignore or catch through glibc) ignored where we had handlers
         * for them: harmless, and the cheap path does not. */
        g_assert_cmpuint(status_sigset(pid, "SigBlk"), ==, 0);
        g_assert_cmpuint(status_sigset(pid, "SigIgn") & (cheap ? ~UINT64_C(0) : ~UINT64_C(0x180000000)), ==, 0);

        /* It reads the socket it got (what it reads would go to our standard output: nothing),
         * and ends when we close our end. */
        g_assert_cmpint(shutdown(f->sv[0], SHUT_WR), ==, 0);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
}

static void test_exec_fails(Fixture *f, gconstpointer data) {
        bool cheap = GPOINTER_TO_INT(data);
        char *argv[] = { (char *) "nothing", NULL };
        pid_t pid = 0;

        if (f->skip) {
                g_test_skip("not enough descriptors");
                return;
        }
        spawn_set_force_posix_spawn(!cheap);
        g_assert_cmpint(spawn_with_stdin("/nonexistent/nothing", argv, f->sv[1], &pid), ==, -ENOENT);
        /* A file that is not executable. */
        g_assert_cmpint(spawn_with_stdin(f->locked_path, argv, f->sv[1], &pid), ==, -EACCES);

        /* What a spawn costs us, the exec aside: the best of a few (the machine may be busy). */
        double best = 1e9;
        for (int i = 0; i < 20; i++) {
                struct timespec t0, t1;
                g_assert_cmpint(clock_gettime(CLOCK_MONOTONIC, &t0), ==, 0);
                g_assert_cmpint(spawn_with_stdin("/nonexistent/nothing", argv, f->sv[1], &pid), ==, -ENOENT);
                g_assert_cmpint(clock_gettime(CLOCK_MONOTONIC, &t1), ==, 0);
                best = MIN(best, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        }
        g_test_message("%s: a failed spawn with %d descriptors (half locked) costs %.3f ms", cheap ? "cheap" : "posix_spawn",
                       N_FDS, best);
        spawn_set_force_posix_spawn(false);
        assert_untouched(f);
        /* The failed children were reaped. */
        g_assert_cmpint(waitpid(-1, NULL, WNOHANG), ==, -1);
        g_assert_cmpint(errno, ==, ECHILD);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        /* Before the 2,000 descriptors, as the daemon does it before its jobs: the child copies
         * and closes those below the slot (rounded up to 64), however many we hold above it. */
        g_assert_cmpint(spawn_slot_reserve(), <, 64);
        g_test_add("/spawn/cheap", Fixture, GINT_TO_POINTER(true), fixture_setup, test_spawn, fixture_teardown);
        g_test_add("/spawn/posix-spawn", Fixture, GINT_TO_POINTER(false), fixture_setup, test_spawn, fixture_teardown);
        g_test_add("/spawn/exec-fails/cheap", Fixture, GINT_TO_POINTER(true), fixture_setup, test_exec_fails,
                   fixture_teardown);
        g_test_add("/spawn/exec-fails/posix-spawn", Fixture, GINT_TO_POINTER(false), fixture_setup, test_exec_fails,
                   fixture_teardown);
        return g_test_run();
}
