/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobd-opener: opens a job's files with a caller's own rights, and hands the descriptors to
 * the daemon. The daemon runs as root; without this, a caller could have it read or write any
 * file on the host. The opener becomes the caller (uid, gid and supplementary groups, for good)
 * before it looks at any path, so the kernel decides, as it would for the caller's own process:
 * an image the caller cannot read, a backing file named inside it that the caller cannot read
 * (/etc/shadow), a directory the caller cannot write, all fail here with the caller's error.
 * Root's requests come here too, so that every name a job uses is resolved in one place, and so
 * that root's request on another user's image follows that image's names with that user's rights
 * only. The protocol is in opener-protocol.h: a server per identity (serve()), and a child of it
 * per request, which answers it and exits. */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd-util.h"
#include "image.h"
#include "macro.h"
#include "opener-packet.h"
#include "opener-protocol.h"
#include "job-files.h"
#include "open-files.h"

#define SOCKET_FD 0
#define UID_NOBODY 65534

static int send_packet(const char *text, const int *fds, size_t n_fds) {
        return opener_send_packet(SOCKET_FD, text, fds, n_fds, 0);
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

/* Who the opener becomes: resolved from the user database once (per request, or once per server),
 * then taken on by each process that opens files. */
typedef struct Identity {
        uid_t uid;
        gid_t gid;
        gid_t *groups;
        size_t n_groups;
        bool in_database;               /* the user database knows the uid */
} Identity;

/* Formats why resolving failed into 'message' (OPENER_PACKET_MAX bytes), and returns 'r'. */
_printf_(3, 4) static int resolve_failed(char *message, int r, const char *format, ...) {
        va_list ap;

        errno = -r;
        va_start(ap, format);
        (void) vsnprintf(message, OPENER_PACKET_MAX, format, ap);
        va_end(ap);
        return r;
}

/* The user's groups as a login would set them up. */
static int groups_from_database(const struct passwd *pw, gid_t *groups, size_t *ret_n, char *message) {
        int n = OPENER_GROUPS_MAX;

        *ret_n = 0;
        if (!pw)
                return 0;
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                return resolve_failed(message, -E2BIG, "User %u is in too many groups", (unsigned) pw->pw_uid);
        *ret_n = (size_t) n;
        return 0;
}

static int groups_from_list(const char *list, gid_t *groups, size_t *ret_n, char *message) {
        _cleanup_free_ char *copy = strdup(list);
        char *save = NULL;
        size_t n = 0;

        *ret_n = 0;
        if (!copy)
                return resolve_failed(message, -ENOMEM, "Out of memory");
        if (strcmp(list, "-") == 0)
                return 0;
        for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
                unsigned v;
                if (n >= OPENER_GROUPS_MAX || parse_id(g, &v) < 0)
                        return resolve_failed(message, -EINVAL, "Bad group list: %s", list);
                groups[n++] = v;
        }
        *ret_n = n;
        return 0;
}

/* Asks the user database (the slow part: NSS modules, files, maybe a network service) who
 * 'uid_s' with 'groups_s' is. Changes nothing about this process. */
static int resolve(const char *uid_s, const char *groups_s, Identity *ret, char *message) {
        struct passwd *pw;
        unsigned uid;
        int r;

        *ret = (Identity) { .gid = 65534 };
        ret->groups = calloc(OPENER_GROUPS_MAX, sizeof(gid_t));
        if (!ret->groups)
                return resolve_failed(message, -ENOMEM, "Out of memory");
        if (parse_id(uid_s, &uid) < 0)
                return resolve_failed(message, -EINVAL, "Bad user: %s", uid_s);
        ret->uid = uid;

        pw = getpwuid(uid);
        ret->in_database = pw;
        r = strcmp(groups_s, "*") == 0 ? groups_from_database(pw, ret->groups, &ret->n_groups, message)
                                       : groups_from_list(groups_s, ret->groups, &ret->n_groups, message);
        if (r < 0)
                return r;
        if (ret->n_groups > 0)
                ret->gid = ret->groups[0];
        for (size_t i = 0; pw && i < ret->n_groups; i++)
                if (ret->groups[i] == pw->pw_gid)
                        ret->gid = pw->pw_gid;
        return 0;
}

/* Becomes 'id', with no way back. */
static void assume(const Identity *id) {
        if (setgroups(id->n_groups, id->groups) < 0)
                fail(negative_errno(), "Could not set the caller's groups: %m");
        if (setresgid(id->gid, id->gid, id->gid) < 0)
                fail(negative_errno(), "Could not become group %u: %m", (unsigned) id->gid);
        if (setresuid(id->uid, id->uid, id->uid) < 0)
                fail(negative_errno(), "Could not become user %u: %m", (unsigned) id->uid);
        if (id->uid != 0 && setresuid(0, 0, 0) >= 0)
                fail(-EPERM, "Could still become root after becoming user %u", (unsigned) id->uid);
}

