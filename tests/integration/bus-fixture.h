/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A private "system" bus per test (its own dbus-daemon, from a config written into the test's
 * temporary directory), the real blockjobd on it, started directly or by D-Bus activation, and
 * a GDBus client that records every StatusChanged as "<id>:<status>". Teardown stops the daemon
 * with SIGTERM and requires a clean exit (status 0, which in the sanitizer build also means no
 * leak). Every wait is bounded. */

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <stdbool.h>
#include <sys/types.h>

#define BUS_NAME "org.blockjobd.Jobs1"
#define MANAGER_PATH "/org/blockjobd/Jobs1"
#define MANAGER_IFACE "org.blockjobd.Jobs1.Manager"
#define JOB_IFACE "org.blockjobd.Jobs1.Job"

typedef struct BusFixture {
        char *dir;                      /* temporary directory: bus config, images, logs */
        char *address;
        GSubprocess *bus;
        GSubprocess *daemon;            /* NULL when activated by the bus */
        char *daemon_log;
        GDBusConnection *conn;

        GString *statuses;              /* "<id>:<status> " for every StatusChanged */
        GString *io_errors;             /* "<operation>:<action> " for every IoError */
        GString *io_messages;           /* and its message, one per line */
        char *fault_rules;              /* $BLOCKJOBD_FAULT_RULES of the daemon (tests/fault/) */
        const char *policy_file;        /* set before starting the bus: a system bus's default
                                         * policy plus this file, instead of allowing everything */
        GArray *progress_times;         /* gint64 µs of each PropertiesChanged with CurrentProgress */
        unsigned n_added, n_removed;    /* InterfacesAdded / InterfacesRemoved for jobs */
        guint subscriptions[5];
} BusFixture;

/* The temporary directory and the recorders, nothing started: for setups of their own. */
void bus_fixture_init(BusFixture *f);
/* The bus only; 'activation_args' non-NULL installs an activation file for blockjobd with them. */
void bus_fixture_start_bus(BusFixture *f, const char *activation_args);
/* The daemon, started directly with these arguments, and waits until it owns its name. */
void bus_fixture_start_daemon(BusFixture *f, const char *args);

void bus_fixture_setup(BusFixture *f, gconstpointer data);     /* bus + daemon --idle-timeout=0 */
void bus_fixture_teardown(BusFixture *f, gconstpointer data);

/* A file in the test's directory (g_free it). */
char *bus_fixture_path(BusFixture *f, const char *name);

/* Calls and property reads; an error fails the test, except in bus_call_error(). */
GVariant *bus_call(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                   const char *reply_type);
/* Expects the call to fail with this D-Bus error name; returns the message (g_free it). */
char *bus_call_error(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                     const char *expected_error);
GVariant *bus_get_property(BusFixture *f, const char *path, const char *iface, const char *name);
char *bus_get_string(BusFixture *f, const char *path, const char *name);       /* a Job property */
guint64 bus_get_uint64(BusFixture *f, const char *path, const char *name);

/* Backup(source, target, options) → the job's object path (g_free it). */
char *bus_backup(BusFixture *f, const char *source, const char *target, GVariant *options);
/* Any of Backup, Mirror (with a target), Commit, Stream (target NULL); options NULL for none. */
char *bus_start(BusFixture *f, const char *method, const char *source, const char *target, GVariant *options);
/* Transaction(actions, {completion-mode: grouped}) → the jobs' object paths (g_strfreev them). */
char **bus_transaction_grouped(BusFixture *f, GVariant *actions);
/* 'options' (an a{sv}, sunk and unreffed) with one more entry; floating. */
GVariant *bus_opts_add(GVariant *options, const char *key, GVariant *value);
/* Options a{sv} from "key", GVariant * pairs, NULL-terminated (floating). */
GVariant *bus_opts(const char *key, ...) G_GNUC_NULL_TERMINATED;
/* The object path of the one job with this id, found with ListJobs() (ids are unique per owner:
 * other users' jobs live at .../job/<id>_u<uid>). Fails the test if none or several have it. */
char *bus_job_path_for_id(BusFixture *f, const char *id);
/* A job method without arguments; an error fails the test. */
void bus_job_call(BusFixture *f, const char *path, const char *method);

/* Iterate the main loop until the condition holds (bounded by 30 s). */
void bus_wait_for_status(BusFixture *f, const char *id, const char *status);
/* The same, for a status recorded after 'mark' (a length of f->statuses taken before acting). */
void bus_wait_for_status_since(BusFixture *f, gsize mark, const char *id, const char *status);
void bus_wait_for_name(BusFixture *f, bool owned);
/* Ends the daemon started by bus_fixture_start_daemon() and waits until its name is gone: with
 * SIGKILL (it must die of it), or with SIGTERM (it must exit with status 0). */
