/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "error-message.h"
#include "log.h"
#include "macro.h"
#include "opener-packet.h"
#include "opener-protocol.h"
#include "opener.h"
#include "spawn-util.h"

#define UINT_TO_PTR(u) ((void *) (uintptr_t) (u))
#define PTR_TO_UINT(p) ((unsigned) (uintptr_t) (p))

#ifndef BLOCKJOBD_OPENER_PATH
#define BLOCKJOBD_OPENER_PATH "/usr/libexec/blockjobd-opener"
#endif

/* Openers that were told to go but have not ended yet, per user whose request they ran: a
 * process stuck in a file system that does not answer outlives SIGKILL, and one user must not
 * fill the daemon's tasks with them. Event loop only. */
typedef struct Unreaped {
        uid_t uid;
        unsigned n;
        struct Unreaped *next;
} Unreaped;

static Unreaped *unreaped;

static void unreaped_add(uid_t uid, int delta) {
        Unreaped **p, *u;

        for (p = &unreaped; *p && (*p)->uid != uid; p = &(*p)->next)
                ;
        if (!*p) {
                if (delta < 0 || !(u = calloc(1, sizeof(*u))))
                        return;
                u->uid = uid;
                *p = u;
        }
        u = *p;
        if (delta < 0 && u->n == 0)
                return;
        u->n += delta;
        if (u->n == 0) {
                *p = u->next;
                free(u);
        }
}

unsigned opener_unreaped(uid_t uid) {
        for (Unreaped *u = unreaped; u; u = u->next)
                if (u->uid == uid)
                        return u->n;
        return 0;
}

struct OpenerCall {
        sd_event *event;
        uid_t uid;
        JobFiles *files;
        OpenerDone done;
        void *userdata;

        uint64_t server_id;             /* the server that was sent the request */
        uint64_t sent;                  /* when */
        int pidfd;                      /* the server's child that answers it, once it said so */
        int socket_fd;
        sd_event_source *io;
        char *text;                     /* one packet */
        char *resume_name;              /* the hidden name a resumed target must come back under */
        bool heard;                     /* a packet came */
        bool answered;
};

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

/* What to open, as the opener reads it from the socket: NUL-separated words. */
static int build_request(const OpenerRequest *req, char *buf, size_t size, size_t *ret_len) {
        const char *words[8];
        size_t n = 0, len = 0;

        if (req->target_path) {
                bool resume = req->target_resume_name;
                words[n++] = "target";
                words[n++] = resume ? (req->target_overwrite ? "resume-overwrite" : "resume-keep")
                                    : (req->target_overwrite ? "overwrite" : "keep");
                words[n++] = req->target_path;
                if (resume)
                        words[n++] = req->target_resume_name;
        }
        if (req->chain_path) {
                words[n++] = "chain";
                words[n++] = req->chain_write ? "write" : "read";
                words[n++] = image_format_to_string(req->chain_format);
                words[n++] = req->chain_path;
        }
        for (size_t i = 0; i < n; i++) {
                size_t k = strlen(words[i]) + 1;
                if (len + k > size)
                        return -ENAMETOOLONG;
                memcpy(buf + len, words[i], k);
                len += k;
        }
        *ret_len = len;
        return 0;
}

/* ---- servers -------------------------------------------------------------------------------- */

/* One blockjobd-opener --serve per identity (uid and groups, as on its command line), started by
 * the first request of that identity and sent every later one; it forks a child per request
 * (opener-main.c, serve()). A request then costs a fork instead of a spawn and the user database
 * lookups of a new process (measured here: 1.5 ms warm, 4 to 7 ms with a cold page cache, where
 * the database loads its modules). A server asks the database once: it is retired when idle for
 * OPENER_SERVER_IDLE_USEC and at the latest OPENER_SERVER_AGE_USEC after it started, so that a
 * change of the user's groups takes effect for the next request after that, as it would for a
 * new login. Retiring closes its control socket: it answers what it was sent, then exits. At most
 * OPENER_SERVERS_MAX run; a new identity beyond that retires the least recently used. Event loop
 * only. */
#define OPENER_SERVER_IDLE_USEC (10 * USEC_PER_SEC)
#define OPENER_SERVER_AGE_USEC (60 * USEC_PER_SEC)
#define OPENER_SERVERS_MAX 32U
/* A request that a server did not take up in this time (no child told its pid) means the server
 * is stuck (in the user database: a network service that does not answer): it is killed. */
