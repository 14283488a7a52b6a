/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "spawn-util.h"

#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

/* The child runs on this until it execs: what it does there needs little (no stdio, no malloc). */
#define SPAWN_STACK_SIZE (64U * 1024U)

/* Everything below is taken under 'lock'. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int slot = -EBADF;               /* the spawn slot: /dev/null, O_CLOEXEC, between calls */
static int devnull = -EBADF;            /* what is put back into the slot */
static void *stack;                     /* the child's, mapped once */
static bool cheap_unsupported;          /* the kernel refused CLOSE_RANGE_UNSHARE: posix_spawn() */
static bool force_posix_spawn;
static bool last_cheap;

/* What the child works from and reports back in: it shares our memory (CLONE_VM), and we read
 * this once it has exec'd or exited (CLONE_VFORK). */
typedef struct SpawnChild {
        const char *path;
        char *const *argv;
        int slot;
        int error;                      /* 0, or the negative errno it failed with */
        bool unshare_failed;            /* before anything was changed: fall back */
} SpawnChild;

static int close_range_syscall(unsigned first, unsigned last, unsigned flags) {
        return (int) syscall(__NR_close_range, first, last, flags);
}

int spawn_slot_reserve(void) {
        int r;

        (void) pthread_mutex_lock(&lock);
        if (slot < 0) {
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
                if (devnull >= 0) {
                        /* The lowest free one from 3 up: standard input, output and error are the
                         * child's own business. */
                        slot = fcntl(devnull, F_DUPFD_CLOEXEC, 3);
                        if (slot < 0) {
                                slot = negative_errno();
                                devnull = safe_close(devnull);
                        }
                } else
                        slot = negative_errno();
        }
        r = slot;
        if (slot < 0)
                slot = -EBADF;          /* try again next time */
        (void) pthread_mutex_unlock(&lock);
        return r;
}

/* ---- the child ------------------------------------------------------------------------------ */

/* Not _exit(): a call of a noreturn function makes AddressSanitizer look for the bounds of the
 * stack it runs on, which it does not know here, and warn. */
static void child_exit(void) {
        for (;;)
                (void) syscall(SYS_exit_group, 127);
}

/* Runs in the child, on its own stack but in our memory, until it execs: it must not touch
 * anything of ours but 'c' (no malloc, no stdio, no locks; errno is the parent thread's, which
 * is waiting). */
static int spawn_child(void *userdata) {
        SpawnChild *c = userdata;
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;
        char *envp[] = { NULL };

        /* First of all, a table of our own: until then it is the parent's, and closing anything
         * in it would close it for the parent (and drop its POSIX locks). Only the descriptors
         * below slot + 1 (rounded up to 64) are copied, none is closed in the parent's table. */
        if (close_range_syscall(c->slot + 1, ~0U, CLOSE_RANGE_UNSHARE) < 0) {
                c->error = negative_errno();
                c->unshare_failed = IN_SET(c->error, -ENOSYS, -EINVAL, -EPERM);
                child_exit();
                return 127;
        }
        if (dup2(c->slot, STDIN_FILENO) < 0 ||
            /* The copies of ours below the slot, and the slot itself. */
            close_range_syscall(3, ~0U, 0) < 0)
                goto fail;

        /* As posix_spawn()'s POSIX_SPAWN_SETSIGDEF: ignored signals stay ignored across exec,
         * caught ones are reset by it anyway. Some are refused (SIGKILL, SIGSTOP, glibc's own):
         * those cannot be ignored either. */
        for (int sig = 1; sig < NSIG; sig++)
                (void) sigaction(sig, &sa, NULL);
        /* The parent blocked everything for us, so that no handler of its runs here. */
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                goto fail;

        execve(c->path, c->argv, envp);
fail:
        c->error = negative_errno();
        child_exit();
        return 127;
}

/* ---- the parent ----------------------------------------------------------------------------- */

