/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

#include "fd-util.h"
#include "macro.h"
#include "opener-packet.h"
#include "opener-protocol.h"

int opener_send_packet(int fd, const char *text, const int *fds, size_t n_fds, int flags) {
        union {
                struct cmsghdr header;
                char buf[CMSG_SPACE(sizeof(int) * OPENER_FDS_MAX)];
        } control = {};
        struct iovec iov = { .iov_base = (char *) text, .iov_len = strlen(text) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        assert(n_fds <= OPENER_FDS_MAX);
        if (n_fds > 0) {
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        return sendmsg(fd, &mh, flags | MSG_NOSIGNAL) < 0 ? negative_errno() : 0;
}

/* -EMFILE or -ENFILE if no descriptor can be had now, else 0. */
static int out_of_descriptors(int fd) {
        int k = fcntl(fd, F_DUPFD_CLOEXEC, 3);

        if (k >= 0) {
                safe_close(k);
                return 0;
        }
        return IN_SET(errno, EMFILE, ENFILE) ? -errno : 0;
}

ssize_t opener_receive_packet(int fd, char *text, size_t size, int *fds, size_t *n_fds, int flags) {
        union {
                struct cmsghdr header;
                char buf[CMSG_SPACE(sizeof(int) * OPENER_FDS_MAX)];
        } control;
        struct iovec iov = { .iov_base = text, .iov_len = size - 1 };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        ssize_t n;

        assert(size > 0);
        *n_fds = 0;
        n = recvmsg(fd, &mh, flags | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return negative_errno();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        memcpy(fds + *n_fds, CMSG_DATA(c), MIN(k, OPENER_FDS_MAX - *n_fds) * sizeof(int));
                        *n_fds += MIN(k, OPENER_FDS_MAX - *n_fds);
                }
        text[n] = 0;
        if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
                /* The kernel drops descriptors it cannot install here and says so with MSG_CTRUNC
                 * only, as it does for more than were asked for: if we cannot take one more now
                 * (before those we got are closed), it was us who ran out. */
                int k = (mh.msg_flags & MSG_CTRUNC) ? out_of_descriptors(fd) : 0;
                for (size_t i = 0; i < *n_fds; i++)
                        safe_close(fds[i]);
                *n_fds = 0;
                return k < 0 ? k : -EPROTO;
        }
        return n;
}