#define OPENER_SERVER_STUCK_USEC (5 * USEC_PER_SEC)

typedef struct OpenerServer OpenerServer;
struct OpenerServer {
        uint64_t id;                    /* never reused, unlike a pid */
        sd_event *event;                /* the loop it serves (its sources are there) */
        char *key;                      /* "UID GROUPS" */
        uid_t uid;
        pid_t pid;
        int pidfd;
        int control_fd;                 /* -EBADF once retired */
        uint64_t started;
        sd_event_source *exit_source;   /* its pidfd: readable once it ended */
        sd_event_source *timer;         /* retires it */
        OpenerServer *next;
};

/* Servers that take requests, the most recently used first; and those retired, until they end. */
static OpenerServer *servers, *retired;
static uint64_t servers_started;

static void server_unlink(OpenerServer *s) {
        for (OpenerServer **p = &servers; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        return;
                }
        for (OpenerServer **p = &retired; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        return;
                }
}

static void server_free(OpenerServer *s) {
        server_unlink(s);
        s->exit_source = sd_event_source_disable_unref(s->exit_source);
        s->timer = sd_event_source_disable_unref(s->timer);
        safe_close(s->pidfd);
        safe_close(s->control_fd);
        free(s->key);
        free(s);
}

static int on_server_exit(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        OpenerServer *s = userdata;
        siginfo_t si = {};

        (void) waitid(P_PIDFD, (id_t) fd, &si, WEXITED | WNOHANG);
        if (s->control_fd < 0)
                unreaped_add(s->uid, -1);
        server_free(s);
        return 0;
}

/* No more requests go to 's'; it ends once it answered those it has ('kill': now). Until it has
 * ended it counts against its user, as a killed opener does. */
static void server_retire(OpenerServer *s, bool kill_it) {
        if (s->control_fd >= 0) {
                server_unlink(s);
                s->next = retired;
                retired = s;
                s->control_fd = safe_close(s->control_fd);
                s->timer = sd_event_source_disable_unref(s->timer);
                unreaped_add(s->uid, +1);
        }
        if (kill_it)
                (void) syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
}

static int on_server_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        server_retire(userdata, false);
        return 0;
}

static OpenerServer *server_find(uint64_t id) {
        for (OpenerServer *s = servers; s; s = s->next)
                if (s->id == id)
                        return s;
        for (OpenerServer *s = retired; s; s = s->next)
                if (s->id == id)
                        return s;
        return NULL;
}

/* Used now: first in line, and idle from now on. */
static void server_touch(OpenerServer *s) {
        uint64_t now_usec = 0;

        if (servers != s) {
                server_unlink(s);
                s->next = servers;
                servers = s;
        }
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now_usec);
        (void) sd_event_source_set_time(s->timer, MIN(now_usec + OPENER_SERVER_IDLE_USEC,
                                                      s->started + OPENER_SERVER_AGE_USEC));
}

static int server_start(sd_event *event, const OpenerRequest *req, const char *key, const char *groups,
                        OpenerServer **ret) {
        _cleanup_close_ int their_end = -EBADF;
        OpenerServer *s;
        char uid[16];
        const char *argv[5];
        unsigned n = 0;
        int sv[2], r;

        for (OpenerServer *i = servers; i; i = i->next)
                if (++n >= OPENER_SERVERS_MAX) {
                        server_retire(i, false);     /* the least recently used */
                        break;
                }

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (OpenerServer) {
                .id = ++servers_started,
                .event = event,
                .uid = req->uid,
                .pidfd = -EBADF,
                .control_fd = -EBADF,
        };
        s->key = strdup(key);
        if (!s->key) {
                server_free(s);
                return -ENOMEM;
        }
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                r = negative_errno();
                server_free(s);
                return r;
        }
        s->control_fd = sv[0];
        their_end = sv[1];

        (void) snprintf(uid, sizeof(uid), "%u", (unsigned) req->uid);
        argv[0] = "blockjobd-opener";
        argv[1] = uid;
        argv[2] = groups;
        argv[3] = "--serve";
        argv[4] = NULL;
        /* The socket becomes its standard input; nothing else of ours goes along, nor our
         * blocked signals, nor our environment. Not through posix_spawn(): its child copies our
         * descriptor table, 2-4 per job, and closing those that carry locks at exec costs more
         * with every job (spawn-util.h). Only the event loop thread gets here, and no thread of
         * ours ever execs otherwise, which spawn_with_stdin() asks for. */
        r = spawn_with_stdin(opener_path(), (char *const *) argv, their_end, &s->pid);
        if (r < 0) {
                server_free(s);
                return r;
        }
        /* Not reaped yet, so the pid is still this child's. */
        s->pidfd = (int) syscall(SYS_pidfd_open, s->pid, 0);
        if (s->pidfd < 0) {
                r = negative_errno();
                (void) kill(s->pid, SIGKILL);
                (void) waitpid(s->pid, NULL, 0);     /* no file system to hang in: it was just exec'd */
                server_free(s);
                return r;
        }
        (void) sd_event_now(event, CLOCK_MONOTONIC, &s->started);
        r = sd_event_add_io(event, &s->exit_source, s->pidfd, EPOLLIN, on_server_exit, s);
        if (r >= 0)
                r = sd_event_add_time(event, &s->timer, CLOCK_MONOTONIC, s->started + OPENER_SERVER_IDLE_USEC, 0,
                                      on_server_timer, s);
        if (r < 0) {
                (void) syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
                (void) waitid(P_PIDFD, (id_t) s->pidfd, &(siginfo_t) {}, WEXITED);
                server_free(s);
                return r;
        }
        (void) sd_event_source_set_description(s->exit_source, "opener-server");
        (void) sd_event_source_set_description(s->timer, "opener-server-timer");
        s->next = servers;
        servers = s;
        *ret = s;
        return 0;
}

