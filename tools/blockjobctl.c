/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobctl: the command-line client of blockjobd, in the spirit of importctl and busctl. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"

#define BUS_NAME "org.blockjobd.Jobs1"
#define MANAGER_PATH "/org/blockjobd/Jobs1"
#define MANAGER_IFACE "org.blockjobd.Jobs1.Manager"
#define JOB_IFACE "org.blockjobd.Jobs1.Job"
#define JOB_PREFIX "/org/blockjobd/Jobs1/job"

#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static const char *arg_address = NULL;
static bool arg_json = false;
static bool arg_follow = false;
static bool arg_complete = false;
static bool arg_until_ready = false;
static const char *arg_job_id = NULL;
static uint64_t arg_speed = 0;
static bool arg_speed_set = false;
static int arg_auto_finalize = -1, arg_auto_dismiss = -1;
static int arg_overwrite = -1;
static const char *arg_sync = NULL, *arg_format = NULL, *arg_top = NULL, *arg_base = NULL, *arg_backing_file = NULL;
static const char *arg_source_format = NULL, *arg_image_format = NULL, *arg_base_format = NULL;
static const char *arg_on_source_error = NULL, *arg_on_target_error = NULL;
static uint32_t arg_granularity = 0;

/* ---- small helpers ------------------------------------------------------------------------- */

static int log_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
static int log_error(const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        fprintf(stderr, "%s: ", program_invocation_short_name);
        vfprintf(stderr, format, ap);
        fputc('\n', stderr);
        va_end(ap);
        return -EINVAL;
}

/* Everything printed that came from the daemon goes through here: error messages, file names
 * and ids may carry what an image or another user put there (see escape.h). A client that cannot
 * allocate a line of text has nothing left to do. */
static char *esc(const char *s) {
        char *e = escape_untrusted(s ?: "");
        if (!e) {
                log_error("Out of memory.");
                exit(EXIT_FAILURE);
        }
        return e;
}

static int bus_fail(const sd_bus_error *error, int r, const char *what) {
        if (sd_bus_error_is_set(error)) {
                _cleanup_free_ char *message = esc(error->message);
                log_error("%s: %s", what, message);
        } else
                log_error("%s: %s", what, strerror(r < 0 ? -r : r));
        return r < 0 ? r : -EIO;
}

/* "1048576", "512K", "4M", "1.5G", "2GiB": bytes, 1024-based suffixes. */
static int parse_size(const char *s, uint64_t *ret) {
        static const struct { const char *suffix; uint64_t factor; } table[] = {
                { "", 1 }, { "B", 1 },
                { "K", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 },
                { "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "T", 1ULL << 40 }, { "TiB", 1ULL << 40 },
        };
        char *end;
        double v;

        if (!s || !*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || !isfinite(v) || v < 0)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                if (strcmp(end, table[i].suffix) == 0) {
                        double bytes = v * (double) table[i].factor;
                        if (bytes >= 18446744073709551615.0)
                                return -ERANGE;
                        *ret = (uint64_t) bytes;
                        return 0;
                }
        return -EINVAL;
}

static void format_bytes(char *buf, size_t n, uint64_t bytes) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        double v = (double) bytes;
        size_t u = 0;

        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, n, "%" PRIu64 " B", bytes);
        else
                snprintf(buf, n, "%.1f %s", v, units[u]);
}

/* A JSON string of the text as the terminal would show it: escaped, so valid UTF-8 without
 * control characters (a script that prints the value prints nothing that drives a terminal). */
static void json_string(FILE *f, const char *s) {
        _cleanup_free_ char *e = esc(s);

        fputc('"', f);
        for (const char *p = e; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fputc('\\', f);
                fputc(*p, f);
        }
        fputc('"', f);
}

static int connect_bus(sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (arg_address) {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, arg_address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        } else
                r = sd_bus_open_system(&bus);
        if (r < 0) {
                sd_bus_unref(bus);
                log_error("Failed to connect to the bus: %s", strerror(-r));
                return r;
        }
        *ret = bus;
        return 0;
}

/* The id in a job's object path: .../job/<escaped id>, and for users other than root
 * .../job/<escaped id>_u<uid> (escaping never writes "_u"). */
static int job_id_from_path(const char *path, char **ret) {
        _cleanup_free_ char *copy = strdup(path);
        char *suffix;

        if (!copy)
                return -ENOMEM;
        suffix = strrchr(copy, '/');
        suffix = suffix ? strstr(suffix, "_u") : NULL;
        if (suffix)
                *suffix = 0;
        return sd_bus_path_decode(copy, JOB_PREFIX, ret);
}

