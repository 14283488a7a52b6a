/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bus-errors.h"
#include "bus-options.h"
#include "fs-type.h"
#include "macro.h"

/* Which job types accept an option. */
#define FOR_BACKUP (1U << JOB_TYPE_BACKUP)
#define FOR_MIRROR (1U << JOB_TYPE_MIRROR)
#define FOR_COMMIT (1U << JOB_TYPE_COMMIT)
#define FOR_STREAM (1U << JOB_TYPE_STREAM)
#define FOR_ALL (FOR_BACKUP | FOR_MIRROR | FOR_COMMIT | FOR_STREAM)

#define GRANULARITY_MIN 512U
#define GRANULARITY_MAX (64U << 20)
/* A qcow2 header holds a backing file name of at most this many bytes (QEMU's bound too). */
#define BACKING_FILE_MAX 1023U
/* QEMU's BDRV_BITMAP_MAX_NAME_SIZE. */
#define BITMAP_NAME_MAX 1023U

/* What the options carried as descriptors, until they are put in order (source-fd or image-fd,
 * then chain-fds; target-fd) once all are read. */
typedef struct PassedFds {
        int source;
        int chain[JOB_FILES_CHAIN_MAX - 1];
        size_t n_chain;
        int target;
} PassedFds;

typedef struct Options {
        JobRequest *request;
        PassedFds fds;
} Options;

typedef int (*OptionParser)(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error);

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

static int read_string(sd_bus_message *m, const char *key, size_t max, char **target, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strlen(s) > max)
                return invalid(error, "Option '%s' is longer than %zu bytes", key, max);
        free(*target);
        *target = strdup(s);
        return *target ? 0 : -ENOMEM;
}

static int parse_job_id(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        /* Its rules are the core's (job_create() tells InvalidJobId), only the length is bounded
         * here, a little past the core's bound so that the core names the problem. */
        return read_string(m, key, PATH_MAX - 1, &o->request->job_id, error);
}

static int parse_speed(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return sd_bus_message_read(m, "t", &o->request->speed);
}

static int read_bool(sd_bus_message *m, bool *target) {
        int b, r;

        r = sd_bus_message_read(m, "b", &b);
        if (r < 0)
                return r;
        *target = b;
        return 0;
}

static int parse_auto_finalize(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_bool(m, &o->request->auto_finalize);
}

static int parse_auto_dismiss(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_bool(m, &o->request->auto_dismiss);
}

static int parse_overwrite(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_bool(m, &o->request->overwrite);
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

static int parse_on_source_error(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_on_error(m, key, &o->request->on_source_error, error);
}

static int parse_on_target_error(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_on_error(m, key, &o->request->on_target_error, error);
}

static int parse_sync(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strcmp(s, "full") == 0)
                o->request->sync = SYNC_FULL;
        else if (strcmp(s, "top") == 0)
                o->request->sync = SYNC_TOP;
        else if (o->request->type == JOB_TYPE_BACKUP && strcmp(s, "bitmap") == 0)
                o->request->sync = SYNC_BITMAP;
        else if (o->request->type == JOB_TYPE_BACKUP && strcmp(s, "incremental") == 0)
                o->request->sync = SYNC_INCREMENTAL;
        else if (o->request->type == JOB_TYPE_BACKUP)
                return invalid(error, "Option '%s' must be full, top, bitmap or incremental, not '%s'", key, s);
        else
                return invalid(error, "Option '%s' must be full or top, not '%s'", key, s);
        return 0;
}

static int parse_bitmap(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        /* QEMU's bound on a bitmap's name; whether it exists is the image's to say. */
        return read_string(m, key, BITMAP_NAME_MAX, &o->request->bitmap, error);
}

static int parse_bitmap_mode(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        BitmapSyncMode mode = bitmap_sync_mode_from_string(s);
        if (mode < 0)
                return invalid(error, "Option '%s' must be on-success, never or always, not '%s'", key, s);
        o->request->bitmap_mode = mode;
        o->request->bitmap_mode_given = true;
        return 0;
}

static int parse_target_backing(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        int r;

        r = read_string(m, key, BACKING_FILE_MAX, &o->request->target_backing, error);
        if (r < 0)
                return r;
        if (!*o->request->target_backing)
                return invalid(error, "Option '%s' is empty", key);
        return 0;
}


static int read_format(sd_bus_message *m, const char *key, ImageFormat *target, sd_bus_error *error) {
        const char *s;
        ImageFormat f;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        f = image_format_from_string(s);
        if (f == _IMAGE_FORMAT_MAX)
                return invalid(error, "Option '%s' must be raw or qcow2, not '%s'", key, s);
        *target = f;
        return 0;
}

static int parse_format(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_format(m, key, &o->request->target_format, error);
}

static int parse_source_format(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_format(m, key, &o->request->source_format, error);
}

static int parse_image_format(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        int r;

        r = read_format(m, key, &o->request->source_format, error);
        if (r < 0)
                return r;
        if (o->request->source_format != IMAGE_FORMAT_QCOW2)
                return invalid(error, "Option '%s' must be qcow2: a %s job works on qcow2 images only", key,
                               job_type_to_string(o->request->type));
        return 0;
}

