/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobd-opener: opens a job's files with a caller's own rights, and hands the descriptors to
 * the daemon. The daemon runs as root; without this, a caller could have it read or write any
 * file on the host. The opener becomes the caller (uid, gid and supplementary groups, for good)
 * before it looks at any path, so the kernel decides, as it would for the caller's own process:
 * an image the caller cannot read, a backing file named inside it that the caller cannot read
 * (/etc/shadow), a directory the caller cannot write, all fail here with the caller's error.
 * The protocol is in opener-protocol.h. Short-lived: one request, then it exits. */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "image.h"
#include "macro.h"
#include "opener-protocol.h"
#include "tmpfile.h"

#define SOCKET_FD 0

static int send_packet(const char *text, const int *fds, size_t n_fds) {
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
        return sendmsg(SOCKET_FD, &mh, MSG_NOSIGNAL) < 0 ? negative_errno() : 0;
}

/* Says why the request failed, and ends. 'r' is a negative errno; %m in 'format' names it. */
_printf_(2, 3) _Noreturn static void fail(int r, const char *format, ...) {
        char text[OPENER_PACKET_MAX];
        va_list ap;
        int k;

        k = snprintf(text, sizeof(text), "error %d ", -r);
        errno = -r;
        va_start(ap, format);
        (void) vsnprintf(text + k, sizeof(text) - k, format, ap);
        va_end(ap);
        (void) send_packet(text, NULL, 0);
        exit(EXIT_FAILURE);
}

static int parse_id(const char *s, unsigned *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end || v >= (unsigned long) UINT32_MAX || s[0] == '-')
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* The user's groups as a login would set them up. */
static size_t groups_from_database(const struct passwd *pw, gid_t *groups) {
        int n = OPENER_GROUPS_MAX;

        if (!pw)
                return 0;
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                fail(-E2BIG, "User %u is in too many groups", (unsigned) pw->pw_uid);
        return (size_t) n;
}

static size_t groups_from_list(const char *list, gid_t *groups) {
        _cleanup_free_ char *copy = strdup(list);
        char *save = NULL;
        size_t n = 0;

        if (!copy)
                fail(-ENOMEM, "Out of memory");
        if (strcmp(list, "-") == 0)
                return 0;
        for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
                unsigned v;
                if (n >= OPENER_GROUPS_MAX || parse_id(g, &v) < 0)
                        fail(-EINVAL, "Bad group list: %s", list);
                groups[n++] = v;
        }
        return n;
}

/* Becomes the caller, with no way back. */
static void become(const char *uid_s, const char *groups_s) {
        _cleanup_free_ gid_t *groups = calloc(OPENER_GROUPS_MAX, sizeof(gid_t));
        struct passwd *pw;
        unsigned uid;
        gid_t gid = 65534;
        size_t n;

        if (!groups)
                fail(-ENOMEM, "Out of memory");
        if (parse_id(uid_s, &uid) < 0)
                fail(-EINVAL, "Bad user: %s", uid_s);

        pw = getpwuid(uid);
        n = strcmp(groups_s, "*") == 0 ? groups_from_database(pw, groups) : groups_from_list(groups_s, groups);
        if (n > 0)
                gid = groups[0];
        for (size_t i = 0; pw && i < n; i++)
                if (groups[i] == pw->pw_gid)
                        gid = pw->pw_gid;

        if (setgroups(n, groups) < 0)
                fail(negative_errno(), "Could not set the caller's groups: %m");
        if (setresgid(gid, gid, gid) < 0)
                fail(negative_errno(), "Could not become group %u: %m", (unsigned) gid);
        if (setresuid(uid, uid, uid) < 0)
                fail(negative_errno(), "Could not become user %u: %m", uid);
        if (uid != 0 && setresuid(0, 0, 0) >= 0)
                fail(-EPERM, "Could still become root after becoming user %u", uid);
}

/* The image and every backing file it names, as the caller can open them; for writing, the
 * image itself must be writable, its backing files are writable where the caller may write them
 * (commit writes into one of them). */