static int no_job(const char *id) {
        _cleanup_free_ char *e = esc(id);
        log_error("No job '%s'.", e);
        return -ENXIO;
}

/* ListJobs(), its reply entered: read "(ossstts)" entries from it. */
static int list_jobs(sd_bus *bus, sd_bus_message **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListJobs", &error, &reply, NULL);
        if (r < 0)
                return bus_fail(&error, r, "Failed to list jobs");
        r = sd_bus_message_enter_container(reply, 'a', "(ossstts)");
        if (r < 0)
                return r;
        *ret = reply;
        reply = NULL;
        return 0;
}

/* Another user's job with this id, if exactly one user has one (ids are unique per owner, so
 * root, managing others' jobs, may find several). */
static int find_any_job(sd_bus *bus, const char *id, char **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *found = NULL;
        const char *path, *job_id;
        unsigned n = 0;
        int r;

        r = list_jobs(bus, &reply);
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ossstts)", &path, &job_id, NULL, NULL, NULL, NULL, NULL)) > 0)
                if (strcmp(job_id, id) == 0 && n++ == 0 && !(found = strdup(path)))
                        return -ENOMEM;
        if (r < 0)
                return r;
        if (n == 0)
                return no_job(id);
        if (n > 1) {
                _cleanup_free_ char *e = esc(id);
                log_error("%u users have a job '%s': give the object path of the one you mean "
                          "('blockjobctl list --json' shows them).", n, e);
                return -ENOTUNIQ;
        }
        *ret = found;
        found = NULL;
        return 0;
}

/* The object path of the job the user names: an object path as it is; an id, the caller's own
 * job of that id, or else another user's (as root sees them). */
static int job_path(sd_bus *bus, const char *id, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        if (id[0] == '/') {
                *ret = strdup(id);
                return *ret ? 0 : -ENOMEM;
        }
        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJob", &error, &reply, "s", id);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, "org.blockjobd.Jobs1.Error.NoSuchJob"))
                        return find_any_job(bus, id, ret);
                return bus_fail(&error, r, "Failed to find the job");
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        *ret = strdup(path);
        return *ret ? 0 : -ENOMEM;
}

/* ---- list and status ------------------------------------------------------------------------ */

static int verb_list(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path, *id, *type, *status, *err;
        uint64_t current, total;
        unsigned n = 0;
        int r;

        r = list_jobs(bus, &reply);
        if (r < 0)
                return r;

        if (arg_json)
                fputc('[', stdout);
        else
                printf("%-20s %-8s %-10s %7s %s\n", "ID", "TYPE", "STATUS", "DONE", "ERROR");
        while ((r = sd_bus_message_read(reply, "(ossstts)", &path, &id, &type, &status, &current, &total, &err)) > 0) {
                if (arg_json) {
                        printf("%s{\"id\":", n > 0 ? "," : "");
                        json_string(stdout, id);
                        fputs(",\"type\":", stdout);
                        json_string(stdout, type);
                        fputs(",\"status\":", stdout);
                        json_string(stdout, status);
                        printf(",\"current-progress\":%" PRIu64 ",\"total-progress\":%" PRIu64 ",\"error\":",
                               current, total);
                        json_string(stdout, err);
                        printf(",\"object\":\"%s\"}", path);
                } else {
                        _cleanup_free_ char *e_id = esc(id), *e_type = esc(type), *e_status = esc(status),
                                            *e_err = esc(err);
                        char done[16] = "-";
                        if (total > 0)
                                snprintf(done, sizeof(done), "%5.1f%%", 100.0 * (double) current / (double) total);
                        printf("%-20s %-8s %-10s %7s %s\n", e_id, e_type, e_status, done, e_err);
                }
                n++;
        }
        if (r < 0)
                return r;
        if (arg_json)
                puts("]");
        else if (n == 0)
                puts("No jobs.");
        return 0;
}

