/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "error-message.h"
#include "macro.h"
#include "opener-protocol.h"
#include "opener.h"

#ifndef BLOCKJOBD_OPENER_PATH
#define BLOCKJOBD_OPENER_PATH "/usr/libexec/blockjobd-opener"
#endif

void caller_files_done(CallerFiles *f) {
        /* A named temporary file that no job took: nobody else will remove it. */
        if (f->target_dir_fd >= 0 && f->target_temp_name &&
            unlinkat(f->target_dir_fd, f->target_temp_name, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove temporary file '%s': %m", f->target_temp_name);
        for (size_t i = 0; i < f->n_chain; i++)
                safe_close(f->chain[i]);
        safe_close(f->target_fd);
        safe_close(f->target_dir_fd);
        free(f->target_name);
        free(f->target_temp_name);
        *f = (CallerFiles) CALLER_FILES_NULL;
}

void caller_files_hand_over(CallerFiles *f) {
        free(f->target_temp_name);
        f->target_temp_name = NULL;
}

const ImageChainFds *caller_files_chain(const CallerFiles *f, ImageChainFds *buf) {
        if (f->n_chain == 0)
                return NULL;
        *buf = (ImageChainFds) { .fds = f->chain, .n = f->n_chain };
        return buf;
}

const TargetGiven *caller_files_target(const CallerFiles *f, TargetGiven *buf) {
        if (f->target_fd < 0)
                return NULL;
        *buf = (TargetGiven) {
                .fd = f->target_fd,
                .dir_fd = f->target_dir_fd,
                .name = f->target_name,
                .temp_name = f->target_temp_name,
                .owner = f->owner,
        };
        return buf;
}

static const char *opener_path(void) {
        const char *e = secure_getenv("BLOCKJOBD_OPENER");
        return e && *e ? e : BLOCKJOBD_OPENER_PATH;
}

static char *groups_to_string(const gid_t *groups, size_t n) {
        char *s, *p;

        if (n == 0)
                return strdup("-");
        s = p = malloc(n * 11 + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "%s%u", i > 0 ? "," : "", (unsigned) groups[i]);
        return s;
}

static int spawn_opener(const OpenerRequest *req, int socket_fd, pid_t *ret_pid) {
        _cleanup_free_ char *groups = groups_to_string(req->groups, req->n_groups);
        char uid[16];
        const char *argv[11];
        char *envp[] = { NULL };
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t none, all;
        size_t n = 0;
        int r;

        if (!groups)
                return -ENOMEM;
        (void) snprintf(uid, sizeof(uid), "%u", (unsigned) req->uid);
        argv[n++] = "blockjobd-opener";
        argv[n++] = uid;
        argv[n++] = req->groups_from_user_database ? "*" : groups;
        if (req->chain_path) {
                argv[n++] = "chain";
                argv[n++] = req->chain_write ? "write" : "read";
                argv[n++] = req->chain_path;
        }
        if (req->target_path) {
                argv[n++] = "target";
                argv[n++] = req->target_overwrite ? "overwrite" : "keep";
                argv[n++] = req->target_path;
        }
        argv[n] = NULL;

        /* The socket becomes its standard input; nothing else of ours goes along (everything
         * else is O_CLOEXEC), nor our blocked signals, nor our environment. */
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&actions);
        posix_spawnattr_init(&attr);
        r = -posix_spawn_file_actions_adddup2(&actions, socket_fd, STDIN_FILENO);
        if (r == 0)
                r = -posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0)
                r = -posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = -posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (r == 0)
                r = -posix_spawn(ret_pid, opener_path(), &actions, &attr, (char *const *) argv, envp);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return r;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

/* One packet: its text (NUL-terminated) and the descriptors that came with it. Returns the text's
 * length (0 at the end of the stream). */
static ssize_t receive_packet(int fd, uint64_t deadline, char *text, int *fds, size_t *n_fds) {
        union {
                struct cmsghdr header;
                char buf[CMSG_SPACE(sizeof(int) * OPENER_FDS_MAX)];
        } control;
        struct iovec iov = { .iov_base = text, .iov_len = OPENER_PACKET_MAX - 1 };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        *n_fds = 0;
        for (;;) {
                uint64_t now = now_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                int k = poll(&p, 1, (int) ((deadline - now + 999) / 1000));
                if (k < 0 && errno != EINTR)
                        return negative_errno();
                if (k > 0)
                        break;
        }

        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0)
                return negative_errno();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        memcpy(fds + *n_fds, CMSG_DATA(c), MIN(k, OPENER_FDS_MAX - *n_fds) * sizeof(int));
                        *n_fds += MIN(k, OPENER_FDS_MAX - *n_fds);
                }
        text[n] = 0;
        if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC))
                return -EPROTO;
        return n;
}