/* Hands the request socket 'fd' to the server of 'req's identity, started if there is none (or
 * the one there was ended). Returns the server's id. */
static int server_send(sd_event *event, const OpenerRequest *req, int fd, uint64_t *ret_id) {
        _cleanup_free_ char *groups = req->groups_from_user_database ? strdup("*")
                                                                     : groups_to_string(req->groups, req->n_groups);
        _cleanup_free_ char *key = NULL;
        int r = 0;

        if (!groups || asprintf(&key, "%u %s", (unsigned) req->uid, groups) < 0)
                return -ENOMEM;

        /* Twice at most: a server that ended, or cannot take more (it is stuck, or the kernel's
         * bound on descriptors in flight is reached), is retired (what it was sent already is
         * answered, or ends with the requests' deadlines), and a new one gets the request. */
        for (int attempt = 0; attempt < 2; attempt++) {
                OpenerServer *s = servers;

                while (s && (s->event != event || strcmp(s->key, key) != 0))
                        s = s->next;
                if (!s) {
                        r = server_start(event, req, key, groups, &s);
                        if (r < 0)
                                return r;
                }
                r = opener_send_packet(s->control_fd, "request", &fd, 1, MSG_DONTWAIT);
                if (r >= 0) {
                        server_touch(s);
                        *ret_id = s->id;
                        return 0;
                }
                server_retire(s, false);
        }
        return r;
}

void opener_servers_close(void) {
        while (servers)
                server_retire(servers, false);
        while (retired)
                server_free(retired);
}

/* ---- reaping ------------------------------------------------------------------------------- */

static int on_reaped(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        siginfo_t si = {};

        /* The pidfd is readable once the process has exited (its server collects it), and this
         * source goes. */
        (void) waitid(P_PIDFD, (id_t) fd, &si, WEXITED | WNOHANG);
        unreaped_add((uid_t) PTR_TO_UINT(userdata), -1);
        /* The loop holds the only reference to a floating source: take one, make it an
         * ordinary source (the loop lets go of its own), and drop ours. */
        sd_event_source_ref(s);
        (void) sd_event_source_set_floating(s, false);
        sd_event_source_disable_unref(s);
        return 0;
}

static bool is_pidfd(int fd);

/* The child's "pid" packet, if it is waiting on the socket unread. After shutdown(), so that no
 * child can send it later: one that had not yet sent it fails to, and exits before it becomes
 * the caller (opener-main.c). */
