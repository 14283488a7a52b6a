/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control path of blockjobd, measured by a client on its bus (tests/bench/jobs builds and runs
 * it; it is not installed and not a test). It talks to the daemon that owns org.blockjobd.Jobs1 on
 * the system bus ($DBUS_SYSTEM_BUS_ADDRESS: the bench's private one), and reads that daemon's
 * /proc/PID files, so it must run as the daemon's user (root).
 *
 *   1. a verb round trip (Pause, Resume, SetSpeed, Properties.Get of Status) against
 *      org.freedesktop.DBus.Peer.Ping to the same daemon, calls interleaved, with 1 job;
 *   2. N jobs made: backups of one small raw SOURCE to N distinct targets in TARGET-DIR, each
 *      at 1 byte/s (so that it stays alive) and paused once it exists; the cost of a creation
 *      for each group of jobs (a thousand, or a fifth of N when N < 2000);
 *   3. the round trip again with N jobs;
 *   4. ListJobs and GetManagedObjects; VmRSS and open descriptors before and after, per job;
 *      the daemon's CPU over a while with every job paused, then with 1,000 of them resumed at
 *      1 byte/s; its peak RSS (VmHWM).
 *
 * The daemon's descriptors are bounded (RLIMIT_NOFILE): when a creation fails (LimitExceeded,
 * or anything else) or the creations take longer than --budget, no more are made; the table
 * says how many jobs exist and why, and the measurements go on with those.
 *
 * Progress goes to stderr, the table to stdout.
 */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#define SERVICE "org.blockjobd.Jobs1"
#define MANAGER_PATH "/org/blockjobd/Jobs1"
#define MANAGER_IFACE "org.blockjobd.Jobs1.Manager"
#define JOB_IFACE "org.blockjobd.Jobs1.Job"
#define LIMIT_EXCEEDED "org.blockjobd.Jobs1.Error.LimitExceeded"

#define _cleanup_(f) __attribute__((cleanup(f)))