/* Becomes the caller, with no way back. */
static void become(const char *uid_s, const char *groups_s) {
        char message[OPENER_PACKET_MAX];
        Identity id;
        int r;

        r = resolve(uid_s, groups_s, &id, message);
        if (r < 0)
                fail(r, "%s", message);
        assume(&id);
        free(id.groups);
}

static void send_files(const JobFiles *f) {
        char text[OPENER_PACKET_MAX];

        for (size_t i = 0; i < f->n_chain; i++)
                if (send_packet("layer", &f->chain[i], 1) < 0)
                        exit(EXIT_FAILURE);
        if (!job_files_has_target(f))
                return;
        if (f->target_dir_fd < 0) {
                if (send_packet("target-in-place", &f->target_fd, 1) < 0)
                        exit(EXIT_FAILURE);
                return;
        }
        (void) snprintf(text, sizeof(text), "target-new %s/%s", f->target_name, strempty(f->target_temp_name));
        int fds[3] = { f->target_fd, f->target_dir_fd, f->target_replaced_fd };
        if (send_packet(text, fds, f->target_replaced_fd >= 0 ? 3 : 2) < 0)
                exit(EXIT_FAILURE);
}

/* 'hidden': a resumed job's unfinished target (mode resume-keep or resume-overwrite). */
static void open_target(const char *mode, const char *path, const char *hidden) {
        _cleanup_free_ char *error = NULL;
        JobFiles f = JOB_FILES_INIT;
        bool overwrite = strcmp(mode, "overwrite") == 0 || strcmp(mode, "resume-overwrite") == 0;
        int r;

        if (!overwrite && strcmp(mode, "keep") != 0 && strcmp(mode, "resume-keep") != 0)
                fail(-EINVAL, "Bad target mode: %s", mode);
        if (hidden)
                r = open_resumed_target_files(path, overwrite, hidden, &f, &error);
        else
                r = open_target_files(path, overwrite, false, &f, &error);
        if (r < 0)
                fail(r, "%s", error ?: "Could not open the target");
        send_files(&f);
        /* The daemon has it now, and removes a named one if the job fails. */
        job_files_hand_over(&f);
        job_files_done(&f);
}

static void become_uid(uid_t uid) {
        char s[16];

        (void) snprintf(s, sizeof(s), "%u", (unsigned) uid);
        become(s, "*");
}

/* Root follows the names that an image records only if nobody but root could have written them:
 * a layer another user owns is that user's to fill, backing names included, so what it names is
 * opened with that user's rights (for good: the drop is one way, and what follows is bound by
 * them); a layer of root's that others may write (group or world) names what anyone of them
 * chose, so what it names is opened as nobody. Decided on each layer as it is open, not on a
 * name that could change meanwhile. */
static int drop_before_following(const struct stat *layer, char **ret_error) {
        if (geteuid() != 0)
                return 0;
        if (layer->st_uid != 0)
                become_uid(layer->st_uid);
        else if (layer->st_mode & (S_IWGRP | S_IWOTH))
                become_uid(UID_NOBODY);
        return 0;
}

/* A symlink at root's name that another user owns leads where that user chose: followed with
 * that user's rights. Looked at without following it, on what the name holds right now. */
static void drop_for_planted_symlink(const char *path) {
        _cleanup_close_ int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;

        if (fd >= 0 && fstat(fd, &st) >= 0 && S_ISLNK(st.st_mode) && st.st_uid != 0)
                become_uid(st.st_uid);
}

static void open_chain(const char *mode, const char *format_name, const char *path) {
        _cleanup_free_ char *error = NULL;
        JobFiles f = JOB_FILES_INIT;
        bool write = strcmp(mode, "write") == 0;
        ImageFormat format;
        int r;

        if (!write && strcmp(mode, "read") != 0)
                fail(-EINVAL, "Bad chain mode: %s", mode);
        format = strcmp(format_name, "probe") == 0 ? IMAGE_FORMAT_PROBE : image_format_from_string(format_name);
        if (format == _IMAGE_FORMAT_MAX)
                fail(-EINVAL, "Bad image format: %s", format_name);

        if (geteuid() == 0)
                drop_for_planted_symlink(path);

        r = open_chain_files(path, format, write, drop_before_following, &f, &error);
        if (r < 0)
                fail(r, "%s", error ?: "Could not open the image");
        send_files(&f);
        job_files_done(&f);
}

/* The request: what the daemon sent on the socket, NUL-separated words (not on the command line,
 * where every user could read the names in /proc). */
static size_t read_request(char *buf, size_t size, char **words, size_t max_words) {
        ssize_t n = recv(SOCKET_FD, buf, size - 1, 0);
        size_t k = 0;

        if (n <= 0)
                fail(-EPROTO, "No request");
        buf[n] = 0;
        for (char *p = buf; p < buf + n && k < max_words; p += strlen(p) + 1)
                words[k++] = p;
        return k;
}