static int print_property(const char *name, sd_bus_message *m, bool first) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;

        if (arg_json) {
                printf("%s", first ? "{" : ",");
                json_string(stdout, name);
                fputc(':', stdout);
        } else {
                _cleanup_free_ char *e = esc(name);
                printf("%16s: ", e);
        }

        if (strcmp(contents, "s") == 0) {
                const char *s;
                r = sd_bus_message_read(m, "s", &s);
                if (r < 0)
                        return r;
                if (arg_json)
                        json_string(stdout, s);
                else {
                        _cleanup_free_ char *e = esc(s);
                        fputs(e, stdout);
                }
        } else if (strcmp(contents, "t") == 0) {
                uint64_t t;
                r = sd_bus_message_read(m, "t", &t);
                if (r < 0)
                        return r;
                if (!arg_json && strcmp(name, "ExpectedEndTime") == 0 && t > 0) {
                        time_t sec = (time_t) (t / 1000000);
                        char buf[64];
                        strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", localtime(&sec));
                        fputs(buf, stdout);
                } else
                        printf("%" PRIu64, t);
        } else if (strcmp(contents, "u") == 0) {
                uint32_t u;
                r = sd_bus_message_read(m, "u", &u);
                if (r < 0)
                        return r;
                printf("%" PRIu32, u);
        } else if (strcmp(contents, "b") == 0) {
                int b;
                r = sd_bus_message_read(m, "b", &b);
                if (r < 0)
                        return r;
                fputs(b ? (arg_json ? "true" : "yes") : (arg_json ? "false" : "no"), stdout);
        } else if (strcmp(contents, "as") == 0) {
                const char *s;
                bool f = true;
                r = sd_bus_message_enter_container(m, 'a', "s");
                if (r < 0)
                        return r;
                if (arg_json)
                        fputc('[', stdout);
                while ((r = sd_bus_message_read(m, "s", &s)) > 0) {
                        if (arg_json) {
                                if (!f)
                                        fputc(',', stdout);
                                json_string(stdout, s);
                        } else {
                                _cleanup_free_ char *e = esc(s);
                                printf("%s%s", f ? "" : " ", e);
                        }
                        f = false;
                }
                if (r < 0)
                        return r;
                if (arg_json)
                        fputc(']', stdout);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        } else {
                r = sd_bus_message_skip(m, contents);
                if (r < 0)
                        return r;
                fputs(arg_json ? "null" : "?", stdout);
        }
        if (!arg_json)
                fputc('\n', stdout);
        return sd_bus_message_exit_container(m);
}

static int verb_status(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *name;
        bool first = true;
        int r;

        r = job_path(bus, argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply, "s",
                               JOB_IFACE);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                        return no_job(argv[1]);
                return bus_fail(&error, r, "Failed to get the job's properties");
        }
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return r;
                r = print_property(name, reply, first);
                if (r < 0)
                        return r;
                first = false;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (arg_json)
                puts(first ? "{}" : "}");
        return arg_follow ? 1 : 0;
}

/* ---- following a job ------------------------------------------------------------------------ */

typedef struct Follow {
        sd_bus *bus;
        const char *path;               /* the job's object path, once known */
        char *id;                       /* these three escaped, as they are printed */
        char status[32];
        char *error;
        uint64_t current, total, rate, end_time;
        bool tty;
        bool done;
        bool ready;                     /* --until-ready: stopped following in ready */
        bool completed;                 /* --complete: Complete() was called */
        uint64_t last_plain_usec;
        int bar_width;
} Follow;

static uint64_t mono_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static void follow_draw(Follow *f, bool force) {
        char cur[32], tot[32], rate[32] = "", eta[32] = "";
        double pct = f->total > 0 ? 100.0 * (double) f->current / (double) f->total : 0;

        format_bytes(cur, sizeof(cur), f->current);
        format_bytes(tot, sizeof(tot), f->total);
        if (f->rate > 0) {
                format_bytes(rate, sizeof(rate), f->rate);
                strcat(rate, "/s");
        }
        if (f->end_time > 0) {
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                int64_t left = (int64_t) (f->end_time / 1000000) - now.tv_sec;
                if (left >= 0)
                        snprintf(eta, sizeof(eta), "ETA %" PRId64 ":%02" PRId64, left / 60, left % 60);
        }

        if (f->tty) {
                int filled = (int) (pct / 100.0 * f->bar_width);
                fprintf(stderr, "\r\033[K%s [", f->id);
                for (int i = 0; i < f->bar_width; i++)
                        fputc(i < filled ? '#' : '.', stderr);
                fprintf(stderr, "] %5.1f%% %s / %s %s %s %s", pct, cur, tot, rate, eta, f->status);
                fflush(stderr);
                return;
        }

        /* Not a terminal: a plain line at most once a second, and at every status change. */
        uint64_t now = mono_usec();
        if (!force && now - f->last_plain_usec < 1000000)
                return;
        f->last_plain_usec = now;
        printf("%s: %s %.1f%% (%" PRIu64 "/%" PRIu64 " bytes)%s%s%s%s\n", f->id, f->status, pct, f->current, f->total,
               *rate ? " " : "", rate, *eta ? " " : "", eta);
        fflush(stdout);
}

