/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* list and status: a job's properties for people (sizes in units, --bytes for exact ones) and
 * for scripts (--json, the same keys in both). */

#include <inttypes.h>
#include <time.h>

#include "args.h"
#include "bus.h"
#include "units.h"
#include "util.h"
#include "verbs.h"
#include "watch.h"

typedef enum FieldKind {
        FIELD_STRING,
        FIELD_BYTES,
        FIELD_SPEED,            /* bytes per second, 0: none */
        FIELD_RATE,             /* bytes per second, 0: unknown */
        FIELD_TIME,             /* CLOCK_REALTIME µs, 0: unknown */
        FIELD_BOOL,
        FIELD_UINT32,
        FIELD_STRV,
} FieldKind;

typedef struct Field {
        const char *property;   /* its D-Bus name, the label for people */
        const char *key;        /* its JSON key, in list and status alike */
        FieldKind kind;
} Field;

/* In this order: the first keys are those `list --json` always had. */
static const Field fields[] = {
        { "Id", "id", FIELD_STRING },
        { "Type", "type", FIELD_STRING },
        { "Status", "status", FIELD_STRING },
        { "CurrentProgress", "current-progress", FIELD_BYTES },
        { "TotalProgress", "total-progress", FIELD_BYTES },
        { "Error", "error", FIELD_STRING },
        { "Source", "source", FIELD_STRING },
        { "Target", "target", FIELD_STRING },
        { "SourceFormat", "source-format", FIELD_STRING },
        { "Transaction", "transaction", FIELD_STRING },
        { "OwnerUID", "owner-uid", FIELD_UINT32 },
        { "Speed", "speed", FIELD_SPEED },
        { "Rate", "rate", FIELD_RATE },
        { "ExpectedEndTime", "expected-end-time", FIELD_TIME },
        { "AutoFinalize", "auto-finalize", FIELD_BOOL },
        { "AutoDismiss", "auto-dismiss", FIELD_BOOL },
        { "AllowedVerbs", "allowed-verbs", FIELD_STRV },
        { "IoStatus", "io-status", FIELD_STRING },
        { "IoErrorMessage", "io-error-message", FIELD_STRING },
};

typedef struct Value {
        bool set;
        char *s;                /* strings, and string lists joined by spaces */
        char **strv;
        uint64_t t;
} Value;

typedef struct JobInfo {
        char *path;
        Value values[ELEMENTSOF(fields)];
} JobInfo;

static void job_info_free(JobInfo *info) {
        free(info->path);
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                free(info->values[i].s);
                if (info->values[i].strv)
                        for (char **p = info->values[i].strv; *p; p++)
                                free(*p);
                free(info->values[i].strv);
        }
}

static const Value *value_of(const JobInfo *info, const char *property) {
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (streq(fields[i].property, property))
                        return &info->values[i];
        return NULL;
}

static const char *string_of(const JobInfo *info, const char *property) {
        const Value *v = value_of(info, property);
        return v && v->s ? v->s : "";
}

static int read_value(sd_bus_message *m, const Field *f, Value *v) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        switch (f->kind) {
        case FIELD_STRING: {
                const char *s;
                r = sd_bus_message_read(m, "s", &s);
                if (r >= 0 && !(v->s = strdup(s)))
                        oom();
                break;
        }
        case FIELD_BOOL: {
                int b;
                r = sd_bus_message_read(m, "b", &b);
                v->t = b;
                break;
        }
        case FIELD_UINT32: {
                uint32_t u;
                r = sd_bus_message_read(m, "u", &u);
                v->t = u;
                break;
        }
        case FIELD_STRV:
                r = sd_bus_message_read_strv(m, &v->strv);
                break;
        default:
                r = sd_bus_message_read(m, "t", &v->t);
        }
        if (r < 0)
                return r;
        v->set = true;
        return sd_bus_message_exit_container(m);
}

/* GetAll: 0, or -ENOENT if the job is gone. */
static int read_job(sd_bus *bus, const char *path, JobInfo *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name;
        int r;

        *ret = (JobInfo) {};
        r = sd_bus_call_method(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply, "s",
                               JOB_IFACE);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                        return -ENOENT;
                return bus_fail(&error, r, "Failed to read the job's properties");
        }
        ret->path = strdup(path);
        if (!ret->path)
                oom();
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const Field *f = NULL;

                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                        if (streq(fields[i].property, name))
                                f = &fields[i];
                if (f)
                        r = read_value(reply, f, &ret->values[f - fields]);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        return r;
}

