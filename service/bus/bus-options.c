/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bus-options.h"
#include "macro.h"

/* Which job types accept an option. */
#define FOR_BACKUP (1U << JOB_TYPE_BACKUP)
#define FOR_MIRROR (1U << JOB_TYPE_MIRROR)
#define FOR_COMMIT (1U << JOB_TYPE_COMMIT)
#define FOR_STREAM (1U << JOB_TYPE_STREAM)
#define FOR_ALL (FOR_BACKUP | FOR_MIRROR | FOR_COMMIT | FOR_STREAM)

#define GRANULARITY_MIN 512U
#define GRANULARITY_MAX (64U << 20)

typedef int (*OptionParser)(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error);

typedef struct BusOption {
        const char *key;
        const char *signature;
        unsigned types;
        OptionParser parse;
} BusOption;

_printf_(2, 3) static int invalid(sd_bus_error *error, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = sd_bus_error_setfv(error, SD_BUS_ERROR_INVALID_ARGS, format, ap);
        va_end(ap);
        return r;
}

static int read_string(sd_bus_message *m, const char *key, char **target, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strlen(s) >= PATH_MAX)
                return invalid(error, "Option '%s' is too long", key);
        free(*target);
        *target = strdup(s);
        return *target ? 0 : -ENOMEM;
}

static int parse_job_id(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        /* Its rules are the core's (job_create() tells InvalidJobId), only the length is bounded here. */
        return read_string(m, key, &o->job_id, error);
}

static int parse_speed(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return sd_bus_message_read(m, "t", &o->speed);
}

static int read_bool(sd_bus_message *m, bool *target) {
        int b, r;

        r = sd_bus_message_read(m, "b", &b);
        if (r < 0)
                return r;
        *target = b;
        return 0;
}

static int parse_auto_finalize(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_bool(m, &o->auto_finalize);
}

static int parse_auto_dismiss(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_bool(m, &o->auto_dismiss);
}

static int parse_overwrite(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_bool(m, &o->overwrite);
}

static int read_on_error(sd_bus_message *m, const char *key, JobOnError *target, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        JobOnError e = job_on_error_from_string(s);
        if (e < 0)
                return invalid(error, "Option '%s' must be one of report, ignore, stop, enospc, not '%s'", key, s);
        *target = e;
        return 0;
}

static int parse_on_source_error(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_on_error(m, key, &o->on_source_error, error);
}

static int parse_on_target_error(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_on_error(m, key, &o->on_target_error, error);
}

static int parse_sync(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strcmp(s, "full") == 0)
                o->sync = SYNC_FULL;
        else if (strcmp(s, "top") == 0)
                o->sync = SYNC_TOP;
        else
                return invalid(error, "Option '%s' must be full or top, not '%s'", key, s);
        return 0;
}

static int parse_format(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strcmp(s, "raw") == 0)
                o->format = IMAGE_FORMAT_RAW;
        else if (strcmp(s, "qcow2") == 0)
                o->format = IMAGE_FORMAT_QCOW2;
        else
                return invalid(error, "Option '%s' must be raw or qcow2, not '%s'", key, s);
        return 0;
}

static int parse_granularity(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        uint32_t g;
        int r;

        r = sd_bus_message_read(m, "u", &g);
        if (r < 0)
                return r;
        /* QEMU's wording for QEMU's rule. */
        if (g < GRANULARITY_MIN || g > GRANULARITY_MAX)
                return invalid(error, "Parameter '%s' expects a value in range [512B, 64MB]", key);
        if (g & (g - 1))
                return invalid(error, "Parameter '%s' expects a power of 2", key);
        o->granularity = g;
        return 0;
}

static int parse_buf_size(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        int r;

        r = sd_bus_message_read(m, "t", &o->buf_size);
        if (r < 0)
                return r;
        if (o->buf_size > (UINT64_C(1) << 30))
                return invalid(error, "Option '%s' must be at most 1 GiB", key);
        return 0;
}

static int parse_top(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_string(m, key, &o->top, error);
}

static int parse_base(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_string(m, key, &o->base, error);
}

static int parse_backing_file(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_string(m, key, &o->backing_file, error);
}

/* A descriptor from the message, made ours. */
static int read_fd(sd_bus_message *m, const char *key, int *target, sd_bus_error *error) {
        int fd, r;

        r = sd_bus_message_read(m, "h", &fd);
        if (r < 0)
                return r;
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, errno, "Could not take the descriptor of option '%s': %m", key);
        safe_close(*target);
        *target = fd;
        return 0;
}

static int parse_source_fd(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_fd(m, key, &o->source_fd, error);
}

static int parse_target_fd(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        return read_fd(m, key, &o->target_fd, error);
}