/* In ready: --until-ready stops following, --complete finishes the job. */
static void follow_ready(Follow *f) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (arg_until_ready) {
                f->ready = f->done = true;
                return;
        }
        if (!arg_complete || f->completed)
                return;
        f->completed = true;
        r = sd_bus_call_method(f->bus, BUS_NAME, f->path, JOB_IFACE, "Complete", &error, NULL, NULL);
        if (r < 0) {
                _cleanup_free_ char *message = esc(error.message ?: strerror(-r));
                log_error("Failed to complete job '%s': %s", f->id, message);
        }
}

static void follow_status(Follow *f, const char *status) {
        _cleanup_free_ char *e = esc(status);

        if (f->tty)
                fputc('\n', stderr);
        snprintf(f->status, sizeof(f->status), "%s", e);
        follow_draw(f, true);
        if (strcmp(status, "concluded") == 0 || strcmp(status, "null") == 0)
                f->done = true;
        else if (strcmp(status, "ready") == 0)
                follow_ready(f);
}

static int on_status_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Follow *f = userdata;
        const char *id, *status;

        if (!f->path || strcmp(sd_bus_message_get_path(m), f->path) != 0)
                return 0;
        if (sd_bus_message_read(m, "ss", &id, &status) < 0)
                return 0;
        follow_status(f, status);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Follow *f = userdata;
        const char *iface, *name;
        int r;

        if (!f->path || strcmp(sd_bus_message_get_path(m), f->path) != 0)
                return 0;
        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || strcmp(iface, JOB_IFACE) != 0)
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                uint64_t *slot = NULL;

                if (sd_bus_message_read(m, "s", &name) < 0)
                        return 0;
                if (strcmp(name, "CurrentProgress") == 0)
                        slot = &f->current;
                else if (strcmp(name, "TotalProgress") == 0)
                        slot = &f->total;
                else if (strcmp(name, "Rate") == 0)
                        slot = &f->rate;
                else if (strcmp(name, "ExpectedEndTime") == 0)
                        slot = &f->end_time;

                if (slot)
                        r = sd_bus_message_read(m, "v", "t", slot);
                else if (strcmp(name, "Error") == 0) {
                        const char *e;
                        r = sd_bus_message_read(m, "v", "s", &e);
                        if (r >= 0 && *e) {
                                free(f->error);
                                f->error = esc(e);
                        }
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0 || sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        follow_draw(f, false);
        return 0;
}

static int read_job_property_t(sd_bus *bus, const char *path, const char *name, uint64_t *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        return sd_bus_get_property_trivial(bus, BUS_NAME, path, JOB_IFACE, name, &error, 't', ret);
}

/* Watches the job until it concludes (or goes), drawing progress. Returns 0 for success, 1 for a
 * failed or cancelled job, negative on errors. The matches are installed by the caller before the
 * job is created, so no signal is missed. */
static int follow_job(sd_bus *bus, Follow *f, bool existing) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char *status = NULL;
        int r;

        f->tty = isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
        f->bar_width = 30;

        /* A job we just created tells its whole story through the signals queued since; one that
         * existed before needs its present state read first. */
        if (existing && (r = sd_bus_get_property_string(bus, BUS_NAME, f->path, JOB_IFACE, "Status", &error, &status)) < 0)
                return bus_fail(&error, r, "Failed to read the job's status");
        if (!existing)
                /* Set before the object appeared, so no signal carries it. */
                (void) read_job_property_t(bus, f->path, "TotalProgress", &f->total);
        if (existing) {
                _cleanup_free_ char *e = esc(status);
                free(status);
                snprintf(f->status, sizeof(f->status), "%s", e);
                (void) read_job_property_t(bus, f->path, "CurrentProgress", &f->current);
                (void) read_job_property_t(bus, f->path, "TotalProgress", &f->total);
                follow_draw(f, true);
                if (strcmp(f->status, "concluded") == 0)
                        f->done = true;
                else if (strcmp(f->status, "ready") == 0)
                        follow_ready(f);
        }

        while (!f->done) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return log_error("Lost the bus: %s", strerror(-r)), r;
                if (r > 0)
                        continue;
                r = sd_bus_wait(bus, UINT64_MAX);
                if (r < 0 && r != -EINTR)
                        return r;
        }
        if (f->tty)
                fputc('\n', stderr);
        if (f->ready) {
                printf("Job '%s' is ready.\n", f->id);
                return 0;
        }

        if (!f->error && strcmp(f->status, "concluded") == 0) {
                /* Still there (auto-dismiss off): ask. */
                _cleanup_free_ char *e = NULL;
                if (sd_bus_get_property_string(bus, BUS_NAME, f->path, JOB_IFACE, "Error", &error, &e) >= 0 && *e)
                        f->error = esc(e);
        }
        if (f->error) {
                log_error("Job '%s' failed: %s", f->id, f->error);
                return 1;
        }
        printf("Job '%s' finished successfully.\n", f->id);
        return 0;
}