static void print_json(const JobInfo *info) {
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const Value *v = &info->values[i];

                if (i == 6) {
                        /* "object" where `list --json` always had it. */
                        fputs(",\"object\":", stdout);
                        json_string(stdout, info->path);
                }
                if (!v->set)
                        continue;
                printf("%s\"%s\":", i == 0 ? "" : ",", fields[i].key);
                switch (fields[i].kind) {
                case FIELD_STRING:
                        json_string(stdout, v->s);
                        break;
                case FIELD_BOOL:
                        fputs(v->t ? "true" : "false", stdout);
                        break;
                case FIELD_STRV:
                        fputc('[', stdout);
                        for (char **p = v->strv; p && *p; p++) {
                                if (p != v->strv)
                                        fputc(',', stdout);
                                json_string(stdout, *p);
                        }
                        fputc(']', stdout);
                        break;
                default:
                        printf("%" PRIu64, v->t);
                }
        }
}

static char *format_value(const Field *f, const Value *v, const JobInfo *info) {
        char buf[FORMAT_BYTES_MAX], d[FORMAT_DURATION_MAX];
        char *s = NULL;
        int r = 0;

        switch (f->kind) {
        case FIELD_STRING:
                return esc(v->s);
        case FIELD_BOOL:
                return strdup(v->t ? "yes" : "no");
        case FIELD_UINT32:
                r = asprintf(&s, "%" PRIu64, v->t);
                break;
        case FIELD_STRV: {
                size_t n = 0;
                FILE *m = open_memstream(&s, &n);
                if (!m)
                        oom();
                for (char **p = v->strv; p && *p; p++) {
                        _cleanup_free_ char *e = esc(*p);
                        fprintf(m, "%s%s", p == v->strv ? "" : " ", e);
                }
                if (fclose(m) != 0)
                        oom();
                return s;
        }
        case FIELD_BYTES:
                if (arg.bytes)
                        r = asprintf(&s, "%" PRIu64, v->t);
                else if (streq(f->property, "CurrentProgress")) {
                        const Value *total = value_of(info, "TotalProgress");
                        double pc = total && total->t > 0 ? 100.0 * (double) v->t / (double) total->t : 0;
                        r = asprintf(&s, "%s (%.1f%%)", format_bytes(buf, v->t), pc);
                } else
                        r = asprintf(&s, "%s", format_bytes(buf, v->t));
                break;
        case FIELD_SPEED:
        case FIELD_RATE:
                if (arg.bytes)
                        r = asprintf(&s, "%" PRIu64, v->t);
                else if (v->t == 0)
                        r = asprintf(&s, "%s", f->kind == FIELD_SPEED ? "unlimited" : "-");
                else
                        r = asprintf(&s, "%s/s", format_bytes(buf, v->t));
                break;
        case FIELD_TIME: {
                struct timespec now;
                if (v->t == 0)
                        return strdup("-");
                if (arg.bytes)
                        r = asprintf(&s, "%" PRIu64, v->t);
                else {
                        time_t sec = (time_t) (v->t / 1000000);
                        char when[64];
                        clock_gettime(CLOCK_REALTIME, &now);
                        uint64_t n = (uint64_t) now.tv_sec * 1000000 + (uint64_t) now.tv_nsec / 1000;
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&sec));
                        r = asprintf(&s, "%s%s%s%s", when, v->t > n ? " (in " : "",
                                     v->t > n ? format_duration(d, v->t - n) : "", v->t > n ? ")" : "");
                }
                break;
        }
        }
        if (r < 0 || !s)
                oom();
        return s;
}

int verb_status(sd_bus *bus) {
        _cleanup_free_ char *path = NULL;
        JobInfo info;
        int r;

        r = job_path(bus, arg.args[0], &path);
        if (r < 0)
                return r;
        r = read_job(bus, path, &info);
        if (r == -ENOENT)
                return no_job(arg.args[0]);
        if (r < 0) {
                job_info_free(&info);
                return r;
        }
        if (arg.json) {
                fputc('{', stdout);
                print_json(&info);
                puts("}");
        } else
                for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                        const Value *v = &info.values[i];
                        /* Empty strings (no error, no transaction) are left out. */
                        if (!v->set || (fields[i].kind == FIELD_STRING && !*v->s))
                                continue;
                        _cleanup_free_ char *s = format_value(&fields[i], v, &info);
                        if (!s)
                                oom();
                        printf("%16s: %s\n", fields[i].property, s);
                }
        job_info_free(&info);
        fflush(stdout);

        if (!arg.follow)
                return 0;

        _cleanup_(watch_freep) Watch *w = NULL;
        r = watch_new(bus, WATCH_UNTIL_END, &w);
        if (r < 0)
                return r;
        r = watch_add_job(w, path, NULL, false, false);
        if (r < 0)
                return r;
        return watch_run(w);
}