static void open_chain(const char *mode, const char *path) {
        Image *img = NULL;
        _cleanup_free_ char *error = NULL;
        bool write = strcmp(mode, "write") == 0;
        int r;

        if (!write && strcmp(mode, "read") != 0)
                fail(-EINVAL, "Bad chain mode: %s", mode);

        /* Read-only, unlocked: this only looks; the daemon takes the locks on its own. */
        r = image_open(path, IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_LOCK, &img, &error);
        if (r < 0)
                fail(r, "%s", error ?: "Could not open the image");

        for (Image *layer = img; layer; layer = image_backing(layer)) {
                _cleanup_close_ int rw = -EBADF;

                if (write) {
                        /* Reopening the same file checks the caller's right to write it. */
                        rw = fd_reopen(image_fd(layer), O_RDWR);
                        if (rw < 0 && layer == img)
                                fail(rw, "Could not open '%s' for writing: %m", path);
                }
                int fd = rw >= 0 ? rw : image_fd(layer);
                r = send_packet("layer", &fd, 1);
                if (r < 0)
                        exit(EXIT_FAILURE);
        }
        image_close(img);
}

/* The target as the caller could make it: a new file (mode 0600, the caller's) in its
 * directory, or with 'overwrite' an existing one the caller may replace, or a device the caller
 * may write. */
static void open_target(const char *mode, const char *path, uid_t uid) {
        TmpFile t = TMPFILE_NULL;
        bool overwrite = strcmp(mode, "overwrite") == 0;
        char text[OPENER_PACKET_MAX];
        struct stat st;
        int r;

        if (!overwrite && strcmp(mode, "keep") != 0)
                fail(-EINVAL, "Bad target mode: %s", mode);

        /* What the name leads to decides the kind of target (a device is often named by a
         * symlink, /dev/disk/by-id/...). */
        if (stat(path, &st) >= 0) {
                if (S_ISDIR(st.st_mode))
                        fail(-EISDIR, "Target '%s' is a directory", path);
                if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                        fail(-EINVAL, "Target '%s' is neither a regular file nor a block device", path);
                if (!overwrite)
                        fail(-EEXIST, "Target '%s' already exists", path);

                if (S_ISBLK(st.st_mode)) {
                        /* Not O_EXCL: the daemon claims the device when it takes it over. */
                        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                        if (fd < 0)
                                fail(negative_errno(), "Could not open target device '%s': %m", path);
                        if (send_packet("target-in-place", &fd, 1) < 0)
                                exit(EXIT_FAILURE);
                        return;
                }
        } else if (errno != ENOENT)
                fail(negative_errno(), "Could not check target '%s': %m", path);

        r = tmpfile_open(&t, path, 0600, true);
        if (r == -EISDIR)
                fail(r, "Target '%s' names a directory", path);
        if (r < 0)
                fail(r, "Could not create target '%s': %m", path);

        /* From here on, the directory we opened, and the entry in it, whatever it is (a symlink
         * too): that is what the daemon will replace. */
        if (fstatat(t.dir_fd, t.name, &st, AT_SYMLINK_NOFOLLOW) >= 0) {
                const char *why = NULL;

                if (!overwrite)
                        r = -EEXIST, why = "already exists";
                else if (S_ISDIR(st.st_mode))
                        r = -EISDIR, why = "is a directory";
                else if (tmpfile_may_replace(&t, uid) <= 0)
                        r = -EPERM, why = "belongs to another user in a sticky directory";
                if (why) {
                        tmpfile_discard(&t);
                        fail(r, "Target '%s' %s", path, why);
                }
        }

        (void) snprintf(text, sizeof(text), "target-new %s/%s", t.name, strempty(t.temp_name));
        int fds[2] = { t.fd, t.dir_fd };
        r = send_packet(text, fds, 2);
        if (r < 0) {
                tmpfile_discard(&t);
                exit(EXIT_FAILURE);
        }
        /* The daemon has it now, and removes a named one if the job fails. */
        tmpfile_close(&t);
}

int main(int argc, char *argv[]) {
        int i;

        if (argc < 3) {
                fprintf(stderr, "blockjobd-opener is run by blockjobd, not by hand.\n");
                return 2;
        }
        become(argv[1], argv[2]);
        uid_t uid = getuid();

        for (i = 3; i < argc; i += 3) {
                if (i + 2 >= argc)
                        fail(-EINVAL, "Incomplete request");
                if (strcmp(argv[i], "chain") == 0)
                        open_chain(argv[i + 1], argv[i + 2]);
                else if (strcmp(argv[i], "target") == 0)
                        open_target(argv[i + 1], argv[i + 2], uid);
                else
                        fail(-EINVAL, "Unknown request: %s", argv[i]);
        }
        return send_packet("done", NULL, 0) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