static int parse_base_format(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_format(m, key, &o->request->base_format, error);
}

static int parse_target_backing_format(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_format(m, key, &o->request->target_backing_format, error);
}

static int parse_granularity(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
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
        o->request->granularity = g;
        return 0;
}

static int parse_buf_size(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        int r;

        r = sd_bus_message_read(m, "t", &o->request->buf_size);
        if (r < 0)
                return r;
        if (o->request->buf_size > (UINT64_C(1) << 30))
                return invalid(error, "Option '%s' must be at most 1 GiB", key);
        return 0;
}

static int parse_top(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_string(m, key, PATH_MAX - 1, &o->request->top, error);
}

static int parse_base(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_string(m, key, PATH_MAX - 1, &o->request->base, error);
}

static int parse_backing_file(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_string(m, key, BACKING_FILE_MAX, &o->request->backing_file, error);
}

/* A descriptor from the message, made ours. */
static int read_fd(sd_bus_message *m, const char *key, int *target, sd_bus_error *error) {
        int fd, r;

        r = sd_bus_message_read(m, "h", &fd);
        if (r < 0)
                return r;
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
                if (IN_SET(errno, EMFILE, ENFILE))
                        return sd_bus_error_set(error, BUS_ERROR_LIMIT_EXCEEDED,
                                                "blockjobd has run out of file descriptors");
                return sd_bus_error_set_errnof(error, errno, "Could not take the descriptor of option '%s': %m", key);
        }
        safe_close(*target);
        *target = fd;

        /* A file a process serves (FUSE) could make every call on it wait for ever: refused now,
         * before a job holds it. */
        _cleanup_free_ char *fuse = fd_fuse_type(fd);
        if (fuse)
                return invalid(error, "The descriptor of option '%s' is on a FUSE file system (%s), which blockjobd does not use",
                               key, fuse);
        return 0;
}

static int parse_source_fd(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_fd(m, key, &o->fds.source, error);
}

static int parse_target_fd(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        return read_fd(m, key, &o->fds.target, error);
}

static int parse_chain_fds(sd_bus_message *m, const char *key, Options *o, sd_bus_error *error) {
        PassedFds *f = &o->fds;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "h");
        if (r < 0)
                return r;
        while (!sd_bus_message_at_end(m, false)) {
                if (f->n_chain >= ELEMENTSOF(f->chain))
                        return invalid(error, "Option '%s' holds at most %zu descriptors", key, ELEMENTSOF(f->chain));
                f->chain[f->n_chain] = -EBADF;
                r = read_fd(m, key, &f->chain[f->n_chain], error);
                if (r < 0)
                        return r;
                f->n_chain++;
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
        { "source-format",   "s", FOR_BACKUP | FOR_MIRROR,   parse_source_format },
        { "image-format",    "s", FOR_COMMIT | FOR_STREAM,   parse_image_format },
        { "base-format",     "s", FOR_COMMIT | FOR_STREAM,   parse_base_format },
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
        { "bitmap",          "s", FOR_BACKUP,                parse_bitmap },
        { "bitmap-mode",     "s", FOR_BACKUP,                parse_bitmap_mode },
        { "target-backing",  "s", FOR_BACKUP,                parse_target_backing },
        { "target-backing-format", "s", FOR_BACKUP,          parse_target_backing_format },
};

static void passed_fds_done(PassedFds *f) {
        safe_close(f->source);
        safe_close(f->target);
        for (size_t i = 0; i < f->n_chain; i++)
                safe_close(f->chain[i]);
        *f = (PassedFds) { .source = -EBADF, .target = -EBADF };
}

/* The descriptors in their place: the chain starts with source-fd (image-fd), chain-fds go
 * below it. */
static int take_fds(JobRequest *q, PassedFds *f, sd_bus_error *error) {
        const char *fd_option = IN_SET(q->type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR) ? "source-fd" : "image-fd";

        if (f->n_chain > 0 && f->source < 0)
                return invalid(error, "Option 'chain-fds' needs '%s'", fd_option);
        if (f->source >= 0) {
                assert_se(job_files_add_layer(&q->files, TAKE_FD(f->source)) >= 0);
                for (size_t i = 0; i < f->n_chain; i++)
                        assert_se(job_files_add_layer(&q->files, TAKE_FD(f->chain[i])) >= 0);
                f->n_chain = 0;
                q->chain_passed = true;
        }
        if (f->target >= 0) {
                job_files_set_target_in_place(&q->files, TAKE_FD(f->target));
                q->target_passed = true;
        }
        return 0;
}

/* QEMU's rules for sync, bitmap and bitmap-mode (do_backup_common() in blockdev.c), in its order
 * and with its texts, but for whether the bitmap exists, which only the image can tell (the
 * driver says "Bitmap 'NAME' could not be found" when the job is built). 'incremental' becomes
 * 'bitmap' with on-success, as in QEMU. */