/* ---- list ---------------------------------------------------------------------------------- */

static char *done_column(const JobInfo *info) {
        const Value *cur = value_of(info, "CurrentProgress"), *tot = value_of(info, "TotalProgress");
        char *s = NULL;

        if (arg.bytes)
                return asprintf(&s, "%" PRIu64 "/%" PRIu64, cur->t, tot->t) < 0 ? NULL : s;
        if (tot->t == 0)
                return strdup("-");
        return asprintf(&s, "%.1f%%", 100.0 * (double) cur->t / (double) tot->t) < 0 ? NULL : s;
}

int verb_list(sd_bus *bus) {
        static const char *const columns[] = { "ID", "TYPE", "STATUS", "DONE", "SOURCE", "TARGET", "ERROR" };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        JobInfo *jobs = NULL;
        char *(*cells)[ELEMENTSOF(columns)] = NULL;
        size_t n = 0, widths[ELEMENTSOF(columns)];
        const char *path;
        int r;

        r = list_jobs(bus, &reply);
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ossstts)", &path, NULL, NULL, NULL, NULL, NULL, NULL)) > 0) {
                jobs = realloc(jobs, (n + 1) * sizeof(JobInfo));
                if (!jobs)
                        oom();
                r = read_job(bus, path, &jobs[n]);
                if (r == -ENOENT)       /* gone since */
                        continue;
                if (r < 0) {
                        job_info_free(&jobs[n]);
                        break;
                }
                n++;
        }

        if (r >= 0 && arg.json) {
                fputc('[', stdout);
                for (size_t i = 0; i < n; i++) {
                        fputs(i > 0 ? ",{" : "{", stdout);
                        print_json(&jobs[i]);
                        fputc('}', stdout);
                }
                puts("]");
        } else if (r >= 0 && n == 0)
                puts("No jobs.");
        else if (r >= 0) {
                cells = calloc(n, sizeof(*cells));
                if (!cells)
                        oom();
                for (size_t c = 0; c < ELEMENTSOF(columns); c++)
                        widths[c] = strlen(columns[c]);
                for (size_t i = 0; i < n; i++) {
                        const char *target = string_of(&jobs[i], "Target"), *source = string_of(&jobs[i], "Source");
                        cells[i][0] = esc(string_of(&jobs[i], "Id"));
                        cells[i][1] = esc(string_of(&jobs[i], "Type"));
                        cells[i][2] = esc(string_of(&jobs[i], "Status"));
                        cells[i][3] = done_column(&jobs[i]);
                        cells[i][4] = esc(*source ? source : "-");
                        cells[i][5] = esc(*target ? target : "-");
                        cells[i][6] = esc(string_of(&jobs[i], "Error"));
                        for (size_t c = 0; c < ELEMENTSOF(columns); c++) {
                                if (!cells[i][c])
                                        oom();
                                if (strlen(cells[i][c]) > widths[c])
                                        widths[c] = strlen(cells[i][c]);
                        }
                }
                for (size_t i = 0; i <= n; i++) {
                        _cleanup_free_ char *line = NULL;
                        size_t size = 0;
                        FILE *f = open_memstream(&line, &size);
                        if (!f)
                                oom();
                        for (size_t c = 0; c < ELEMENTSOF(columns); c++) {
                                const char *cell = i == 0 ? columns[c] : cells[i - 1][c];
                                if (c + 1 == ELEMENTSOF(columns))
                                        fputs(cell, f);
                                else if (c == 3)        /* DONE, right-aligned */
                                        fprintf(f, "%*s  ", (int) widths[c], cell);
                                else
                                        fprintf(f, "%-*s  ", (int) widths[c], cell);
                        }
                        if (fclose(f) != 0)
                                oom();
                        /* No trailing blanks when the last columns are empty. */
                        size_t l = strlen(line);
                        while (l > 0 && line[l - 1] == ' ')
                                line[--l] = 0;
                        puts(line);
                }
                for (size_t i = 0; i < n; i++)
                        for (size_t c = 0; c < ELEMENTSOF(columns); c++)
                                free(cells[i][c]);
                free(cells);
        }
        for (size_t i = 0; i < n; i++)
                job_info_free(&jobs[i]);
        free(jobs);
        return r < 0 ? r : 0;
}