static bool is_image_file(int fd) {
        struct stat st;
        return fstat(fd, &st) >= 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* Takes one answer into 'f'. Returns 1 when done, 0 for more to come. Takes the descriptors. */
static int take_packet(char *text, int *fds, size_t n_fds, CallerFiles *f, char **ret_error) {
        char *slash;

        /* The opener runs as the caller: what it sends is checked like anything from a caller
         * (names and file types; target-file.c checks the rest). */
        if (strcmp(text, "layer") == 0 && n_fds == 1 && is_image_file(fds[0])) {
                if (f->n_chain >= IMAGE_CHAIN_DEPTH_MAX) {
                        safe_close(fds[0]);
                        return -EPROTO;
                }
                f->chain[f->n_chain++] = fds[0];
                return 0;
        }
        if (strcmp(text, "target-in-place") == 0 && n_fds == 1 && f->target_fd < 0 && is_image_file(fds[0])) {
                f->target_fd = fds[0];
                return 0;
        }
        if (strncmp(text, "target-new ", 11) == 0 && n_fds == 2 && f->target_fd < 0 &&
            (slash = strchr(text + 11, '/'))) {
                *slash = 0;
                f->target_fd = fds[0];
                f->target_dir_fd = fds[1];
                f->target_name = strdup(text + 11);
                if (slash[1] != 0)
                        f->target_temp_name = strdup(slash + 1);
                if (!f->target_name || (slash[1] != 0 && !f->target_temp_name))
                        return -ENOMEM;
                return 0;
        }
        for (size_t i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        if (strncmp(text, "error ", 6) == 0) {
                char *message;
                long e = strtol(text + 6, &message, 10);
                if (e <= 0 || e >= 4096 || *message != ' ')
                        return -EPROTO;
                return error_message(ret_error, (int) -e, "%s", message + 1);
        }
        if (strcmp(text, "done") == 0 && n_fds == 0)
                return 1;
        return -EPROTO;
}

int opener_open(const OpenerRequest *req, CallerFiles *f, char **ret_error) {
        _cleanup_close_ int our_end = -EBADF, their_end = -EBADF;
        _cleanup_free_ char *text = NULL;
        uint64_t deadline = now_usec() + OPENER_TIMEOUT_USEC;
        pid_t pid;
        int sv[2], r;

        text = malloc(OPENER_PACKET_MAX);
        if (!text)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return error_message(ret_error, negative_errno(), "Could not make a socket for blockjobd-opener: %m");
        our_end = sv[0];
        their_end = sv[1];

        r = spawn_opener(req, their_end, &pid);
        if (r < 0)
                return error_message(ret_error, r, "Could not run %s: %m", opener_path());
        their_end = safe_close(their_end);

        for (;;) {
                int fds[OPENER_FDS_MAX];
                size_t n_fds;
                ssize_t n = receive_packet(our_end, deadline, text, fds, &n_fds);

                if (n <= 0) {
                        for (size_t i = 0; i < n_fds; i++)
                                safe_close(fds[i]);
                        if (n == -ETIMEDOUT)
                                r = error_message(ret_error, -ETIMEDOUT, "Opening the files as user %u took too long",
                                                  (unsigned) req->uid);
                        else if (n == 0)
                                r = error_message(ret_error, -EPROTO, "blockjobd-opener ended without an answer");
                        else
                                r = error_message(ret_error, (int) n, "Could not read blockjobd-opener's answer: %m");
                        break;
                }
                r = take_packet(text, fds, n_fds, f, ret_error);
                if (r == -EPROTO && (!ret_error || !*ret_error))
                        r = error_message(ret_error, r, "blockjobd-opener answered what it was not asked");
                if (r != 0)
                        break;
        }

        /* Done or not, it goes now: it runs as the caller, who could stop it before it exits. */
        (void) kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        if (r < 0) {
                log_debug("Opening files as user %u failed: %s", (unsigned) req->uid, strempty(*ret_error));
                return r;
        }
        f->owner = req->uid;
        return 0;
}
