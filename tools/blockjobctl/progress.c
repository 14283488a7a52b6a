/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "units.h"
#include "util.h"

#define BAR_MIN 10
#define BAR_MAX 40
#define PLAIN_MIN_INTERVAL_USEC (10 * 1000000ULL)
#define PLAIN_MAX_INTERVAL_USEC (300 * 1000000ULL)
#define PLAIN_STEP_PERCENT 10.0

struct Progress {
        bool tty;
        bool drawn;                     /* a bar is on the screen */
        uint64_t last_plain_usec;
        double last_plain_percent;
        uint64_t last_plain_current;
};

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

Progress *progress_new(void) {
        Progress *p = calloc(1, sizeof(Progress));
        if (!p)
                oom();
        p->tty = isatty(STDERR_FILENO);
        p->last_plain_usec = now_usec(CLOCK_MONOTONIC);
        return p;
}

Progress *progress_free(Progress *p) {
        if (p)
                progress_clear(p);
        free(p);
        return NULL;
}

bool progress_is_tty(const Progress *p) {
        return p && p->tty;
}

static unsigned columns(void) {
        struct winsize ws = {};
        const char *e;

        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) >= 0 && ws.ws_col > 0)
                return ws.ws_col;
        e = getenv("COLUMNS");
        if (e) {
                long c = strtol(e, NULL, 10);
                if (c > 0 && c < 10000)
                        return (unsigned) c;
        }
        return 80;
}

/* What all the jobs together did: one job as it is, several summed. */
typedef struct Totals {
        uint64_t current, total, rate, end_time;
        const char *status;
} Totals;

static Totals totals(WatchJob *const *jobs, size_t n) {
        Totals t = { .status = n > 0 ? jobs[0]->status : "" };
        bool status_set = false;

        for (size_t i = 0; i < n; i++) {
                t.current += jobs[i]->current;
                t.total += jobs[i]->total;
                t.rate += jobs[i]->rate;
                if (jobs[i]->end_time > t.end_time)
                        t.end_time = jobs[i]->end_time;
                /* The status shown is that of the first job still going. */
                if (!status_set && jobs[i]->outcome == OUTCOME_NONE) {
                        t.status = jobs[i]->status;
                        status_set = true;
                }
        }
        return t;
}

static double percent(uint64_t current, uint64_t total) {
        return total > 0 ? 100.0 * (double) current / (double) total : 0.0;
}

/* "3h41m left", or "" when the service does not know. */
static void time_left(char buf[static FORMAT_DURATION_MAX + 8], uint64_t end_time) {
        uint64_t now = now_usec(CLOCK_REALTIME);
        char d[FORMAT_DURATION_MAX];

        buf[0] = 0;
        if (end_time > now)
                snprintf(buf, FORMAT_DURATION_MAX + 8, "%s left", format_duration(d, end_time - now));
}

char *progress_describe(const WatchJob *j, bool with_rate) {
        char cur[FORMAT_BYTES_MAX], tot[FORMAT_BYTES_MAX], rate[FORMAT_BYTES_MAX], left[FORMAT_DURATION_MAX + 8];
        char *s = NULL;

        time_left(left, j->end_time);
        if (asprintf(&s, "%s: %s, %.1f%% (%s of %s)%s%s%s%s%s", j->id, j->status, percent(j->current, j->total),
                     format_bytes(cur, j->current), format_bytes(tot, j->total),
                     with_rate && j->rate > 0 ? ", " : "", with_rate && j->rate > 0 ? format_bytes(rate, j->rate) : "",
                     with_rate && j->rate > 0 ? "/s" : "", with_rate && *left ? ", " : "", with_rate ? left : "") < 0)
                oom();
        return s;
}

void progress_clear(Progress *p) {
        if (!p || !p->tty || !p->drawn)
                return;
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->drawn = false;
}

/* The line, made of parts that go in this order when the width is short: the time left, the
 * rate, the sizes, the bar; the name, status and percentage stay, cut if need be. */