static int take_unread_pidfd(OpenerCall *c) {
        int fds[OPENER_FDS_MAX];
        size_t n_fds = 0;

        if (c->heard || c->socket_fd < 0)
                return -EBADF;          /* the first packet was not "pid": none will come */
        (void) shutdown(c->socket_fd, SHUT_RDWR);
        if (opener_receive_packet(c->socket_fd, c->text, OPENER_PACKET_MAX, fds, &n_fds, MSG_DONTWAIT) > 0 &&
            strcmp(c->text, "pid") == 0 && n_fds == 1 && is_pidfd(fds[0]))
                return fds[0];
        for (size_t i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        return -EBADF;
}

/* Kills the server's child that answers the request (it runs as the caller, who could stop it
 * before it exits), and counts it until it is gone, without waiting here: a process in an
 * uninterruptible sleep (a hung file system) takes its time to die. A request that no child took
 * up in OPENER_SERVER_STUCK_USEC was sent to a server that is stuck (in the user database: a
 * network service that does not answer): that one is killed instead. */
static void opener_kill(OpenerCall *c) {
        sd_event_source *s = NULL;

        if (c->pidfd < 0)
                c->pidfd = take_unread_pidfd(c);
        if (c->pidfd < 0) {
                uint64_t now_usec = 0;
                OpenerServer *server;

                (void) sd_event_now(c->event, CLOCK_MONOTONIC, &now_usec);
                if (c->server_id > 0 && now_usec >= c->sent + OPENER_SERVER_STUCK_USEC &&
                    (server = server_find(c->server_id))) {
                        log_warning("Killing blockjobd-opener server %u of user %u: it did not take up a request in %u s",
                                    (unsigned) server->pid, (unsigned) server->uid,
                                    (unsigned) (OPENER_SERVER_STUCK_USEC / USEC_PER_SEC));
                        server_retire(server, true);
                }
                c->server_id = 0;
                return;
        }
        (void) syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0);
        if (sd_event_add_io(c->event, &s, c->pidfd, EPOLLIN, on_reaped, UINT_TO_PTR(c->uid)) >= 0) {
                (void) sd_event_source_set_io_fd_own(s, true);
                (void) sd_event_source_set_description(s, "opener-reaper");
                (void) sd_event_source_set_floating(s, true);
                sd_event_source_unref(s);
                c->pidfd = -EBADF;
                unreaped_add(c->uid, +1);
        }
        c->pidfd = safe_close(c->pidfd);
        c->server_id = 0;
}