static int add_follow_matches(sd_bus *bus, Follow *f) {
        int r;

        r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, JOB_IFACE, "StatusChanged", on_status_changed, f);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", on_properties_changed, f);
        if (r < 0)
                log_error("Failed to watch the job: %s", strerror(-r));
        return r;
}

static int follow_existing(sd_bus *bus, const char *id) {
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ char *e_id = esc(id);
        Follow f = { .id = e_id };
        int r;

        r = add_follow_matches(bus, &f);
        if (r < 0)
                return r;
        r = job_path(bus, id, &path);
        if (r < 0)
                return r;
        f.bus = bus;
        f.path = path;
        r = follow_job(bus, &f, true);
        free(f.error);
        return r;
}

/* ---- creating jobs -------------------------------------------------------------------------- */

static int append_options(sd_bus_message *m, const char *type) {
        bool copy = strcmp(type, "backup") == 0 || strcmp(type, "mirror") == 0;
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
#define ADD(key, sig, ...) do { r = sd_bus_message_append(m, "{sv}", key, sig, __VA_ARGS__); if (r < 0) return r; } while (0)
        if (arg_job_id)
                ADD("job-id", "s", arg_job_id);
        if (arg_speed_set)
                ADD("speed", "t", arg_speed);
        if (arg_auto_finalize >= 0)
                ADD("auto-finalize", "b", arg_auto_finalize);
        if (arg_auto_dismiss >= 0)
                ADD("auto-dismiss", "b", arg_auto_dismiss);
        if (arg_on_source_error)
                ADD("on-source-error", "s", arg_on_source_error);
        if (arg_on_target_error)
                ADD("on-target-error", "s", arg_on_target_error);
        if (copy && arg_sync)
                ADD("sync", "s", arg_sync);
        if (copy && arg_format)
                ADD("format", "s", arg_format);
        if (copy && arg_source_format)
                ADD("source-format", "s", arg_source_format);
        if (!copy && arg_image_format)
                ADD("image-format", "s", arg_image_format);
        if (!copy && arg_base_format)
                ADD("base-format", "s", arg_base_format);
        if (copy && arg_overwrite >= 0)
                ADD("overwrite", "b", arg_overwrite);
        if (strcmp(type, "mirror") == 0 && arg_granularity > 0)
                ADD("granularity", "u", arg_granularity);
        if (strcmp(type, "commit") == 0 && arg_top)
                ADD("top", "s", arg_top);
        if (!copy && arg_base)
                ADD("base", "s", arg_base);
        if (!copy && arg_backing_file)
                ADD("backing-file", "s", arg_backing_file);
#undef ADD
        return sd_bus_message_close_container(m);
}

static char *absolute(const char *path) {
        char *cwd, *s;

        if (path[0] == '/')
                return strdup(path);
        /* The daemon does not share our working directory: send absolute paths. */
        cwd = getcwd(NULL, 0);
        if (!cwd)
                return NULL;
        if (asprintf(&s, "%s/%s", cwd, path) < 0)
                s = NULL;
        free(cwd);
        return s;
}

static int verb_create(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *source = NULL, *target = NULL;
        const char *type = argv[0], *path, *method;
        bool copy = strcmp(type, "backup") == 0 || strcmp(type, "mirror") == 0;
        Follow f = {};
        int r;

        method = strcmp(type, "backup") == 0 ? "Backup" :
                 strcmp(type, "mirror") == 0 ? "Mirror" :
                 strcmp(type, "commit") == 0 ? "Commit" : "Stream";

        /* Formats decide which files the daemon reads: one given to a command that has no use
         * for it is a mistake to report, not to ignore. */
        if (arg_source_format && !copy)
                return log_error("--source-format= is for backup and mirror; %s takes --image-format= and "
                                 "--base-format=.", type);
        if ((arg_image_format || arg_base_format) && copy)
                return log_error("--%s-format= is for commit and stream; %s takes --source-format=.",
                                 arg_image_format ? "image" : "base", type);

        source = absolute(argv[1]);
        target = copy ? absolute(argv[2]) : NULL;
        if (!source || (copy && !target))
                return log_error("Out of memory."), -ENOMEM;

        if (arg_follow) {
                r = add_follow_matches(bus, &f);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, method);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", source);
        if (r >= 0 && copy)
                r = sd_bus_message_append(m, "s", target);
        if (r >= 0)
                r = append_options(m, type);
        if (r < 0)
                return r;

        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return bus_fail(&error, r, "Failed to start the job");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;

        _cleanup_free_ char *id = NULL;
        r = job_id_from_path(path, &id);
        if (r <= 0)
                return log_error("Unexpected job path %s", path), -EBADMSG;
        _cleanup_free_ char *e_id = esc(id);
        if (!arg_follow) {
                if (arg_json) {
                        fputs("{\"id\":", stdout);
                        json_string(stdout, id);
                        printf(",\"object\":\"%s\"}\n", path);
                } else
                        printf("Job '%s' started (%s).\n", e_id, path);
                return 0;
        }

        f.bus = bus;
        f.path = path;
        f.id = e_id;
        r = follow_job(bus, &f, false);
        free(f.error);
        return r;
}