void bus_fixture_kill_daemon(BusFixture *f);
void bus_fixture_term_daemon(BusFixture *f);
/* Until the file at 'path' holds 'text' (a record written on a worker), bounded (60 s). */
void bus_wait_for_file_text(BusFixture *f, const char *path, const char *text);
/* Until nothing is at 'path' (a removal on a worker), bounded (30 s). */
void bus_wait_for_file_gone(BusFixture *f, const char *path);
bool bus_name_has_owner(BusFixture *f);
void bus_iterate_for(BusFixture *f, guint64 usec);

/* ---- unprivileged callers ----
 * A test program that calls bus_client_main() first thing in main() can run itself again as
 * nobody (setpriv, which needs root) to act as an unprivileged client of the fixture's bus:
 *
 *   own                                  RequestName(org.blockjobd.Jobs1)
 *   call PATH INTERFACE METHOD ARGS      a method call; ARGS in GVariant text format, or "()"
 *
 * optionally after --interactive (the call carries ALLOW_INTERACTIVE_AUTHORIZATION) and
 * descriptors to pass, opened by nobody, which ARGS name as `handle 0`, `handle 1`, ... in order:
 * --fd=r:PATH (read-only), --fd=rw:PATH (read-write), --fd=new:PATH (created, read-write). The
 * output is "ok <reply>" or "<D-Bus error name>: <message>". */
int bus_client_main(int argc, char *argv[]);
/* Runs the client as nobody; NULL-terminated arguments; returns its output (g_free it). The
 * fixture's directory is made reachable for nobody. The client dies with the test (setpriv
 * --pdeathsig). */
char *bus_as_nobody(BusFixture *f, const char *first, ...) G_GNUC_NULL_TERMINATED;
/* The same in two halves, for a call that is to wait while the test goes on. */
GSubprocess *bus_as_nobody_start(BusFixture *f, const char *first, ...) G_GNUC_NULL_TERMINATED;
char *bus_as_nobody_finish(GSubprocess *p);
/* Does the output start with this (an error name, or "ok")? Fails the test with the output if not. */
void bus_assert_answer(const char *output, const char *expected_prefix);
/* Also, instead of a call:
 *
 *   toggle PATH OFFSET SECONDS          the 4 KiB block at OFFSET of the file becomes data, then a
 *                                       hole (FALLOC_FL_PUNCH_HOLE), and so on, for SECONDS;
 *                                       output "ok toggled N times"
 *   flip-link PATH A B SECONDS          the symlink PATH points to A, then to B (each time a new
 *                                       symlink renamed over it), and so on, for SECONDS
 *
 * and a descriptor opened --fd=rwa:PATH (read-write, O_APPEND). */
/* Whether unprivileged callers can be had here (root, setpriv); skips the test if not. */
bool bus_can_run_as_nobody(void);

/* Test data: a file of 'size' bytes of pseudo-random data. */
void bus_make_file(const char *path, guint64 size);
/* Replaces the daemon's fault rules (tests/fault/fault-rules.h) with a new file, seen at once. */
void bus_fixture_set_faults(BusFixture *f, const char *format, ...) G_GNUC_PRINTF(2, 3);
void bus_assert_same_file(const char *a, const char *b);

/* ---- the daemon's processes ---- */
pid_t bus_daemon_pid(BusFixture *f);
/* A call (as root) with descriptors; the reply, or NULL and the error. */
GVariant *bus_call_with_fds(BusFixture *f, const char *path, const char *iface, const char *method, GVariant *params,
                            GUnixFDList *fds, GError **error);

/* The pids of 'parent's children (every thread's: a child is listed under the thread that
 * started it). */
GArray *bus_process_children(pid_t parent);

/* SIGSTOPs every child of 'parent', or child of a child (the daemon's opener servers fork the
 * processes that become the caller), that runs as user 'uid' the program named 'exe_name' (the
 * base name of its /proc/PID/exe), as soon as it appears, until finished: a thread that looks
 * every 0.1 ms.
 * Finishing resumes (SIGCONT) those that are still there and returns how many were stopped. One
 * stopper at a time. bus_stopper_resume_all() is for a signal handler, should the test die with
 * processes stopped. */
typedef struct BusStopper BusStopper;
BusStopper *bus_stopper_start(pid_t parent, const char *exe_name, uid_t uid);
unsigned bus_stopper_count(BusStopper *s);
unsigned bus_stopper_finish(BusStopper *s);
void bus_stopper_resume_all(void);