static int spawn_posix(const char *path, char *const argv[], int stdin_fd, pid_t *ret_pid) {
        char *envp[] = { NULL };
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t none, all;
        int r;

        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&actions);
        posix_spawnattr_init(&attr);
        r = -posix_spawn_file_actions_adddup2(&actions, stdin_fd, STDIN_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        /* Descriptors without O_CLOEXEC do not go along either, as on the cheap path. */
        if (r == 0)
                r = -posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
        if (r == 0)
                r = -posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0)
                r = -posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = -posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (r == 0)
                r = -posix_spawn(ret_pid, path, &actions, &attr, argv, envp);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return r;
}

/* Puts /dev/null back into the slot. If that fails (it should not: the descriptor exists), the
 * slot is given up rather than left on the child's descriptor without O_CLOEXEC. */
static void slot_release(void) {
        if (dup3(devnull, slot, O_CLOEXEC) < 0) {
                slot = safe_close(slot);
                devnull = safe_close(devnull);
        }
}

static int reap(pid_t pid) {
        while (waitpid(pid, NULL, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        return 0;
}

/* Under 'lock'. Returns 1 to fall back to posix_spawn(), 0 with the pid, or a negative errno. */
static int spawn_cheap(const char *path, char *const argv[], int stdin_fd, pid_t *ret_pid) {
        SpawnChild c = { .path = path, .argv = argv, .slot = slot };
        sigset_t all, saved;
        pid_t pid;
        int r;

        if (!stack) {
                void *p = mmap(NULL, SPAWN_STACK_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
                if (p == MAP_FAILED)
                        return negative_errno();
                stack = p;
        }

        /* Without O_CLOEXEC for the child's sake, until it has exec'd. */
        if (dup3(stdin_fd, slot, 0) < 0)
                return negative_errno();

        /* No handler of ours may run in the child, in our memory, before it has reset them. */
        sigfillset(&all);
        r = -pthread_sigmask(SIG_SETMASK, &all, &saved);
        if (r < 0) {
                slot_release();
                return r;
        }
        /* CLONE_VFORK: we wait here until the child has exec'd or exited, so the stack and 'c'
         * are its alone meanwhile. Not CLONE_SIGHAND: its signal dispositions are a copy. */
        pid = clone(spawn_child, (char *) stack + SPAWN_STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &c);
        r = pid < 0 ? negative_errno() : 0;
        (void) pthread_sigmask(SIG_SETMASK, &saved, NULL);
        slot_release();
        if (r < 0)
                return r;

        if (c.error < 0) {
                (void) reap(pid);
                if (c.unshare_failed) {
                        cheap_unsupported = true;
                        return 1;
                }
                return c.error;
        }
        *ret_pid = pid;
        return 0;
}

int spawn_with_stdin(const char *path, char *const argv[], int stdin_fd, pid_t *ret_pid) {
        int r = 1;

        assert(path);
        assert(argv);
        assert(stdin_fd >= 0);
        assert(ret_pid);

        /* Reserved outside the lock (it takes it). */
        (void) spawn_slot_reserve();

        (void) pthread_mutex_lock(&lock);
        last_cheap = false;
        if (slot >= 0 && !cheap_unsupported && !force_posix_spawn) {
                r = spawn_cheap(path, argv, stdin_fd, ret_pid);
                last_cheap = r <= 0;
        }
        if (r > 0)
                r = spawn_posix(path, argv, stdin_fd, ret_pid);
        (void) pthread_mutex_unlock(&lock);
        return r;
}

void spawn_set_force_posix_spawn(bool b) {
        (void) pthread_mutex_lock(&lock);
        force_posix_spawn = b;
        (void) pthread_mutex_unlock(&lock);
}

bool spawn_last_was_cheap(void) {
        bool b;

        (void) pthread_mutex_lock(&lock);
        b = last_cheap;
        (void) pthread_mutex_unlock(&lock);
        return b;
}