/* ---- verbs on a job --------------------------------------------------------------------------- */

static int verb_job_method(sd_bus *bus, int argc, char **argv) {
        static const struct { const char *verb, *method; } table[] = {
                { "pause", "Pause" },       { "resume", "Resume" },   { "cancel", "Cancel" },
                { "complete", "Complete" }, { "dismiss", "Dismiss" }, { "finalize", "Finalize" },
        };
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        const char *method = NULL;
        int r;

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                if (strcmp(table[i].verb, argv[0]) == 0)
                        method = table[i].method;

        r = job_path(bus, argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, BUS_NAME, path, JOB_IFACE, method, &error, NULL, NULL);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                        return no_job(argv[1]);
                return bus_fail(&error, r, "Failed");
        }
        return 0;
}

static int verb_set_speed(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        uint64_t speed;
        int r;

        if (parse_size(argv[2], &speed) < 0)
                return log_error("Invalid speed '%s': give bytes per second, with K, M, G or T if you like.", argv[2]);
        r = job_path(bus, argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, BUS_NAME, path, JOB_IFACE, "SetSpeed", &error, NULL, "t", speed);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                        return no_job(argv[1]);
                return bus_fail(&error, r, "Failed to set the speed");
        }
        return 0;
}

/* ---- monitor ------------------------------------------------------------------------------ */

static int on_monitor_status(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *id, *status;

        if (sd_bus_message_read(m, "ss", &id, &status) < 0)
                return 0;
        if (arg_json) {
                fputs("{\"id\":", stdout);
                json_string(stdout, id);
                fputs(",\"status\":", stdout);
                json_string(stdout, status);
                puts("}");
        } else {
                _cleanup_free_ char *e_id = esc(id), *e_status = esc(status);
                printf("%s %s\n", e_id, e_status);
        }
        fflush(stdout);
        return 0;
}

static int on_monitor_io_error(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *id = NULL;
        const char *operation, *action, *message;

        if (sd_bus_message_read(m, "sss", &operation, &action, &message) < 0)
                return 0;
        if (job_id_from_path(sd_bus_message_get_path(m), &id) <= 0)
                return 0;
        if (arg_json) {
                fputs("{\"id\":", stdout);
                json_string(stdout, id);
                fputs(",\"io-error\":{\"operation\":", stdout);
                json_string(stdout, operation);
                fputs(",\"action\":", stdout);
                json_string(stdout, action);
                fputs(",\"message\":", stdout);
                json_string(stdout, message);
                puts("}}");
        } else {
                _cleanup_free_ char *e_id = esc(id), *e_operation = esc(operation), *e_action = esc(action),
                                    *e_message = esc(message);
                printf("%s io-error %s %s: %s\n", e_id, e_operation, e_action, e_message);
        }
        fflush(stdout);
        return 0;
}

static int verb_monitor(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        int r;

        r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, JOB_IFACE, "StatusChanged", on_monitor_status, NULL);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, JOB_IFACE, "IoError", on_monitor_io_error, NULL);
        if (r < 0)
                return log_error("Failed to watch jobs: %s", strerror(-r)), r;

        r = sd_event_default(&event);
        if (r < 0)
                return r;
        (void) sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
        (void) sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        r = sd_bus_attach_event(bus, event, 0);
        if (r < 0)
                return r;
        r = sd_bus_set_exit_on_disconnect(bus, true);
        if (r < 0)
                return r;
        if (!arg_json)
                fprintf(stderr, "Monitoring job status changes, press Ctrl-C to stop.\n");
        return sd_event_loop(event);
}