/* The daemon raised its soft limit on descriptors for itself; a process of the caller's gets back
 * the one every process starts with, as systemd's rlimit_nofile_safe() does for its children. A
 * chain of images needs far fewer. */
static void rlimit_nofile_safe(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur <= FD_SETSIZE)
                return;
        rl.rlim_cur = FD_SETSIZE;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

/* The next request socket the daemon sends on the control socket (standard input): a packet
 * "request" with one descriptor. Exits when the daemon closes its end. */
static int receive_request_socket(void) {
        char text[16];

        for (;;) {
                int fds[OPENER_FDS_MAX];
                size_t n_fds = 0;
                ssize_t n;

                n = opener_receive_packet(SOCKET_FD, text, sizeof(text), fds, &n_fds, 0);
                if (n == -EINTR || n == -EPROTO)
                        continue;       /* a packet cut short is dropped (only the daemon writes here) */
                if (n <= 0)
                        exit(n == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
                if (strcmp(text, "request") == 0 && n_fds == 1)
                        return fds[0];
                for (size_t i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
        }
}

/* Tells the daemon which process answers this request, as a pidfd: the daemon kills it when the
 * request ends, although it is not the daemon's child. Without that (the request ended before,
 * and the daemon shut its end), the request is not answered: the process ends before it becomes
 * the caller, which nobody could stop or kill then. */
static void send_pidfd(void) {
        int fd = (int) syscall(SYS_pidfd_open, getpid(), 0);

        if (fd < 0 || send_packet("pid", &fd, 1) < 0)
                _exit(EXIT_FAILURE);
        safe_close(fd);
}

/* Says on the request socket 'fd' that no process could be made to answer it. */
static void refuse_request(int fd, int r) {
        char text[128];

        (void) snprintf(text, sizeof(text), "error %d Could not start a process to open the files: %s", -r,
                        strerror(-r));
        (void) opener_send_packet(fd, text, NULL, 0, MSG_DONTWAIT);
}

/* blockjobd-opener UID GROUPS --serve: one identity's requests, each answered by a child of its
 * own (opener-protocol.h). The user database is asked once per server instead of once per
 * request, and no program is started per request. The server itself stays root and does nothing
 * but fork: the caller can signal or stop a child that became the caller, never the server.
 * Returns in each child, which then is the caller, with its request socket as its standard
 * input. */
static void serve(const char *uid_s, const char *groups_s) {
        char message[OPENER_PACKET_MAX];
        Identity id;
        bool keep;
        int r;

        r = resolve(uid_s, groups_s, &id, message);
        /* What is not worth keeping (a failure, or a user the database does not know: maybe a
         * database that is not up yet) is asked again by each child, as a process of its own
         * would. */
        keep = r >= 0 && id.in_database;
        /* Children are collected by the kernel. */
        (void) signal(SIGCHLD, SIG_IGN);
        for (;;) {
                int fd = receive_request_socket();
                pid_t pid = fork();

                if (pid == 0) {
                        (void) signal(SIGCHLD, SIG_DFL);
                        /* The request socket replaces the control socket: the child keeps nothing of
                         * the server's. */
                        if (dup2(fd, SOCKET_FD) < 0)
                                _exit(EXIT_FAILURE);
                        safe_close(fd);
                        send_pidfd();
                        if (keep)
                                assume(&id);
                        free(id.groups);
                        if (!keep)
                                become(uid_s, groups_s);
                        return;
                }
                if (pid < 0)
                        refuse_request(fd, negative_errno());
                safe_close(fd);
        }
}

int main(int argc, char *argv[]) {
        char request[OPENER_REQUEST_MAX];
        char *words[16];
        size_t n, i;

        if (argc != 4 || strcmp(argv[3], "--serve") != 0) {
                fprintf(stderr, "blockjobd-opener is run by blockjobd, not by hand.\n");
                return 2;
        }
        rlimit_nofile_safe();
        serve(argv[1], argv[2]);
        n = read_request(request, sizeof(request), words, ELEMENTSOF(words));

        /* The target first: for root, opening the chain may mean becoming another user for good. */
        for (i = 0; i < n;) {
                if (strcmp(words[i], "target") == 0 && i + 2 < n) {
                        bool resume = strncmp(words[i + 1], "resume-", 7) == 0;
                        if (resume && i + 3 >= n)
                                fail(-EINVAL, "Bad request: no hidden name");
                        open_target(words[i + 1], words[i + 2], resume ? words[i + 3] : NULL);
                        i += resume ? 4 : 3;
                } else if (strcmp(words[i], "chain") == 0 && i + 3 < n)
                        i += 4;
                else
                        fail(-EINVAL, "Bad request: %s", words[i]);
        }
        for (i = 0; i < n;) {
                if (strcmp(words[i], "chain") == 0) {
                        open_chain(words[i + 1], words[i + 2], words[i + 3]);
                        i += 4;
                } else
                        i += strncmp(words[i + 1], "resume-", 7) == 0 ? 4 : 3;
        }
        return send_packet("done", NULL, 0) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