static void draw(Progress *p, WatchJob *const *jobs, size_t n) {
        char cur[FORMAT_BYTES_MAX], tot[FORMAT_BYTES_MAX], rate[FORMAT_BYTES_MAX + 2] = "",
                left[FORMAT_DURATION_MAX + 8], sizes[2 * FORMAT_BYTES_MAX + 4], head[256], pct[16];
        Totals t = totals(jobs, n);
        unsigned width = columns();
        /* The last column is left free: some terminals wrap when it is written. */
        size_t room = width > 1 ? width - 1 : 1;
        _cleanup_free_ char *line = NULL;
        const char *parts[3];
        size_t n_parts = 3, len;
        int bar = 0;

        if (n == 1)
                snprintf(head, sizeof(head), "%s %s", jobs[0]->id, t.status);
        else
                snprintf(head, sizeof(head), "%s+%zu %s", jobs[0]->id, n - 1, t.status);
        snprintf(pct, sizeof(pct), "%5.1f%%", percent(t.current, t.total));
        snprintf(sizes, sizeof(sizes), "%s/%s", format_bytes(cur, t.current), format_bytes(tot, t.total));
        if (t.rate > 0)
                snprintf(rate, sizeof(rate), "%s/s", format_bytes(cur, t.rate));
        time_left(left, t.end_time);
        parts[0] = sizes;
        parts[1] = rate;
        parts[2] = *left ? left : "";

        for (;;) {
                len = strlen(head) + 1 + strlen(pct);
                for (size_t i = 0; i < n_parts; i++)
                        if (*parts[i])
                                len += 1 + strlen(parts[i]);
                if (len + 3 + BAR_MIN <= room) {
                        bar = (int) (room - len - 3);
                        if (bar > BAR_MAX)
                                bar = BAR_MAX;
                        break;
                }
                if (len <= room && n_parts == 0)
                        break;
                if (n_parts == 0)
                        break;
                n_parts--;
        }

        FILE *f;
        size_t size = 0;
        f = open_memstream(&line, &size);
        if (!f)
                oom();
        fprintf(f, "%s ", head);
        if (bar > 0) {
                int filled = (int) (percent(t.current, t.total) / 100.0 * bar + 0.5);
                fputc('[', f);
                for (int i = 0; i < bar; i++)
                        fputc(i < filled ? '#' : '.', f);
                fputs("] ", f);
        }
        fputs(pct, f);
        for (size_t i = 0; i < n_parts; i++)
                if (*parts[i])
                        fprintf(f, " %s", parts[i]);
        if (fclose(f) != 0)
                oom();

        /* Cut to the width, by characters (ids and statuses are escaped: printable UTF-8). */
        size_t chars = 0, i;
        for (i = 0; line[i]; i++)
                if (((unsigned char) line[i] & 0xc0) != 0x80 && ++chars > room)
                        break;
        line[i] = 0;

        fprintf(stderr, "\r%s\033[K", line);
        fflush(stderr);
        p->drawn = true;
}

static void plain_line(Progress *p, WatchJob *const *jobs, size_t n, const WatchJob *status_changed) {
        Totals t = totals(jobs, n);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        double pc = percent(t.current, t.total);

        if (!status_changed) {
                /* Sparse: 10 s apart and 10 % further, or 5 minutes apart with some progress. */
                bool step = now - p->last_plain_usec >= PLAIN_MIN_INTERVAL_USEC &&
                            pc - p->last_plain_percent >= PLAIN_STEP_PERCENT;
                bool alive = now - p->last_plain_usec >= PLAIN_MAX_INTERVAL_USEC && t.current != p->last_plain_current;
                if (!step && !alive)
                        return;
        }
        if (status_changed) {
                _cleanup_free_ char *s = progress_describe(status_changed, false);
                puts(s);
        } else
                for (size_t i = 0; i < n; i++) {
                        _cleanup_free_ char *s = progress_describe(jobs[i], true);
                        puts(s);
                }
        fflush(stdout);
        p->last_plain_usec = now;
        p->last_plain_percent = pc;
        p->last_plain_current = t.current;
}

void progress_update(Progress *p, WatchJob *const *jobs, size_t n, const WatchJob *status_changed) {
        if (!p || n == 0)
                return;
        if (p->tty)
                draw(p, jobs, n);
        else
                plain_line(p, jobs, n, status_changed);
}

void progress_tick(Progress *p, WatchJob *const *jobs, size_t n) {
        progress_update(p, jobs, n, NULL);
}