/* ---- command line ------------------------------------------------------------------------- */

static void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Run and control disk-image jobs of blockjobd.\n\n"
               "Commands:\n"
               "  list                    List jobs, newest first\n"
               "  status ID               Show a job's properties\n"
               "  backup SOURCE TARGET    Copy SOURCE to a new TARGET, point in time\n"
               "  mirror SOURCE TARGET    Copy SOURCE to TARGET and keep it in sync until completed\n"
               "  commit IMAGE            Commit IMAGE (or --top=) into --base= of its chain\n"
               "  stream IMAGE            Pull the backing chain (down to --base=) into IMAGE\n"
               "  pause ID                Pause a job\n"
               "  resume ID               Resume a paused job\n"
               "  cancel ID               Cancel a job (its unfinished target is removed)\n"
               "  complete ID             Complete a ready job\n"
               "  finalize ID             Finalize a pending job (and its transaction)\n"
               "  dismiss ID              Dismiss a concluded job\n"
               "  set-speed ID BYTES      Limit a job to BYTES per second (K, M, G suffixes; 0: none)\n"
               "  monitor                 Print status changes as they happen\n\n"
               "Options:\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --system             Talk to the system bus (the default)\n"
               "     --address=ADDRESS    Talk to the bus at ADDRESS\n"
               "     --json               Print JSON (list, status, monitor, job creation)\n"
               "  -f --follow             Show the job's progress until it concludes (job creation,\n"
               "                          status); the exit status tells whether it succeeded\n"
               "     --complete           Follow, and complete the job once it is ready\n"
               "     --until-ready        Follow until the job is ready (or concludes)\n"
               "     --job-id=ID          The new job's id\n"
               "     --speed=BYTES        The new job's speed limit\n"
               "     --no-auto-finalize   Wait in pending for 'finalize'\n"
               "     --no-auto-dismiss    Stay concluded until 'dismiss'\n"
               "     --overwrite          Replace an existing TARGET (backup, mirror)\n"
               "     --sync=full|top      What to copy (backup, mirror)\n"
               "     --format=raw|qcow2   The TARGET's format (backup, mirror)\n"
               "     --source-format=raw|qcow2\n"
               "                          The SOURCE's format, instead of guessing it from its\n"
               "                          content; needed to follow a qcow2 SOURCE's backing files\n"
               "                          (backup, mirror)\n"
               "     --image-format=qcow2 The IMAGE's format (commit, stream)\n"
               "     --base-format=raw|qcow2\n"
               "                          The format of the chain's base (--base=): checked against\n"
               "                          the one the image above it records, needed where that\n"
               "                          records none (commit, stream)\n"
               "     --granularity=BYTES  Change tracking unit (mirror)\n"
               "     --top=FILE           Top of what to commit (commit)\n"
               "     --base=FILE          Where the chain ends (commit, stream)\n"
               "     --backing-file=NAME  The backing file name to record (commit, stream)\n"
               "     --on-source-error=report|ignore|stop|enospc\n"
               "     --on-target-error=report|ignore|stop|enospc\n",
               program_invocation_short_name);
}

typedef struct Verb {
        const char *name;
        int args;                       /* including the verb itself */
        int (*run)(sd_bus *bus, int argc, char **argv);
} Verb;