static int parse_chain_fds(sd_bus_message *m, const char *key, JobOptions *o, sd_bus_error *error) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "h");
        if (r < 0)
                return r;
        while (!sd_bus_message_at_end(m, false)) {
                if (o->n_chain_fds >= ELEMENTSOF(o->chain_fds))
                        return invalid(error, "Option '%s' holds at most %zu descriptors", key, ELEMENTSOF(o->chain_fds));
                o->chain_fds[o->n_chain_fds] = -EBADF;
                r = read_fd(m, key, &o->chain_fds[o->n_chain_fds], error);
                if (r < 0)
                        return r;
                o->n_chain_fds++;
        }
        return sd_bus_message_exit_container(m);
}

static const BusOption job_options[] = {
        { "job-id",          "s", FOR_ALL,                   parse_job_id },
        { "speed",           "t", FOR_ALL,                   parse_speed },
        { "auto-finalize",   "b", FOR_ALL,                   parse_auto_finalize },
        { "auto-dismiss",    "b", FOR_ALL,                   parse_auto_dismiss },
        { "on-source-error", "s", FOR_ALL,                   parse_on_source_error },
        { "on-target-error", "s", FOR_ALL,                   parse_on_target_error },
        { "sync",            "s", FOR_BACKUP | FOR_MIRROR,   parse_sync },
        { "format",          "s", FOR_BACKUP | FOR_MIRROR,   parse_format },
        { "overwrite",       "b", FOR_BACKUP | FOR_MIRROR,   parse_overwrite },
        { "granularity",     "u", FOR_MIRROR,                parse_granularity },
        { "buf-size",        "t", FOR_MIRROR,                parse_buf_size },
        { "top",             "s", FOR_COMMIT,                parse_top },
        { "base",            "s", FOR_COMMIT | FOR_STREAM,   parse_base },
        { "backing-file",    "s", FOR_COMMIT | FOR_STREAM,   parse_backing_file },
        { "source-fd",       "h", FOR_BACKUP | FOR_MIRROR,   parse_source_fd },
        { "target-fd",       "h", FOR_BACKUP | FOR_MIRROR,   parse_target_fd },
        { "image-fd",        "h", FOR_COMMIT | FOR_STREAM,   parse_source_fd },
        { "chain-fds",       "ah", FOR_ALL,                  parse_chain_fds },
};

int bus_read_job_options(sd_bus_message *m, JobType type, JobOptions *o, sd_bus_error *error) {
        bool seen[ELEMENTSOF(job_options)] = {};
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;
                const BusOption *opt = NULL;
                size_t i;
                char t;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;

                for (i = 0; i < ELEMENTSOF(job_options); i++)
                        if (strcmp(job_options[i].key, key) == 0 && (job_options[i].types & (1U << type))) {
                                opt = &job_options[i];
                                break;
                        }
                if (!opt)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s' for a %s job",
                                                 key, job_type_to_string(type));
                if (seen[i])
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option '%s' given twice", key);
                seen[i] = true;

                r = sd_bus_message_peek_type(m, &t, &contents);
                if (r < 0)
                        return r;
                if (strcmp(contents, opt->signature) != 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option '%s' must be of type '%s', not '%s'", key, opt->signature,
                                                 contents);

                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        return r;
                r = opt->parse(m, key, o, error);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;

        return sd_bus_message_exit_container(m);
}

void job_options_done(JobOptions *o) {
        safe_close(o->source_fd);
        safe_close(o->target_fd);
        for (size_t i = 0; i < o->n_chain_fds; i++)
                safe_close(o->chain_fds[i]);
        free(o->job_id);
        free(o->top);
        free(o->base);
        free(o->backing_file);
        *o = (JobOptions) JOB_OPTIONS_DEFAULT;
}

int bus_read_transaction_properties(sd_bus_message *m, bool *ret_grouped, sd_bus_error *error) {
        bool seen = false;
        int r;

        *ret_grouped = false;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *mode;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (strcmp(key, "completion-mode") != 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown transaction property '%s'", key);
                if (seen)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Property '%s' given twice", key);
                seen = true;

                r = sd_bus_message_read(m, "v", "s", &mode);
                if (r == -ENXIO)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Property '%s' must be of type 's'", key);
                if (r < 0)
                        return r;
                if (strcmp(mode, "grouped") == 0)
                        *ret_grouped = true;
                else if (strcmp(mode, "individual") != 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Property '%s' must be individual or grouped, not '%s'", key, mode);

                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int bus_check_path(const char *what, const char *path, sd_bus_error *error) {
        if (!path || !*path)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path is empty", what);
        if (path[0] != '/')
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path '%s' is not absolute", what, path);
        if (strlen(path) >= PATH_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path is too long", what);
        return 0;
}