static int check_backup_options(JobRequest *q, sd_bus_error *error) {
        if (IN_SET(q->sync, SYNC_BITMAP, SYNC_INCREMENTAL) && !q->bitmap)
                return invalid(error, "must provide a valid bitmap name for '%s' sync mode",
                               q->sync == SYNC_BITMAP ? "bitmap" : "incremental");
        if (q->sync == SYNC_INCREMENTAL) {
                if (q->bitmap_mode_given && q->bitmap_mode != BITMAP_SYNC_ON_SUCCESS)
                        return invalid(error, "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
                q->sync = SYNC_BITMAP;
                q->bitmap_mode = BITMAP_SYNC_ON_SUCCESS;
                q->bitmap_mode_given = true;
        }
        if (q->bitmap) {
                if (!q->bitmap_mode_given)
                        return invalid(error, "Bitmap sync mode must be given when providing a bitmap");
                if (q->bitmap_mode == BITMAP_SYNC_NEVER && q->sync != SYNC_BITMAP)
                        return invalid(error, "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '%s'",
                                       q->sync == SYNC_TOP ? "top" : "full");
        } else if (q->bitmap_mode_given)
                return invalid(error, "Cannot specify bitmap sync mode without a bitmap");

        if (q->target_backing_format != IMAGE_FORMAT_PROBE && !q->target_backing)
                return invalid(error, "Option 'target-backing-format' needs 'target-backing'");
        if (q->target_backing && q->sync == SYNC_TOP)
                return invalid(error, "Option 'target-backing' cannot be used with sync mode 'top'");
        if (q->target_backing && q->target_format == IMAGE_FORMAT_RAW)
                return invalid(error, "Option 'target-backing' needs a qcow2 target");
        /* A relative name is opened relative to the target's directory, which a descriptor does
         * not tell. */
        if (q->target_backing && q->target_backing[0] != '/' && q->target_passed)
                return invalid(error, "Option 'target-backing' must be an absolute path when 'target-fd' is given");
        return 0;
}

int bus_read_options(sd_bus_message *m, const char *what, const BusOptionsReader *reader, void *userdata,
                     sd_bus_error *error) {
        _cleanup_free_ bool *seen = calloc(MAX(reader->n_keys, (size_t) 1), sizeof(bool));
        int r;

        if (!seen)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents, *signature = NULL;
                char t;
                int i;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                i = reader->find(key, userdata, &signature);
                if (i < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s' for %s", key, what);
                assert((size_t) i < reader->n_keys);
                if (seen[i])
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option '%s' given twice", key);
                seen[i] = true;

                r = sd_bus_message_peek_type(m, &t, &contents);
                if (r < 0)
                        return r;
                if (strcmp(contents, signature) != 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option '%s' must be of type '%s', not '%s'", key, signature, contents);

                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r >= 0)
                        r = reader->read(m, key, (size_t) i, userdata, error);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* The options a job of this type takes, from the table. */
static int find_job_option(const char *key, void *userdata, const char **ret_signature) {
        const Options *o = userdata;

        for (size_t i = 0; i < ELEMENTSOF(job_options); i++)
                if (strcmp(job_options[i].key, key) == 0 && (job_options[i].types & (1U << o->request->type))) {
                        *ret_signature = job_options[i].signature;
                        return (int) i;
                }
        return -ENOENT;
}

static int read_job_option(sd_bus_message *m, const char *key, size_t i, void *userdata, sd_bus_error *error) {
        return job_options[i].parse(m, key, userdata, error);
}

static const BusOptionsReader job_options_reader = {
        .n_keys = ELEMENTSOF(job_options),
        .find = find_job_option,
        .read = read_job_option,
};

int bus_read_job_options(sd_bus_message *m, JobRequest *q, sd_bus_error *error) {
        Options o = { .request = q, .fds = { .source = -EBADF, .target = -EBADF } };
        char what[32];
        int r;

        snprintf(what, sizeof(what), "a %s job", job_type_to_string(q->type));
        r = bus_read_options(m, what, &job_options_reader, &o, error);
        if (r >= 0)
                r = take_fds(q, &o.fds, error);
        if (r >= 0 && q->type == JOB_TYPE_BACKUP)
                r = check_backup_options(q, error);
        passed_fds_done(&o.fds);
        return r;
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

/* Does the path have a "." or ".." component? */
static bool has_dot_component(const char *path) {
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return true;
                p += n;
                p += strspn(p, "/");
        }
        return false;
}

int bus_check_path(const char *what, const char *path, sd_bus_error *error) {
        if (!path || !*path)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path is empty", what);
        if (path[0] != '/')
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path '%s' is not absolute", what, path);
        if (strlen(path) >= PATH_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path is too long", what);
        /* What a polkit rule reads is what the kernel resolves: "/srv/backups/../../home" would
         * read as one place and lead to another (and through a symlink, to a third). */
        if (has_dot_component(path))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s path '%s' has '.' or '..' in it",
                                         what, path);
        return 0;
}