static const Verb verbs[] = {
        { "list", 1, verb_list },           { "status", 2, verb_status },
        { "backup", 3, verb_create },       { "mirror", 3, verb_create },
        { "commit", 2, verb_create },       { "stream", 2, verb_create },
        { "pause", 2, verb_job_method },    { "resume", 2, verb_job_method },
        { "cancel", 2, verb_job_method },   { "complete", 2, verb_job_method },
        { "dismiss", 2, verb_job_method },  { "finalize", 2, verb_job_method },
        { "set-speed", 3, verb_set_speed }, { "monitor", 1, verb_monitor },
};

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100, ARG_SYSTEM, ARG_ADDRESS, ARG_JSON, ARG_JOB_ID, ARG_SPEED, ARG_NO_AUTO_FINALIZE,
                ARG_NO_AUTO_DISMISS, ARG_OVERWRITE, ARG_SYNC, ARG_FORMAT, ARG_GRANULARITY, ARG_TOP, ARG_BASE,
                ARG_BACKING_FILE, ARG_ON_SOURCE_ERROR, ARG_ON_TARGET_ERROR, ARG_COMPLETE, ARG_UNTIL_READY,
                ARG_SOURCE_FORMAT, ARG_IMAGE_FORMAT, ARG_BASE_FORMAT,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "json", no_argument, NULL, ARG_JSON },
                { "follow", no_argument, NULL, 'f' },
                { "complete", no_argument, NULL, ARG_COMPLETE },
                { "until-ready", no_argument, NULL, ARG_UNTIL_READY },
                { "job-id", required_argument, NULL, ARG_JOB_ID },
                { "speed", required_argument, NULL, ARG_SPEED },
                { "no-auto-finalize", no_argument, NULL, ARG_NO_AUTO_FINALIZE },
                { "no-auto-dismiss", no_argument, NULL, ARG_NO_AUTO_DISMISS },
                { "overwrite", no_argument, NULL, ARG_OVERWRITE },
                { "sync", required_argument, NULL, ARG_SYNC },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "source-format", required_argument, NULL, ARG_SOURCE_FORMAT },
                { "image-format", required_argument, NULL, ARG_IMAGE_FORMAT },
                { "base-format", required_argument, NULL, ARG_BASE_FORMAT },
                { "granularity", required_argument, NULL, ARG_GRANULARITY },
                { "top", required_argument, NULL, ARG_TOP },
                { "base", required_argument, NULL, ARG_BASE },
                { "backing-file", required_argument, NULL, ARG_BACKING_FILE },
                { "on-source-error", required_argument, NULL, ARG_ON_SOURCE_ERROR },
                { "on-target-error", required_argument, NULL, ARG_ON_TARGET_ERROR },
                {}
        };
        uint64_t v;
        int c;

        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        puts(PROJECT_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        arg_address = NULL;
                        break;
                case ARG_ADDRESS:
                        arg_address = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case 'f':
                        arg_follow = true;
                        break;
                case ARG_COMPLETE:
                        arg_complete = arg_follow = true;
                        break;
                case ARG_UNTIL_READY:
                        arg_until_ready = arg_follow = true;
                        break;
                case ARG_JOB_ID:
                        arg_job_id = optarg;
                        break;
                case ARG_SPEED:
                        if (parse_size(optarg, &arg_speed) < 0)
                                return log_error("Invalid --speed=%s", optarg);
                        arg_speed_set = true;
                        break;
                case ARG_NO_AUTO_FINALIZE:
                        arg_auto_finalize = false;
                        break;
                case ARG_NO_AUTO_DISMISS:
                        arg_auto_dismiss = false;
                        break;
                case ARG_OVERWRITE:
                        arg_overwrite = true;
                        break;
                case ARG_SYNC:
                        arg_sync = optarg;
                        break;
                case ARG_FORMAT:
                        arg_format = optarg;
                        break;
                case ARG_SOURCE_FORMAT:
                        arg_source_format = optarg;
                        break;
                case ARG_IMAGE_FORMAT:
                        arg_image_format = optarg;
                        break;
                case ARG_BASE_FORMAT:
                        arg_base_format = optarg;
                        break;
                case ARG_GRANULARITY:
                        if (parse_size(optarg, &v) < 0 || v > UINT32_MAX)
                                return log_error("Invalid --granularity=%s", optarg);
                        arg_granularity = (uint32_t) v;
                        break;
                case ARG_TOP:
                        arg_top = optarg;
                        break;
                case ARG_BASE:
                        arg_base = optarg;
                        break;
                case ARG_BACKING_FILE:
                        arg_backing_file = optarg;
                        break;
                case ARG_ON_SOURCE_ERROR:
                        arg_on_source_error = optarg;
                        break;
                case ARG_ON_TARGET_ERROR:
                        arg_on_target_error = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *verb = NULL;
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        argc -= optind;
        argv += optind;
        if (argc == 0) {
                log_error("Give a command; see --help.");
                return EXIT_FAILURE;
        }
        for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
                if (strcmp(verbs[i].name, argv[0]) == 0)
                        verb = &verbs[i];
        if (!verb) {
                log_error("Unknown command '%s'; see --help.", argv[0]);
                return EXIT_FAILURE;
        }
        if (argc != verb->args) {
                log_error("'%s' takes %d argument%s; see --help.", verb->name, verb->args - 1, verb->args == 2 ? "" : "s");
                return EXIT_FAILURE;
        }

        /* monitor handles these through sd-event, which needs them blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (verb->run == verb_monitor)
                sigprocmask(SIG_BLOCK, &mask, NULL);

        r = connect_bus(&bus);
        if (r < 0)
                return EXIT_FAILURE;

        r = verb->run(bus, argc, argv);
        if (r == 1 && verb->run == verb_status)
                r = follow_existing(bus, argv[1]);
        if (r < 0)
                return EXIT_FAILURE;
        return r;
}
