/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobd: runs QEMU's block jobs on disk images, as a D-Bus system service. */

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "macro.h"
#include "manager.h"
#include "spawn-util.h"

static unsigned arg_threads = 0;
static uint64_t arg_idle_timeout_usec = IDLE_TIMEOUT_DEFAULT_USEC;
static unsigned arg_max_jobs_per_user = JOB_FACTORY_MAX_JOBS_PER_USER;
static char *arg_state_dir = NULL;

static char *mfree_str(char *s) {
        free(s);
        return NULL;
}

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "Runs backup, mirror, commit and stream jobs on disk images, on the system bus\n"
               "as " BUS_NAME ". Normally started by D-Bus activation.\n\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n"
               "     --idle-timeout=SECS   Exit after this long without jobs (default 30, 0: never)\n"
               "     --threads=N           Worker threads for job I/O (default %u, at most %u)\n"
               "     --max-jobs-per-user=N Jobs a user other than root may have (default %u, 0: no limit)\n"
               "     --state-dir=DIR       Keep job records in DIR/jobs (default: $STATE_DIRECTORY;\n"
               "                           without either, jobs do not survive a restart)\n"
               "     --log-level=LEVEL     debug, info, notice, warning or err (default info)\n",
               program_invocation_short_name, WORKER_POOL_THREADS_DEFAULT, WORKER_POOL_THREADS_MAX,
               JOB_FACTORY_MAX_JOBS_PER_USER);
}

static int parse_unsigned(const char *s, unsigned long long max, unsigned long long *ret) {
        char *end;

        errno = 0;
        if (!s || !*s || *s == '-')
                return -EINVAL;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

static int parse_log_level(const char *s) {
        static const char *const names[] = {
                [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (names[i] && strcasecmp(names[i], s) == 0)
                        return (int) i;
        return -EINVAL;
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_IDLE_TIMEOUT, ARG_THREADS, ARG_LOG_LEVEL, ARG_MAX_JOBS_PER_USER, ARG_STATE_DIR };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
                { "threads",      required_argument, NULL, ARG_THREADS },
                { "log-level",    required_argument, NULL, ARG_LOG_LEVEL },
                { "max-jobs-per-user", required_argument, NULL, ARG_MAX_JOBS_PER_USER },
                { "state-dir",    required_argument, NULL, ARG_STATE_DIR },
                {}
        };
        unsigned long long v;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        puts(PROJECT_VERSION);
                        return 0;
                case ARG_IDLE_TIMEOUT:
                        if (parse_unsigned(optarg, UINT64_MAX / USEC_PER_SEC, &v) < 0) {
                                log_error("Invalid --idle-timeout=: %s", optarg);
                                return -EINVAL;
                        }
                        arg_idle_timeout_usec = v * USEC_PER_SEC;
                        break;
                case ARG_THREADS:
                        if (parse_unsigned(optarg, WORKER_POOL_THREADS_MAX, &v) < 0 || v == 0) {
                                log_error("Invalid --threads=: %s (1 to %u)", optarg, WORKER_POOL_THREADS_MAX);
                                return -EINVAL;
                        }
                        arg_threads = (unsigned) v;
                        break;
                case ARG_MAX_JOBS_PER_USER:
                        if (parse_unsigned(optarg, UINT32_MAX, &v) < 0) {
                                log_error("Invalid --max-jobs-per-user=: %s", optarg);
                                return -EINVAL;
                        }
                        arg_max_jobs_per_user = (unsigned) v;
                        break;
                case ARG_STATE_DIR:
                        if (optarg[0] != '/') {
                                log_error("Invalid --state-dir=: %s (an absolute path)", optarg);
                                return -EINVAL;
                        }
                        free(arg_state_dir);
                        arg_state_dir = strdup(optarg);
                        if (!arg_state_dir)
                                return log_oom();
                        break;
                case ARG_LOG_LEVEL:
                        r = parse_log_level(optarg);
                        if (r < 0) {
                                log_error("Invalid --log-level=: %s", optarg);
                                return r;
                        }
                        log_set_max_level(r);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc) {
                log_error("%s takes no arguments.", program_invocation_short_name);
                return -EINVAL;
        }

        /* systemd's StateDirectory=: a colon-separated list, of which the unit gives one. */
        const char *e = getenv("STATE_DIRECTORY");
        if (!arg_state_dir && e && *e) {
                arg_state_dir = strndup(e, strcspn(e, ":"));
                if (!arg_state_dir)
                        return log_oom();
                if (arg_state_dir[0] != '/') {
                        log_error("Invalid $STATE_DIRECTORY: %s (an absolute path)", e);
                        return -EINVAL;
                }
        }
        return 1;
}

/* As systemd's own daemons do: the soft limit on descriptors (1024, FD_SETSIZE) only protects
 * programs that use select(), which blockjobd does not; the hard limit is what the administrator
 * gives the service (LimitNOFILE= in the unit), and every job holds descriptors for its images.
 * Without it the daemon still runs, with fewer jobs: a warning, not a failure. */
static void raise_nofile_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
                log_warning_errno(errno, "Failed to read the limit on open files: %m");
                return;
        }
        if (rl.rlim_cur >= rl.rlim_max) {
                log_debug("Limit on open files: %llu.", (unsigned long long) rl.rlim_cur);
                return;
        }

        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                log_warning_errno(errno, "Failed to raise the limit on open files from %llu to %llu, keeping it: %m",
                                  (unsigned long long) old, (unsigned long long) rl.rlim_max);
                return;
        }
        log_debug("Raised the limit on open files from %llu to %llu.", (unsigned long long) old,
                  (unsigned long long) rl.rlim_max);
}

int main(int argc, char *argv[]) {
        Manager *m = NULL;
        sigset_t mask;
        int r;

        /* Before anything is logged: to the journal, with fields, if stderr is the journal. */
        log_open(sd_journal_sendv);

        r = parse_argv(argc, argv);
        if (r <= 0) {
                free(arg_state_dir);
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }

        raise_nofile_limit();

        /* The spawn slot is best taken while the lowest free descriptors are low (before any job
         * holds one): see spawn-util.h. Without it, the first spawn tries again. */
        r = spawn_slot_reserve();
        if (r < 0)
                log_debug_errno(r, "Failed to reserve a descriptor for spawning, trying again later: %m");

        /* sd-event handles these through a signalfd, which needs them blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = manager_new(arg_threads, arg_idle_timeout_usec, arg_state_dir, &m);
        arg_state_dir = mfree_str(arg_state_dir);
        if (r < 0) {
                log_error_errno(r, "Failed to set up: %m");
                return EXIT_FAILURE;
        }
        job_factory_limits(m->factory)->max_jobs_per_user = arg_max_jobs_per_user;

        r = manager_connect(m);
        if (r >= 0)
                r = manager_run(m);

        manager_free(m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