static unsigned arg_jobs = 10000;
static unsigned arg_rounds = 1000;
static unsigned arg_busy = 1000;
static unsigned arg_seconds = 10;
static double arg_budget = 600;
static const char *arg_source;
static const char *arg_target_dir;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...) {
        va_list ap;

        fputs("    ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* The median of n values, in µs; sorts them. */
static double median_us(uint64_t *v, size_t n) {
        if (n == 0)
                return 0;
        qsort(v, n, sizeof(*v), cmp_u64);
        return (n % 2 ? (double) v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0) / 1000.0;
}

/* ---- the daemon's /proc files ----------------------------------------------------------------- */

static long proc_status_kib(pid_t pid, const char *field) {
        char path[64], line[256];
        size_t l = strlen(field);
        long v = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, l) == 0 && line[l] == ':') {
                        v = strtol(line + l + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return v;
}

static long proc_fd_count(pid_t pid) {
        char path[64];
        struct dirent *de;
        long n = 0;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        d = opendir(path);
        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

/* utime + stime of the whole process (all its threads), in clock ticks. */
static long long proc_cpu_ticks(pid_t pid) {
        char path[64], buf[4096];
        unsigned long long utime, stime;
        const char *p;
        size_t n;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        /* The command name may hold spaces and parentheses: the fields start after the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -1;
        /* After ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
        if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
                return -1;
        return (long long) (utime + stime);
}

/* The daemon's CPU use over arg_seconds, in % of one core. */
static double cpu_percent(pid_t pid) {
        long long t0, t1;
        uint64_t a, b;

        t0 = proc_cpu_ticks(pid);
        a = now_ns();
        sleep(arg_seconds);
        t1 = proc_cpu_ticks(pid);
        b = now_ns();
        if (t0 < 0 || t1 < 0)
                return -1;
        return 100.0 * (double) (t1 - t0) / (double) sysconf(_SC_CLK_TCK) / ((double) (b - a) / 1e9);
}

/* ---- calls ------------------------------------------------------------------------------------ */

static int ping(sd_bus *bus, sd_bus_error *error) {
        return sd_bus_call_method(bus, SERVICE, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", error, NULL, NULL);
}

static int job_verb(sd_bus *bus, const char *path, const char *verb, sd_bus_error *error) {
        return sd_bus_call_method(bus, SERVICE, path, JOB_IFACE, verb, error, NULL, NULL);
}

static int set_speed(sd_bus *bus, const char *path, uint64_t speed, sd_bus_error *error) {
        return sd_bus_call_method(bus, SERVICE, path, JOB_IFACE, "SetSpeed", error, NULL, "t", speed);
}

static int get_status(sd_bus *bus, const char *path, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s;
        int r;

        r = sd_bus_get_property(bus, SERVICE, path, JOB_IFACE, "Status", error, &reply, "s");
        if (r < 0)
                return r;
        return sd_bus_message_read(reply, "s", &s);
}

static int create_job(sd_bus *bus, unsigned i, char **ret_path, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        char id[32], target[4096];
        const char *path;
        int r;

        snprintf(id, sizeof(id), "scale%u", i);
        snprintf(target, sizeof(target), "%s/t%u.raw", arg_target_dir, i);
        r = sd_bus_message_new_method_call(bus, &m, SERVICE, MANAGER_PATH, MANAGER_IFACE, "Backup");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", arg_source, target);
        if (r < 0)
                return r;
        /* 1 byte/s: a job does one step, then waits for its quota for longer than the bench runs. */
        r = sd_bus_message_append(m, "a{sv}", 2, "job-id", "s", id, "speed", "t", (uint64_t) 1);
        if (r < 0)
                return r;
        r = sd_bus_call(bus, m, 0, error, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        *ret_path = strdup(path);
        return *ret_path ? 0 : -ENOMEM;
}

static const char *error_text(const sd_bus_error *e, int r) {
        static char buf[1024];

        if (sd_bus_error_is_set(e))
                snprintf(buf, sizeof(buf), "%s: %s", e->name, e->message ? e->message : "");
        else
                snprintf(buf, sizeof(buf), "%s", strerror(-r));
        return buf;
}

/* ---- round trips ------------------------------------------------------------------------------ */

enum { RT_PING, RT_PAUSE, RT_RESUME, RT_PAIR, RT_SETSPEED, RT_GET, _RT_MAX };
static const char *const rt_names[_RT_MAX] = {
        [RT_PING] = "Peer.Ping",
        [RT_PAUSE] = "Pause",
        [RT_RESUME] = "Resume",
        [RT_PAIR] = "Pause+Resume (per verb)",
        [RT_SETSPEED] = "SetSpeed",
        [RT_GET] = "Get Status",
};

typedef struct RoundTrips {
        double median_us[_RT_MAX];
        unsigned rounds;
        char error[1024];
} RoundTrips;

/* Each round: Ping, Pause, Ping, Resume, Ping, SetSpeed, Ping, Get: the calls interleaved so that a
 * noisy moment of the machine hits them alike. The job must be running (not paused by the user)
 * and is so again after each round. */
static void round_trips(sd_bus *bus, const char *path, RoundTrips *ret) {
        uint64_t *v[_RT_MAX];
        unsigned n = 0;

        memset(ret, 0, sizeof(*ret));
        for (int k = 0; k < _RT_MAX; k++) {
                v[k] = calloc((size_t) arg_rounds * 4, sizeof(uint64_t));
                if (!v[k]) {
                        snprintf(ret->error, sizeof(ret->error), "out of memory");
                        goto finish;
                }
        }

        for (unsigned i = 0; i < arg_rounds; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                uint64_t t[9];
                int r;

                t[0] = now_ns();
                r = ping(bus, &e);
                t[1] = now_ns();
                if (r >= 0)
                        r = job_verb(bus, path, "Pause", &e);
                t[2] = now_ns();
                if (r >= 0)
                        r = ping(bus, &e);
                t[3] = now_ns();
                if (r >= 0)
                        r = job_verb(bus, path, "Resume", &e);
                t[4] = now_ns();
                if (r >= 0)
                        r = ping(bus, &e);
                t[5] = now_ns();
                /* A real change of speed, so that its PropertiesChanged goes out as it would. */
                if (r >= 0)
                        r = set_speed(bus, path, 1 + (i & 1), &e);
                t[6] = now_ns();
                if (r >= 0)
                        r = ping(bus, &e);
                t[7] = now_ns();
                if (r >= 0)
                        r = get_status(bus, path, &e);
                t[8] = now_ns();
                if (r < 0) {
                        snprintf(ret->error, sizeof(ret->error), "round %u: %s", i, error_text(&e, r));
                        break;
                }
                v[RT_PING][4 * n] = t[1] - t[0];
                v[RT_PING][4 * n + 1] = t[3] - t[2];
                v[RT_PING][4 * n + 2] = t[5] - t[4];
                v[RT_PING][4 * n + 3] = t[7] - t[6];
                v[RT_PAUSE][n] = t[2] - t[1];
                v[RT_RESUME][n] = t[4] - t[3];
                v[RT_PAIR][n] = (t[2] - t[1] + t[4] - t[3]) / 2;
                v[RT_SETSPEED][n] = t[6] - t[5];
                v[RT_GET][n] = t[8] - t[7];
                n++;
        }
        ret->rounds = n;
        ret->median_us[RT_PING] = median_us(v[RT_PING], (size_t) n * 4);
        for (int k = RT_PAUSE; k < _RT_MAX; k++)
                ret->median_us[k] = median_us(v[k], n);
        (void) set_speed(bus, path, 1, NULL);
finish:
        for (int k = 0; k < _RT_MAX; k++)
                free(v[k]);
}

/* ---- main ------------------------------------------------------------------------------------- */

static void help(void) {
        printf("scale [OPTIONS...] --source=FILE --target-dir=DIR\n\n"
               "Measures blockjobd's control path with many jobs (see the comment at the top).\n\n"
               "  --jobs=N          jobs to make (default 10000)\n"
               "  --rounds=N        round trips per verb and job count (default 1000)\n"
               "  --busy=N          jobs resumed at 1 byte/s for the last CPU measurement (default 1000)\n"
               "  --seconds=S       length of each CPU measurement (default 10)\n"
               "  --budget=S        stop making jobs after this long (default 600)\n"
               "  --source=FILE     the small raw image every job copies\n"
               "  --target-dir=DIR  where the targets go (they stay unnamed while the jobs live)\n");
}

static int parse_argv(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "jobs", required_argument, NULL, 'j' },
                { "rounds", required_argument, NULL, 'r' },
                { "busy", required_argument, NULL, 'b' },
                { "seconds", required_argument, NULL, 's' },
                { "budget", required_argument, NULL, 'B' },
                { "source", required_argument, NULL, 'S' },
                { "target-dir", required_argument, NULL, 'T' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        exit(EXIT_SUCCESS);
                case 'j':
                        arg_jobs = strtoul(optarg, NULL, 10);
                        break;
                case 'r':
                        arg_rounds = strtoul(optarg, NULL, 10);
                        break;
                case 'b':
                        arg_busy = strtoul(optarg, NULL, 10);
                        break;
                case 's':
                        arg_seconds = strtoul(optarg, NULL, 10);
                        break;
                case 'B':
                        arg_budget = strtod(optarg, NULL);
                        break;
                case 'S':
                        arg_source = optarg;
                        break;
                case 'T':
                        arg_target_dir = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        if (!arg_source || !arg_target_dir || arg_jobs < 1 || arg_rounds < 1) {
                fprintf(stderr, "scale: --source=, --target-dir= are needed, --jobs= and --rounds= at least 1\n");
                return -EINVAL;
        }
        return 0;
}

static void print_round_trips(const char *title, const RoundTrips *rt) {
        printf("%s (%u rounds, median µs per call):\n", title, rt->rounds);
        if (rt->rounds == 0) {
                printf("    not measured: %s\n", rt->error);
                return;
        }
        for (int k = 0; k < _RT_MAX; k++)
                printf("    %-26s %9.1f   %5.2f x Ping\n", rt_names[k], rt->median_us[k],
                       rt->median_us[k] / rt->median_us[RT_PING]);
        if (rt->error[0])
                printf("    stopped early: %s\n", rt->error);
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        RoundTrips rt1, rtn;
        char stop_reason[1100] = "";
        char **paths;
        unsigned created = 0, group, ngroups, paused = 0, resumed = 0;
        uint64_t *group_create_ns, *group_pause_ns, start;
        long rss0, rss1, fd0, fd1, hwm;
        double cpu_idle, cpu_busy;
        uint32_t pid;
        int r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (parse_argv(argc, argv) < 0)
                return EXIT_FAILURE;

        r = sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "scale: cannot connect to the system bus: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        /* Activates the daemon if it is not running yet. */
        r = ping(bus, &e);
        if (r < 0) {
                fprintf(stderr, "scale: Ping of %s failed: %s\n", SERVICE, error_text(&e, r));
                return EXIT_FAILURE;
        }
        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetConnectionUnixProcessID", &e, &reply, "s", SERVICE);
        if (r >= 0)
                r = sd_bus_message_read(reply, "u", &pid);
        if (r < 0) {
                fprintf(stderr, "scale: cannot find the daemon's pid: %s\n", error_text(&e, r));
                return EXIT_FAILURE;
        }

        group = arg_jobs >= 2000 ? 1000 : (arg_jobs >= 5 ? arg_jobs / 5 : 1);
        ngroups = (arg_jobs + group - 1) / group;
        paths = calloc(arg_jobs, sizeof(char *));
        group_create_ns = calloc(ngroups, sizeof(uint64_t));
        group_pause_ns = calloc(ngroups, sizeof(uint64_t));
        if (!paths || !group_create_ns || !group_pause_ns)
                return EXIT_FAILURE;

        rss0 = proc_status_kib(pid, "VmRSS");
        fd0 = proc_fd_count(pid);

        /* Job 0 stays running (at 1 byte/s): it is the one the round trips work on. */
        start = now_ns();
        r = create_job(bus, 0, &paths[0], &e);
        if (r < 0) {
                fprintf(stderr, "scale: the first job could not be made: %s\n", error_text(&e, r));
                return EXIT_FAILURE;
        }
        group_create_ns[0] += now_ns() - start;
        created = 1;

        progress("round trips with 1 job (%u rounds)", arg_rounds);
        round_trips(bus, paths[0], &rt1);

        progress("making %u jobs", arg_jobs);
        start = now_ns();
        for (unsigned i = 1; i < arg_jobs; i++) {
                uint64_t a, b, c;

                sd_bus_error_free(&e);
                a = now_ns();
                r = create_job(bus, i, &paths[i], &e);
                b = now_ns();
                if (r < 0) {
                        snprintf(stop_reason, sizeof(stop_reason), "job %u: %s", i + 1, error_text(&e, r));
                        if (!sd_bus_error_has_name(&e, LIMIT_EXCEEDED))
                                progress("unexpected error: %s", stop_reason);
                        break;
                }
                created++;
                r = job_verb(bus, paths[i], "Pause", &e);
                c = now_ns();
                if (r < 0)
                        progress("Pause of job %u failed: %s", i + 1, error_text(&e, r));
                else
                        paused++;
                group_create_ns[i / group] += b - a;
                group_pause_ns[i / group] += c - b;
                if ((i + 1) % group == 0)
                        progress("%u jobs, %.2f ms per creation in the last %u", i + 1,
                                 group_create_ns[i / group] / 1e6 / group, group);
                if ((double) (c - start) / 1e9 > arg_budget && i + 1 < arg_jobs) {
                        snprintf(stop_reason, sizeof(stop_reason), "the creations took more than --budget=%.0f s",
                                 arg_budget);
                        break;
                }
        }
        if (stop_reason[0])
                progress("stopped at %u jobs: %s", created, stop_reason);

        progress("round trips with %u jobs", created);
        round_trips(bus, paths[0], &rtn);

        sd_bus_error_free(&e);
        r = job_verb(bus, paths[0], "Pause", &e);
        if (r < 0)
                progress("Pause of job 1 failed: %s", error_text(&e, r));
        else
                paused++;
        /* Let the last pauses land before memory and descriptors are counted. */
        sleep(1);
        rss1 = proc_status_kib(pid, "VmRSS");
        fd1 = proc_fd_count(pid);

        /* Listing calls: a few of each, min and median. */
        uint64_t list_ns[5], gmo_ns[3];
        size_t list_entries = 0, gmo_entries = 0;
        char list_error[1100] = "", gmo_error[1100] = "";

        progress("ListJobs x %zu, GetManagedObjects x %zu", sizeof(list_ns) / sizeof(list_ns[0]),
                 sizeof(gmo_ns) / sizeof(gmo_ns[0]));
        for (size_t k = 0; k < sizeof(list_ns) / sizeof(list_ns[0]); k++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                uint64_t a = now_ns();

                sd_bus_error_free(&e);
                r = sd_bus_call_method(bus, SERVICE, MANAGER_PATH, MANAGER_IFACE, "ListJobs", &e, &m, NULL);
                list_ns[k] = now_ns() - a;
                if (r < 0) {
                        snprintf(list_error, sizeof(list_error), "%s", error_text(&e, r));
                        break;
                }
                if (k == 0) {
                        r = sd_bus_message_enter_container(m, 'a', "(ossstts)");
                        while (r >= 0 && sd_bus_message_at_end(m, false) == 0 &&
                               sd_bus_message_skip(m, "(ossstts)") >= 0)
                                list_entries++;
                }
        }
        for (size_t k = 0; k < sizeof(gmo_ns) / sizeof(gmo_ns[0]); k++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                uint64_t a = now_ns();

                sd_bus_error_free(&e);
                r = sd_bus_call_method(bus, SERVICE, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                       "GetManagedObjects", &e, &m, NULL);
                gmo_ns[k] = now_ns() - a;
                if (r < 0) {
                        snprintf(gmo_error, sizeof(gmo_error), "%s", error_text(&e, r));
                        break;
                }
                if (k == 0) {
                        r = sd_bus_message_enter_container(m, 'a', "{oa{sa{sv}}}");
                        while (r >= 0 && sd_bus_message_at_end(m, false) == 0 &&
                               sd_bus_message_skip(m, "{oa{sa{sv}}}") >= 0)
                                gmo_entries++;
                }
        }

        progress("daemon CPU over %u s, all jobs paused", arg_seconds);
        cpu_idle = cpu_percent(pid);

        for (unsigned i = 0; i < created && resumed < arg_busy; i++) {
                sd_bus_error_free(&e);
                r = job_verb(bus, paths[i], "Resume", &e);
                if (r < 0) {
                        progress("Resume of job %u failed: %s", i + 1, error_text(&e, r));
                        break;
                }
                resumed++;
        }
        progress("daemon CPU over %u s, %u jobs at 1 byte/s", arg_seconds, resumed);
        cpu_busy = cpu_percent(pid);
        hwm = proc_status_kib(pid, "VmHWM");

        /* ---- the table ---- */
        printf("control path: blockjobd pid %" PRIu32 ", %u of %u jobs made, %u paused", pid, created, arg_jobs,
               paused);
        if (stop_reason[0])
                printf(" (stopped: %s)", stop_reason);
        printf("\n");
        print_round_trips("round trip, 1 job", &rt1);
        char title[64];
        snprintf(title, sizeof(title), "round trip, %u jobs", created);
        print_round_trips(title, &rtn);

        printf("creation (Backup call; Pause after it), ms per job:\n");
        for (unsigned g = 0; g < ngroups && g * group < created; g++) {
                unsigned lo = g * group, hi = lo + group < created ? lo + group : created;
                printf("    jobs %6u-%-6u  %8.3f   (Pause %6.3f)\n", lo + 1, hi, group_create_ns[g] / 1e6 / (hi - lo),
                       g == 0 ? group_pause_ns[g] / 1e6 / (hi - lo > 1 ? hi - lo - 1 : 1)
                              : group_pause_ns[g] / 1e6 / (hi - lo));
        }
        {
                unsigned last = (created - 1) / group, nlast = created - last * group;
                /* Per job, so a last group cut short by a stop compares as well. */
                if (last > 0)
                        printf("    last group / first group, per job: %.2f\n",
                               (group_create_ns[last] / (double) nlast) / (group_create_ns[0] / (double) group));
        }

        qsort(list_ns, sizeof(list_ns) / sizeof(list_ns[0]), sizeof(uint64_t), cmp_u64);
        qsort(gmo_ns, sizeof(gmo_ns) / sizeof(gmo_ns[0]), sizeof(uint64_t), cmp_u64);
        if (list_error[0])
                printf("ListJobs: failed: %s\n", list_error);
        else
                printf("ListJobs:          min %9.3f ms, median %9.3f ms  (%zu jobs listed)\n", list_ns[0] / 1e6,
                       list_ns[2] / 1e6, list_entries);
        if (gmo_error[0])
                printf("GetManagedObjects: failed: %s\n", gmo_error);
        else
                printf("GetManagedObjects: min %9.3f ms, median %9.3f ms  (%zu objects)\n", gmo_ns[0] / 1e6,
                       gmo_ns[1] / 1e6, gmo_entries);

        printf("memory: VmRSS %.1f MiB before, %.1f MiB after: %.2f KiB per job\n", rss0 / 1024.0, rss1 / 1024.0,
               (double) (rss1 - rss0) / created);
        printf("descriptors: %ld before, %ld after: %.2f per job\n", fd0, fd1, (double) (fd1 - fd0) / created);
        printf("daemon CPU over %u s: %.2f %% of a core with %u jobs paused, %.2f %% with %u at 1 byte/s\n",
               arg_seconds, cpu_idle, paused, cpu_busy, resumed);
        printf("daemon peak RSS (VmHWM): %.1f MiB\n", hwm / 1024.0);

        for (unsigned i = 0; i < created; i++)
                free(paths[i]);
        free(paths);
        free(group_create_ns);
        free(group_pause_ns);
        return EXIT_SUCCESS;
}