OpenerCall *opener_call_free(OpenerCall *c) {
        if (!c)
                return NULL;
        c->io = sd_event_source_disable_unref(c->io);
        opener_kill(c);
        safe_close(c->socket_fd);
        sd_event_unref(c->event);
        free(c->text);
        free(c->resume_name);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(OpenerCall *, opener_call_free);

/* ---- answers ------------------------------------------------------------------------------- */

static bool is_image_file(int fd) {
        struct stat st;
        return fstat(fd, &st) >= 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

static bool valid_entry_name(const char *name) {
        return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* Takes one answer into 'f'. Returns 1 when done, 0 for more to come. Takes the descriptors. */
/* A new target's hidden name: none (O_TMPFILE), the named fallback's ".#...", or for a resumed
 * target exactly the name it was asked to reopen (never a new file in its place). */
static bool valid_temp_name(const char *temp, const char *resume_name) {
        if (resume_name)
                return strcmp(temp, resume_name) == 0;
        return !*temp || (valid_entry_name(temp) && strncmp(temp, ".#", 2) == 0);
}

static int take_packet(char *text, int *fds, size_t n_fds, uid_t uid, const char *resume_name, JobFiles *f,
                       char **ret_error) {
        char *slash;

        /* The opener runs as the caller: what it sends is checked like anything from a caller
         * (names and file types; target-file.c checks the rest). */
        if (strcmp(text, "layer") == 0 && n_fds == 1 && is_image_file(fds[0]))
                return job_files_add_layer(f, fds[0]) < 0 ? -EPROTO : 0;      /* more layers than asked for */
        if (strcmp(text, "target-in-place") == 0 && n_fds == 1 && !job_files_has_target(f) && is_image_file(fds[0])) {
                job_files_set_target_in_place(f, fds[0]);
                return 0;
        }
        if (strncmp(text, "target-new ", 11) == 0 && IN_SET(n_fds, 2U, 3U) && !job_files_has_target(f) &&
            (slash = strchr(text + 11, '/'))) {
                *slash = 0;
                const char *name = text + 11, *temp = slash + 1;
                struct stat st;
                if (valid_entry_name(name) && valid_temp_name(temp, resume_name) &&
                    fstat(fds[0], &st) >= 0 && S_ISREG(st.st_mode) && fstat(fds[1], &st) >= 0 && S_ISDIR(st.st_mode) &&
                    (n_fds < 3 || (fstat(fds[2], &st) >= 0 && !S_ISDIR(st.st_mode))))
                        return job_files_set_new_target(f, fds[0], fds[1], name, *temp ? temp : NULL, uid,
                                                        n_fds == 3 ? fds[2] : -EBADF);
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

/* A pidfd: of a process that runs, or ended (ESRCH), or runs as another user by now (EPERM,
 * without CAP_KILL); anything else is EBADF. */
static bool is_pidfd(int fd) {
        return syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) >= 0 || IN_SET(errno, ESRCH, EPERM);
}

static void opener_answer(OpenerCall *c, int r, bool ours, const char *error) {
        c->answered = true;
        c->io = sd_event_source_disable_unref(c->io);
        /* Done or not, it goes now: it runs as the caller, who could stop it before it exits. */
        opener_kill(c);
        if (r < 0)
                log_debug("Opening files as user %u failed: %s", (unsigned) c->uid, strempty(error));
        c->done(c, r, ours, error, c->userdata);
}

static int on_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        OpenerCall *c = userdata;
        _cleanup_free_ char *error = NULL;

        for (;;) {
                int fds[OPENER_FDS_MAX];
                size_t n_fds;
                ssize_t n = opener_receive_packet(fd, c->text, OPENER_PACKET_MAX, fds, &n_fds, MSG_DONTWAIT);
                int r;

                if (n == -EAGAIN)
                        return 0;
                /* ECONNRESET: the socket went with the request unread (the server that had it
                 * was killed before it forked for it). */
                if (n == 0 || n == -ECONNRESET) {
                        opener_answer(c, -EPROTO, false, "blockjobd-opener ended without an answer");
                        return 0;
                }
                if (n < 0) {
                        r = error_message(&error, (int) n, "Could not read blockjobd-opener's answer: %m");
                        opener_answer(c, r, IN_SET(r, -EMFILE, -ENFILE, -ENOMEM), error);
                        return 0;
                }
                /* First, from the server's child that answers: who it is. Sent while it is still
                 * root, before it becomes the caller. */
                if (strcmp(c->text, "pid") == 0 && n_fds == 1 && !c->heard && is_pidfd(fds[0])) {
                        c->pidfd = fds[0];
                        c->heard = true;
                        continue;
                }
                c->heard = true;
                r = take_packet(c->text, fds, n_fds, c->uid, c->resume_name, c->files, &error);
                /* An error it sent is the opener's; one it did not send is ours. */
                bool ours = r == -ENOMEM && !error;
                if (r == -EPROTO && !error)
                        r = error_message(&error, r, "blockjobd-opener answered what it was not asked");
                if (r == -ENOMEM && !error)
                        r = error_message(&error, r, "Out of memory");
                if (r < 0) {
                        opener_answer(c, r, ours, error);
                        return 0;
                }
                if (r > 0) {
                        opener_answer(c, 0, false, NULL);
                        return 0;
                }
        }
}

int opener_call_start(sd_event *event, const OpenerRequest *req, JobFiles *files, OpenerDone done, void *userdata,
                      OpenerCall **ret) {
        _cleanup_(opener_call_freep) OpenerCall *c = NULL;
        _cleanup_close_ int their_end = -EBADF;
        int sv[2], r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (OpenerCall) {
                .event = sd_event_ref(event),
                .uid = req->uid,
                .files = files,
                .done = done,
                .userdata = userdata,
                .pidfd = -EBADF,
                .socket_fd = -EBADF,
        };
        c->text = malloc(OPENER_PACKET_MAX);
        if (!c->text)
                return -ENOMEM;
        if (req->target_path && req->target_resume_name) {
                if (!valid_entry_name(req->target_resume_name))
                        return -EINVAL;
                c->resume_name = strdup(req->target_resume_name);
                if (!c->resume_name)
                        return -ENOMEM;
        }

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return negative_errno();
        c->socket_fd = sv[0];
        their_end = sv[1];

        char request[OPENER_REQUEST_MAX];
        size_t len;
        r = build_request(req, request, sizeof(request), &len);
        if (r < 0)
                return r;
        /* Queued before the server gets the socket: the socket's buffer holds it. */
        if (send(c->socket_fd, request, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t) len)
                return negative_errno();

        r = server_send(event, req, their_end, &c->server_id);
        if (r < 0)
                return r;
        (void) sd_event_now(event, CLOCK_MONOTONIC, &c->sent);
        their_end = safe_close(their_end);

        r = sd_event_add_io(event, &c->io, c->socket_fd, EPOLLIN, on_readable, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->io, "opener");

        *ret = TAKE_PTR(c);
        return 0;
}
