/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error-message.h"
#include "escape.h"
#include "job-record.h"
#include "job.h"
#include "macro.h"
#include "path-util.h"

/* The longest values fit in a line (a range is at most "<20 digits>+<20 digits> ", an escaped
 * byte four characters). */
_Static_assert(sizeof("COPIED=") + JOB_RECORD_RANGES_MAX * 42 <= JOB_RECORD_LINE_MAX, "COPIED fits in a line");
_Static_assert(sizeof("TRANSACTION_MEMBERS=") + JOB_RECORD_TXN_MEMBERS_MAX * (JOB_ID_MAX + 1) <= JOB_RECORD_LINE_MAX,
               "TRANSACTION_MEMBERS fits in a line");
_Static_assert(sizeof("ERROR=") + JOB_RECORD_ERROR_MAX * 4 <= JOB_RECORD_LINE_MAX, "ERROR fits in a line");
_Static_assert(sizeof("REWRITE_OLD_BACKING=") + PATH_MAX * 4 <= JOB_RECORD_LINE_MAX, "a path fits in a line");

/* QEMU's rule for a mirror's granularity (bus-options.c). */
#define GRANULARITY_MIN 512U
#define GRANULARITY_MAX (64U << 20)
#define BUF_SIZE_MAX (UINT64_C(1) << 30)

static const char *const sync_table[_JOB_RECORD_SYNC_MAX] = {
        [JOB_RECORD_SYNC_FULL] = "full",
        [JOB_RECORD_SYNC_TOP] = "top",
        [JOB_RECORD_SYNC_BITMAP] = "bitmap",
};

static const char *const bitmap_mode_table[_JOB_RECORD_BITMAP_MODE_MAX] = {
        [JOB_RECORD_BITMAP_ON_SUCCESS] = "on-success",
        [JOB_RECORD_BITMAP_ALWAYS] = "always",
        [JOB_RECORD_BITMAP_NEVER] = "never",
};

static const char *const rewrite_table[_JOB_RECORD_REWRITE_MAX] = {
        [JOB_RECORD_REWRITE_NONE] = "none",
        [JOB_RECORD_REWRITE_PENDING] = "pending",
        [JOB_RECORD_REWRITE_DONE] = "done",
};

static int table_lookup(const char *const *table, size_t n, const char *s) {
        for (size_t i = 0; s && i < n; i++)
                if (strcmp(table[i], s) == 0)
                        return (int) i;
        return -1;
}

const char *job_record_sync_to_string(JobRecordSync s) {
        return s >= 0 && s < _JOB_RECORD_SYNC_MAX ? sync_table[s] : NULL;
}

JobRecordSync job_record_sync_from_string(const char *s) {
        return table_lookup(sync_table, ELEMENTSOF(sync_table), s);
}

const char *job_record_bitmap_mode_to_string(JobRecordBitmapMode m) {
        return m >= 0 && m < _JOB_RECORD_BITMAP_MODE_MAX ? bitmap_mode_table[m] : NULL;
}

JobRecordBitmapMode job_record_bitmap_mode_from_string(const char *s) {
        return table_lookup(bitmap_mode_table, ELEMENTSOF(bitmap_mode_table), s);
}

const char *job_record_rewrite_to_string(JobRecordRewrite w) {
        return w >= 0 && w < _JOB_RECORD_REWRITE_MAX ? rewrite_table[w] : NULL;
}

JobRecordRewrite job_record_rewrite_from_string(const char *s) {
        return table_lookup(rewrite_table, ELEMENTSOF(rewrite_table), s);
}

/* ---- the record in memory ------------------------------------------------------------------ */

static JobRecord *record_alloc(void) {
        JobRecord *r = calloc(1, sizeof(*r));

        if (!r)
                return NULL;
        r->type = _JOB_TYPE_INVALID;
        r->status = JOB_STATUS_UNDEFINED;
        r->auto_finalize = true;
        r->auto_dismiss = true;
        r->on_source_error = JOB_ON_ERROR_REPORT;
        r->on_target_error = JOB_ON_ERROR_REPORT;
        r->sync = JOB_RECORD_SYNC_FULL;
        r->source_format = r->target_format = r->base_format = r->target_backing_format = IMAGE_FORMAT_PROBE;
        r->bitmap_mode = JOB_RECORD_BITMAP_ON_SUCCESS;
        r->rewrite = JOB_RECORD_REWRITE_NONE;
        return r;
}

JobRecord *job_record_new(JobType type, uint32_t owner, const char *id) {
        JobRecord *r = record_alloc();

        if (!r)
                return NULL;
        r->type = type;
        r->owner = owner;
        r->status = JOB_STATUS_CREATED;
        r->id = strdup(id);
        if (!r->id)
                return job_record_free(r);
        return r;
}

static void file_done(JobRecordFile *f) {
        free(f->path);
        free(f->fdname);
        *f = (JobRecordFile) {};
}

JobRecord *job_record_free(JobRecord *r) {
        if (!r)
                return NULL;
        free(r->id);
        free(r->error);
        free(r->txn_name);
        for (size_t i = 0; i < r->n_txn_members; i++)
                free(r->txn_members[i]);
        free(r->txn_members);
        free(r->backing_file);
        free(r->target_backing);
        free(r->top_name);
        free(r->base_name);
        free(r->bitmap);
        file_done(&r->source);
        for (size_t i = 0; i < JOB_RECORD_LAYERS_MAX; i++)
                file_done(&r->layers[i]);
        file_done(&r->target);
        file_done(&r->top);
        file_done(&r->base);
        free(r->target_hidden);
        free(r->ranges);
        free(r->rewrite_old_backing);
        free(r->rewrite_new_backing);
        free(r);
        return NULL;
}

void job_record_identity_from_stat(const struct stat *st, JobRecordIdentity *ret) {
        *ret = (JobRecordIdentity) {
                .dev = st->st_dev,
                .ino = st->st_ino,
                .size = st->st_size < 0 ? 0 : (uint64_t) st->st_size,
                .mtime_ns = (int64_t) st->st_mtim.tv_sec * (int64_t) NSEC_PER_SEC + st->st_mtim.tv_nsec,
                .ctime_ns = (int64_t) st->st_ctim.tv_sec * (int64_t) NSEC_PER_SEC + st->st_ctim.tv_nsec,
        };
}

bool job_record_identity_equal(const JobRecordIdentity *a, const JobRecordIdentity *b) {
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
               a->ctime_ns == b->ctime_ns;
}

int job_record_add_range(JobRecord *r, uint64_t start, uint64_t length) {
        uint64_t end;
        size_t first, last, n_new;

        if (length == 0 || start > UINT64_MAX - length)
                return -EINVAL;
        end = start + length;

        /* The ranges it overlaps or touches are [first, last); they become one. */
        for (first = 0; first < r->n_ranges && r->ranges[first].start + r->ranges[first].length < start; first++)
                ;
        for (last = first; last < r->n_ranges && r->ranges[last].start <= end; last++)
                ;

        if (first < last) {
                start = MIN(start, r->ranges[first].start);
                end = MAX(end, r->ranges[last - 1].start + r->ranges[last - 1].length);
        }
        n_new = r->n_ranges - (last - first) + 1;
        if (n_new > JOB_RECORD_RANGES_MAX)
                return -E2BIG;
        if (n_new > r->n_ranges) {
                JobRecordRange *a = reallocarray(r->ranges, n_new, sizeof(*a));
                if (!a)
                        return -ENOMEM;
                r->ranges = a;
        }
        memmove(r->ranges + first + 1, r->ranges + last, (r->n_ranges - last) * sizeof(*r->ranges));
        r->ranges[first] = (JobRecordRange) { .start = start, .length = end - start };
        r->n_ranges = n_new;
        return 0;
}

/* ---- names ----------------------------------------------------------------------------------- */

int job_record_file_name(uint32_t owner, const char *id, char **ret) {
        if (!job_id_is_valid(id) || owner == UINT32_MAX)
                return -EINVAL;
        return asprintf(ret, "%" PRIu32 "-%s.job", owner, id) < 0 ? -ENOMEM : 0;
}

/* Strict decimal: "0" or no leading zero, no sign, no space, no overflow. */
static bool parse_u64_n(const char *s, size_t n, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0 || n > 20 || (s[0] == '0' && n > 1))
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                if (v > (UINT64_MAX - (uint64_t) (s[i] - '0')) / 10)
                        return false;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return true;
}

static bool parse_u64(const char *s, uint64_t *ret) {
        return parse_u64_n(s, strlen(s), ret);
}

/* As parse_u64_n(), with an optional '-' ("-0" refused). */
static bool parse_i64_n(const char *s, size_t n, int64_t *ret) {
        uint64_t v;

        if (n > 0 && s[0] == '-') {
                if (!parse_u64_n(s + 1, n - 1, &v) || v == 0 || v > (uint64_t) INT64_MAX + 1)
                        return false;
                *ret = v == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) v;
                return true;
        }
        if (!parse_u64_n(s, n, &v) || v > INT64_MAX)
                return false;
        *ret = (int64_t) v;
        return true;
}

int job_record_file_name_parse(const char *name, uint32_t *ret_owner, char **ret_id) {
        const char *dash, *dot;
        uint64_t owner;
        size_t n = strlen(name);
        char *id;

        dash = strchr(name, '-');
        if (!dash || n < 4 || strcmp(name + n - 4, ".job") != 0)
                return -EINVAL;
        dot = name + n - 4;
        if (dash > dot || !parse_u64_n(name, (size_t) (dash - name), &owner) || owner >= UINT32_MAX)
                return -EINVAL;
        id = strndup(dash + 1, (size_t) (dot - dash - 1));
        if (!id)
                return -ENOMEM;
        if (!job_id_is_valid(id)) {
                free(id);
                return -EINVAL;
        }
        if (ret_owner)
                *ret_owner = (uint32_t) owner;
        if (ret_id)
                *ret_id = id;
        else
                free(id);
        return 0;
}

bool job_record_file_name_is_valid(const char *name) {
        return job_record_file_name_parse(name, NULL, NULL) == 0;
}

int job_record_hidden_target_name(const char *target, uint32_t owner, const char *id, char **ret) {
        const char *base = strrchr(target, '/');
        char *s;

        base = base ? base + 1 : target;
        if (!*base)
                return -EINVAL;
        if (asprintf(&s, ".%s.blockjobd-%" PRIu32 "-%s", base, owner, id) < 0)
                return -ENOMEM;
        if (strlen(s) > NAME_MAX) {
                free(s);
                return -ENAMETOOLONG;
        }
        *ret = s;
        return 0;
}

int job_record_fdname(uint32_t owner, const char *id, const char *role, char **ret) {
        return asprintf(ret, "%" PRIu32 "-%s-%s", owner, id, role) < 0 ? -ENOMEM : 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

enum {
        K_VERSION,
        K_ID,
        K_TYPE,
        K_OWNER,
        K_STATUS,
        K_USER_PAUSED,
        K_ERROR,
        K_TRANSACTION,
        K_TRANSACTION_MEMBERS,
        K_AUTO_FINALIZE,
        K_AUTO_DISMISS,
        K_SPEED,
        K_ON_SOURCE_ERROR,
        K_ON_TARGET_ERROR,
        K_SYNC,
        K_SOURCE_FORMAT,
        K_TARGET_FORMAT,
        K_BASE_FORMAT,
        K_OVERWRITE,
        K_GRANULARITY,
        K_BUF_SIZE,
        K_BACKING_FILE,
        K_BITMAP,
        K_BITMAP_MODE,
        K_TARGET_BACKING,
        K_TARGET_BACKING_FORMAT,
        K_TOP_NAME,
        K_BASE_NAME,
        K_TARGET_HIDDEN,
        K_COPIED,
        K_OFFSET,
        K_REWRITE,
        K_REWRITE_OLD_BACKING,
        K_REWRITE_NEW_BACKING,
        _K_STATIC_MAX,
};

/* Each file role has three keys: ROLE (the path), ROLE_IDENTITY and ROLE_FDNAME. */
enum { ROLE_SOURCE, ROLE_TARGET, ROLE_TOP, ROLE_BASE, ROLE_LAYER1, _ROLE_MAX = ROLE_LAYER1 + JOB_RECORD_LAYERS_MAX };
enum { SUB_PATH, SUB_IDENTITY, SUB_FDNAME, _SUB_MAX };
#define K_FILE(role, sub) (_K_STATIC_MAX + (role) * _SUB_MAX + (sub))
#define _K_MAX K_FILE(_ROLE_MAX, 0)

#define T(x) (1U << JOB_TYPE_##x)
#define T_ALL (T(COMMIT) | T(STREAM) | T(MIRROR) | T(BACKUP))
#define T_COPY (T(MIRROR) | T(BACKUP))
#define T_CHAIN (T(COMMIT) | T(STREAM))

static const struct {
        const char *name;
        unsigned types;         /* the job types it is for */
        unsigned required;      /* ... and those it must be there for */
} keys[_K_STATIC_MAX] = {
        [K_VERSION]             = { JOB_RECORD_VERSION_KEY, T_ALL, T_ALL },
        [K_ID]                  = { "ID", T_ALL, T_ALL },
        [K_TYPE]                = { "TYPE", T_ALL, T_ALL },
        [K_OWNER]               = { "OWNER", T_ALL, T_ALL },
        [K_STATUS]              = { "STATUS", T_ALL, T_ALL },
        [K_USER_PAUSED]         = { "USER_PAUSED", T_ALL, T_ALL },
        [K_ERROR]               = { "ERROR", T_ALL, 0 },
        [K_TRANSACTION]         = { "TRANSACTION", T_ALL, 0 },
        [K_TRANSACTION_MEMBERS] = { "TRANSACTION_MEMBERS", T_ALL, 0 },
        [K_AUTO_FINALIZE]       = { "AUTO_FINALIZE", T_ALL, T_ALL },
        [K_AUTO_DISMISS]        = { "AUTO_DISMISS", T_ALL, T_ALL },
        [K_SPEED]               = { "SPEED", T_ALL, T_ALL },
        [K_ON_SOURCE_ERROR]     = { "ON_SOURCE_ERROR", T_ALL, T_ALL },
        [K_ON_TARGET_ERROR]     = { "ON_TARGET_ERROR", T_ALL, T_ALL },
        [K_SYNC]                = { "SYNC", T_COPY, T_COPY },
        [K_SOURCE_FORMAT]       = { "SOURCE_FORMAT", T_ALL, 0 },
        [K_TARGET_FORMAT]       = { "TARGET_FORMAT", T_COPY, 0 },
        [K_BASE_FORMAT]         = { "BASE_FORMAT", T_CHAIN, 0 },
        [K_OVERWRITE]           = { "OVERWRITE", T_COPY, T_COPY },
        [K_GRANULARITY]         = { "GRANULARITY", T(MIRROR), 0 },
        [K_BUF_SIZE]            = { "BUF_SIZE", T(MIRROR), 0 },
        [K_BACKING_FILE]        = { "BACKING_FILE", T_CHAIN, 0 },
        [K_BITMAP]              = { "BITMAP", T(BACKUP), 0 },
        [K_BITMAP_MODE]         = { "BITMAP_MODE", T(BACKUP), 0 },
        [K_TARGET_BACKING]      = { "TARGET_BACKING", T(BACKUP), 0 },
        [K_TARGET_BACKING_FORMAT] = { "TARGET_BACKING_FORMAT", T(BACKUP), 0 },
        [K_TOP_NAME]            = { "TOP_NAME", T(COMMIT), 0 },
        [K_BASE_NAME]           = { "BASE_NAME", T_CHAIN, 0 },
        [K_TARGET_HIDDEN]       = { "TARGET_HIDDEN", T_COPY, 0 },
        [K_COPIED]              = { "COPIED", T(BACKUP), 0 },
        [K_OFFSET]              = { "OFFSET", T_CHAIN, T_CHAIN },
        [K_REWRITE]             = { "REWRITE", T_CHAIN, 0 },
        [K_REWRITE_OLD_BACKING] = { "REWRITE_OLD_BACKING", T_CHAIN, 0 },
        [K_REWRITE_NEW_BACKING] = { "REWRITE_NEW_BACKING", T_CHAIN, 0 },
};

static const char *const role_names[ROLE_LAYER1] = {
        [ROLE_SOURCE] = "SOURCE",
        [ROLE_TARGET] = "TARGET",
        [ROLE_TOP] = "TOP",
        [ROLE_BASE] = "BASE",
};
static const char *const sub_suffixes[_SUB_MAX] = {
        [SUB_PATH] = "",
        [SUB_IDENTITY] = "_IDENTITY",
        [SUB_FDNAME] = "_FDNAME",
};

/* The types a role's file is for, and those it must be there for. */
static unsigned role_types(int role) {
        return role == ROLE_TARGET ? T_COPY : role == ROLE_TOP ? T(COMMIT) : role == ROLE_BASE ? T_CHAIN : T_ALL;
}

static unsigned role_required(int role) {
        return role == ROLE_SOURCE ? T_ALL : role == ROLE_TARGET ? T_COPY : 0;
}

#define KEY_NAME_MAX 32

static const char *key_name(int k, char buf[static KEY_NAME_MAX]) {
        int role, sub;

        if (k < _K_STATIC_MAX)
                return keys[k].name;
        role = (k - _K_STATIC_MAX) / _SUB_MAX;
        sub = (k - _K_STATIC_MAX) % _SUB_MAX;
        if (role < ROLE_LAYER1)
                (void) snprintf(buf, KEY_NAME_MAX, "%s%s", role_names[role], sub_suffixes[sub]);
        else
                (void) snprintf(buf, KEY_NAME_MAX, "LAYER%d%s", role - ROLE_LAYER1 + 1, sub_suffixes[sub]);
        return buf;
}

static const char *role_fdname_role(int role, char buf[static KEY_NAME_MAX]) {
        static const char *const names[ROLE_LAYER1] = {
                [ROLE_SOURCE] = "source", [ROLE_TARGET] = "target", [ROLE_TOP] = "top", [ROLE_BASE] = "base",
        };
        if (role < ROLE_LAYER1)
                return names[role];
        (void) snprintf(buf, KEY_NAME_MAX, "layer%d", role - ROLE_LAYER1 + 1);
        return buf;
}

/* The key 'key' (of length n), or -1. */
static int key_lookup(const char *key, size_t n) {
        for (int k = 0; k < _K_STATIC_MAX; k++)
                if (strlen(keys[k].name) == n && memcmp(keys[k].name, key, n) == 0)
                        return k;

        /* The empty suffix (the path) last: "SOURCE_IDENTITY" is the identity of SOURCE. */
        for (int sub = _SUB_MAX - 1; sub >= 0; sub--) {
                size_t m = strlen(sub_suffixes[sub]);
                uint64_t layer;

                if (n < m || memcmp(key + n - m, sub_suffixes[sub], m) != 0)
                        continue;
                for (int role = 0; role < ROLE_LAYER1; role++)
                        if (strlen(role_names[role]) == n - m && memcmp(role_names[role], key, n - m) == 0)
                                return K_FILE(role, sub);
                if (n - m > 5 && memcmp(key, "LAYER", 5) == 0 && parse_u64_n(key + 5, n - m - 5, &layer) &&
                    layer >= 1 && layer <= JOB_RECORD_LAYERS_MAX)
                        return K_FILE(ROLE_LAYER1 + (int) layer - 1, sub);
        }
        return -1;
}

static JobRecordFile *record_file(JobRecord *r, int role) {
        switch (role) {
        case ROLE_SOURCE:
                return &r->source;
        case ROLE_TARGET:
                return &r->target;
        case ROLE_TOP:
                return &r->top;
        case ROLE_BASE:
                return &r->base;
        default:
                return &r->layers[role - ROLE_LAYER1];
        }
}

static const JobRecordFile *record_file_const(const JobRecord *r, int role) {
        return record_file((JobRecord *) r, role);
}

/* ---- messages -------------------------------------------------------------------------------- */

typedef struct Context {
        const char *file;               /* the record's file name, or NULL */
        unsigned *lines;                /* the line each key was on (0: not there); NULL: not parsing */
        char **ret_error;
        int error;                      /* -EBADMSG when parsing, -EINVAL when checking a record in memory */
} Context;

static int fail_at(const Context *c, unsigned line, int key, const char *format, ...) _printf_(4, 5);
static int fail_at(const Context *c, unsigned line, int key, const char *format, ...) {
        _cleanup_free_ char *msg = NULL, *where = NULL;
        char buf[KEY_NAME_MAX];
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&msg, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;

        if (c->file)
                r = asprintf(&where, "Job record '%s'", c->file);
        else
                r = asprintf(&where, "Job record");
        if (r < 0)
                return -ENOMEM;

        if (line > 0 && key >= 0)
                return error_message(c->ret_error, c->error, "%s, line %u: %s: %s", where, line, key_name(key, buf), msg);
        if (line > 0)
                return error_message(c->ret_error, c->error, "%s, line %u: %s", where, line, msg);
        if (key >= 0)
                return error_message(c->ret_error, c->error, "%s: %s: %s", where, key_name(key, buf), msg);
        return error_message(c->ret_error, c->error, "%s: %s", where, msg);
}

static unsigned line_of_key(const Context *c, int key) {
        return c->lines && key >= 0 ? c->lines[key] : 0;
}

#define fail(c, key, ...) fail_at((c), line_of_key((c), (key)), (key), __VA_ARGS__)

/* ---- checks ---------------------------------------------------------------------------------- */

static bool path_is_normalized_absolute(const char *p) {
        _cleanup_free_ char *s = NULL;

        if (p[0] != '/' || strlen(p) >= PATH_MAX)
                return false;
        s = path_simplify_dup(p);
        return s && strcmp(s, p) == 0;
}

static bool streq_ptr(const char *a, const char *b) {
        return a == b || (a && b && strcmp(a, b) == 0);
}

static int check_file(const Context *c, const JobRecord *r, int role) {
        const JobRecordFile *f = record_file_const(r, role);
        unsigned t = 1U << r->type;
        char buf[KEY_NAME_MAX];

        if (!f->present) {
                if (f->path || f->fdname)
                        return fail(c, K_FILE(role, SUB_IDENTITY), "a file with no identity");
                if (role_required(role) & t)
                        return fail(c, K_FILE(role, SUB_IDENTITY), "required for %s jobs", job_type_to_string(r->type));
                return 0;
        }
        if (!(role_types(role) & t))
                return fail(c, K_FILE(role, SUB_IDENTITY), "not for %s jobs", job_type_to_string(r->type));
        /* A layer reached through its parent's backing name has neither: it is found again the
         * same way, and only compared. */
        if (!f->path && !f->fdname && role < ROLE_LAYER1)
                return fail(c, K_FILE(role, SUB_IDENTITY), "neither a path nor a descriptor");
        if (f->path && !path_is_normalized_absolute(f->path))
                return fail(c, K_FILE(role, SUB_PATH), "'%s' is not an absolute, normalized path", f->path);
        if (f->identity.size > INT64_MAX)
                return fail(c, K_FILE(role, SUB_IDENTITY), "size out of range");
        if (f->fdname) {
                _cleanup_free_ char *expected = NULL;
                if (job_record_fdname(r->owner, r->id, role_fdname_role(role, buf), &expected) < 0)
                        return -ENOMEM;
                if (strcmp(f->fdname, expected) != 0)
                        return fail(c, K_FILE(role, SUB_FDNAME), "'%s' is not this job's (%s)", f->fdname, expected);
        }
        return 0;
}

static int check_type_field(const Context *c, const JobRecord *r, int key, bool set) {
        if (set && !(keys[key].types & (1U << r->type)))
                return fail(c, key, "not for %s jobs", job_type_to_string(r->type));
        return 0;
}

static int check_text(const Context *c, int key, const char *s, size_t max, bool empty_ok) {
        size_t n;

        if (!s)
                return 0;
        n = strlen(s);
        if (n == 0 && !empty_ok)
                return fail(c, key, "empty");
        if (n > max)
                return fail(c, key, "longer than %zu bytes", max);
        return 0;
}

/* Everything about the record's content; the text's own errors (syntax, duplicates, keys for
 * another type) the parser finds before. */
static int validate(const Context *c, const JobRecord *r) {
        int q;

        if (!r->id || !job_id_is_valid(r->id))
                return fail(c, K_ID, "'%s' is not a valid job id", strempty(r->id));
        if (r->type < 0 || r->type >= _JOB_TYPE_MAX)
                return fail(c, K_TYPE, "not a job type");
        if (r->owner == UINT32_MAX)
                return fail(c, K_OWNER, "out of range");
        if (r->status <= JOB_STATUS_UNDEFINED || r->status >= JOB_STATUS_NULL)
                return fail(c, K_STATUS, "'%s' is not the status of a recorded job",
                            strempty(job_status_to_string(r->status)));

        if (r->error) {
                if (!IN_SET(r->status, JOB_STATUS_ABORTING, JOB_STATUS_CONCLUDED))
                        return fail(c, K_ERROR, "a job in status %s has no error", job_status_to_string(r->status));
                if ((q = check_text(c, K_ERROR, r->error, JOB_RECORD_ERROR_MAX, false)) < 0)
                        return q;
        }

        if (!r->txn_name != !r->txn_members)
                return fail(c, r->txn_name ? K_TRANSACTION_MEMBERS : K_TRANSACTION, "missing its companion");
        if (r->txn_name) {
                bool self = false;

                if (!job_id_is_valid(r->txn_name))
                        return fail(c, K_TRANSACTION, "'%s' is not a valid transaction name", r->txn_name);
                if (r->n_txn_members == 0 || r->n_txn_members > JOB_RECORD_TXN_MEMBERS_MAX)
                        return fail(c, K_TRANSACTION_MEMBERS, "%zu members, not 1 to %u", r->n_txn_members,
                                    JOB_RECORD_TXN_MEMBERS_MAX);
                for (size_t i = 0; i < r->n_txn_members; i++) {
                        if (!job_id_is_valid(r->txn_members[i]))
                                return fail(c, K_TRANSACTION_MEMBERS, "'%s' is not a valid job id", r->txn_members[i]);
                        /* Quadratic, but at most half a million comparisons of short strings. */
                        for (size_t j = 0; j < i; j++)
                                if (strcmp(r->txn_members[i], r->txn_members[j]) == 0)
                                        return fail(c, K_TRANSACTION_MEMBERS, "'%s' listed twice", r->txn_members[i]);
                        self = self || strcmp(r->txn_members[i], r->id) == 0;
                }
                if (!self)
                        return fail(c, K_TRANSACTION_MEMBERS, "this job ('%s') is not a member", r->id);
        }

        if (!job_on_error_to_string(r->on_source_error))
                return fail(c, K_ON_SOURCE_ERROR, "out of range");
        if (!job_on_error_to_string(r->on_target_error))
                return fail(c, K_ON_TARGET_ERROR, "out of range");
        if (!job_record_sync_to_string(r->sync))
                return fail(c, K_SYNC, "out of range");
        if ((q = check_type_field(c, r, K_SYNC, r->sync != JOB_RECORD_SYNC_FULL)) < 0)
                return q;
        if (r->source_format < 0 || r->source_format >= _IMAGE_FORMAT_MAX)
                return fail(c, K_SOURCE_FORMAT, "out of range");
        if (r->target_format < 0 || r->target_format >= _IMAGE_FORMAT_MAX)
                return fail(c, K_TARGET_FORMAT, "out of range");
        if ((q = check_type_field(c, r, K_TARGET_FORMAT, r->target_format != IMAGE_FORMAT_PROBE)) < 0)
                return q;
        if (r->base_format < 0 || r->base_format >= _IMAGE_FORMAT_MAX)
                return fail(c, K_BASE_FORMAT, "out of range");
        if ((q = check_type_field(c, r, K_BASE_FORMAT, r->base_format != IMAGE_FORMAT_PROBE)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_OVERWRITE, r->overwrite)) < 0)
                return q;
        if (r->granularity != 0 && (r->granularity < GRANULARITY_MIN || r->granularity > GRANULARITY_MAX ||
                                    (r->granularity & (r->granularity - 1))))
                return fail(c, K_GRANULARITY, "%" PRIu32 " is not a power of 2 in [512B, 64MB]", r->granularity);
        if ((q = check_type_field(c, r, K_GRANULARITY, r->granularity != 0)) < 0)
                return q;
        if (r->buf_size > BUF_SIZE_MAX)
                return fail(c, K_BUF_SIZE, "more than 1 GiB");
        if ((q = check_type_field(c, r, K_BUF_SIZE, r->buf_size != 0)) < 0)
                return q;
        /* backing-file "" is what a caller may give (the bus takes it): recorded as given. */
        if ((q = check_text(c, K_BACKING_FILE, r->backing_file, PATH_MAX - 1, true)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_BACKING_FILE, r->backing_file)) < 0)
                return q;

        if ((q = check_text(c, K_BITMAP, r->bitmap, JOB_RECORD_BITMAP_NAME_MAX, false)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_BITMAP, r->bitmap)) < 0)
                return q;
        if (!job_record_bitmap_mode_to_string(r->bitmap_mode))
                return fail(c, K_BITMAP_MODE, "out of range");
        if (!r->bitmap && r->bitmap_mode != JOB_RECORD_BITMAP_ON_SUCCESS)
                return fail(c, K_BITMAP_MODE, "without a bitmap");
        if (r->sync == JOB_RECORD_SYNC_BITMAP && !r->bitmap)
                return fail(c, K_SYNC, "sync=bitmap without a bitmap");
        /* target-backing: a name the target records, as the caller gave it (not empty). */
        if ((q = check_text(c, K_TARGET_BACKING, r->target_backing, PATH_MAX - 1, false)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_TARGET_BACKING, r->target_backing)) < 0)
                return q;
        if (r->target_backing_format < 0 || r->target_backing_format >= _IMAGE_FORMAT_MAX)
                return fail(c, K_TARGET_BACKING_FORMAT, "out of range");
        if (!r->target_backing && r->target_backing_format != IMAGE_FORMAT_PROBE)
                return fail(c, K_TARGET_BACKING_FORMAT, "without a target backing file");
        /* top and base as the caller named them: a layer's name as the chain spells it. */
        if ((q = check_text(c, K_TOP_NAME, r->top_name, PATH_MAX - 1, false)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_TOP_NAME, r->top_name)) < 0)
                return q;
        if ((q = check_text(c, K_BASE_NAME, r->base_name, PATH_MAX - 1, false)) < 0)
                return q;
        if ((q = check_type_field(c, r, K_BASE_NAME, r->base_name)) < 0)
                return q;

        if ((q = check_file(c, r, ROLE_SOURCE)) < 0 || (q = check_file(c, r, ROLE_TARGET)) < 0 ||
            (q = check_file(c, r, ROLE_TOP)) < 0 || (q = check_file(c, r, ROLE_BASE)) < 0)
                return q;
        if (r->n_layers > JOB_RECORD_LAYERS_MAX)
                return fail(c, -1, "more than %u layers", JOB_RECORD_LAYERS_MAX);
        for (size_t i = 0; i < JOB_RECORD_LAYERS_MAX; i++) {
                int role = ROLE_LAYER1 + (int) i;
                if (r->layers[i].present != (i < r->n_layers))
                        return fail(c, K_FILE(role, SUB_IDENTITY), "layers are not numbered 1 to %zu", r->n_layers);
                if ((q = check_file(c, r, role)) < 0)
                        return q;
        }

        if (r->target_hidden) {
                _cleanup_free_ char *expected = NULL;

                if ((q = check_type_field(c, r, K_TARGET_HIDDEN, true)) < 0)
                        return q;
                if (!r->target.path || r->target.fdname)
                        return fail(c, K_TARGET_HIDDEN, "a target passed as a descriptor is written in place");
                q = job_record_hidden_target_name(r->target.path, r->owner, r->id, &expected);
                if (q == -ENOMEM)
                        return q;
                if (q < 0 || strcmp(expected, r->target_hidden) != 0)
                        return fail(c, K_TARGET_HIDDEN, "'%s' is not this job's hidden name for '%s'",
                                    r->target_hidden, r->target.path);
        }

        if ((q = check_type_field(c, r, K_COPIED, r->n_ranges > 0)) < 0)
                return q;
        if (r->n_ranges > JOB_RECORD_RANGES_MAX)
                return fail(c, K_COPIED, "more than %u ranges", JOB_RECORD_RANGES_MAX);
        for (size_t i = 0; i < r->n_ranges; i++) {
                const JobRecordRange *g = r->ranges + i;

                if (g->length == 0)
                        return fail(c, K_COPIED, "range %zu is empty", i + 1);
                if (g->start > UINT64_MAX - g->length)
                        return fail(c, K_COPIED, "range %zu ends beyond 2^64", i + 1);
                if (i > 0 && g->start <= g[-1].start + g[-1].length)
                        return fail(c, K_COPIED, "range %zu overlaps, touches or comes before range %zu", i + 1, i);
        }

        if ((q = check_type_field(c, r, K_OFFSET, r->offset != 0)) < 0)
                return q;
        if (!job_record_rewrite_to_string(r->rewrite))
                return fail(c, K_REWRITE, "out of range");
        if ((q = check_type_field(c, r, K_REWRITE, r->rewrite != JOB_RECORD_REWRITE_NONE)) < 0)
                return q;
        if ((r->rewrite == JOB_RECORD_REWRITE_NONE) != !r->rewrite_old_backing)
                return fail(c, K_REWRITE_OLD_BACKING, "only with a rewrite, and then required");
        if ((r->rewrite == JOB_RECORD_REWRITE_NONE) != !r->rewrite_new_backing)
                return fail(c, K_REWRITE_NEW_BACKING, "only with a rewrite, and then required");
        if ((q = check_text(c, K_REWRITE_OLD_BACKING, r->rewrite_old_backing, PATH_MAX - 1, true)) < 0 ||
            (q = check_text(c, K_REWRITE_NEW_BACKING, r->rewrite_new_backing, PATH_MAX - 1, true)) < 0)
                return q;

        return 0;
}

int job_record_validate(const JobRecord *r, char **ret_error) {
        Context c = { .ret_error = ret_error, .error = -EINVAL };
        return validate(&c, r);
}

/* ---- writing --------------------------------------------------------------------------------- */

static void put_escaped(FILE *f, const char *key, const char *value, bool *oom) {
        _cleanup_free_ char *e = xescape(value);

        if (!e) {
                *oom = true;
                return;
        }
        fprintf(f, "%s=%s\n", key, e);
}

static void put_file(FILE *f, const JobRecord *r, int role, bool *oom) {
        const JobRecordFile *file = record_file_const(r, role);
        char buf[KEY_NAME_MAX];

        if (!file->present)
                return;
        if (file->path)
                put_escaped(f, key_name(K_FILE(role, SUB_PATH), buf), file->path, oom);
        fprintf(f, "%s=dev=%" PRIu64 " ino=%" PRIu64 " size=%" PRIu64 " mtime=%" PRIi64 " ctime=%" PRIi64 "\n",
                key_name(K_FILE(role, SUB_IDENTITY), buf), file->identity.dev, file->identity.ino, file->identity.size,
                file->identity.mtime_ns, file->identity.ctime_ns);
        if (file->fdname)
                fprintf(f, "%s=%s\n", key_name(K_FILE(role, SUB_FDNAME), buf), file->fdname);
}

static const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

int job_record_serialize(const JobRecord *r, char **ret, size_t *ret_size, char **ret_error) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        bool oom = false;
        unsigned t;
        FILE *f;
        int q;

        q = job_record_validate(r, ret_error);
        if (q < 0)
                return q;
        t = 1U << r->type;

        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;

        fprintf(f, "%s=%d\n", JOB_RECORD_VERSION_KEY, JOB_RECORD_VERSION);
        fprintf(f, "ID=%s\n", r->id);
        fprintf(f, "TYPE=%s\n", job_type_to_string(r->type));
        fprintf(f, "OWNER=%" PRIu32 "\n", r->owner);
        fprintf(f, "STATUS=%s\n", job_status_to_string(r->status));
        fprintf(f, "USER_PAUSED=%s\n", yes_no(r->user_paused));
        if (r->error)
                put_escaped(f, "ERROR", r->error, &oom);
        if (r->txn_name) {
                fprintf(f, "TRANSACTION=%s\nTRANSACTION_MEMBERS=", r->txn_name);
                for (size_t i = 0; i < r->n_txn_members; i++)
                        fprintf(f, "%s%s", i > 0 ? " " : "", r->txn_members[i]);
                fputc('\n', f);
        }

        fprintf(f, "AUTO_FINALIZE=%s\n", yes_no(r->auto_finalize));
        fprintf(f, "AUTO_DISMISS=%s\n", yes_no(r->auto_dismiss));
        fprintf(f, "SPEED=%" PRIu64 "\n", r->speed);
        fprintf(f, "ON_SOURCE_ERROR=%s\n", job_on_error_to_string(r->on_source_error));
        fprintf(f, "ON_TARGET_ERROR=%s\n", job_on_error_to_string(r->on_target_error));
        if (t & T_COPY)
                fprintf(f, "SYNC=%s\n", job_record_sync_to_string(r->sync));
        if (r->source_format != IMAGE_FORMAT_PROBE)
                fprintf(f, "SOURCE_FORMAT=%s\n", image_format_to_string(r->source_format));
        if (r->target_format != IMAGE_FORMAT_PROBE)
                fprintf(f, "TARGET_FORMAT=%s\n", image_format_to_string(r->target_format));
        if (r->base_format != IMAGE_FORMAT_PROBE)
                fprintf(f, "BASE_FORMAT=%s\n", image_format_to_string(r->base_format));
        if (t & T_COPY)
                fprintf(f, "OVERWRITE=%s\n", yes_no(r->overwrite));
        if (r->granularity != 0)
                fprintf(f, "GRANULARITY=%" PRIu32 "\n", r->granularity);
        if (r->buf_size != 0)
                fprintf(f, "BUF_SIZE=%" PRIu64 "\n", r->buf_size);
        if (r->backing_file)
                put_escaped(f, "BACKING_FILE", r->backing_file, &oom);
        if (r->bitmap) {
                put_escaped(f, "BITMAP", r->bitmap, &oom);
                fprintf(f, "BITMAP_MODE=%s\n", job_record_bitmap_mode_to_string(r->bitmap_mode));
        }
        if (r->target_backing)
                put_escaped(f, "TARGET_BACKING", r->target_backing, &oom);
        if (r->target_backing_format != IMAGE_FORMAT_PROBE)
                fprintf(f, "TARGET_BACKING_FORMAT=%s\n", image_format_to_string(r->target_backing_format));
        if (r->top_name)
                put_escaped(f, "TOP_NAME", r->top_name, &oom);
        if (r->base_name)
                put_escaped(f, "BASE_NAME", r->base_name, &oom);

        put_file(f, r, ROLE_SOURCE, &oom);
        for (size_t i = 0; i < r->n_layers; i++)
                put_file(f, r, ROLE_LAYER1 + (int) i, &oom);
        put_file(f, r, ROLE_TOP, &oom);
        put_file(f, r, ROLE_BASE, &oom);
        put_file(f, r, ROLE_TARGET, &oom);
        if (r->target_hidden)
                put_escaped(f, "TARGET_HIDDEN", r->target_hidden, &oom);

        if (r->n_ranges > 0) {
                fputs("COPIED=", f);
                for (size_t i = 0; i < r->n_ranges; i++)
                        fprintf(f, "%s%" PRIu64 "+%" PRIu64, i > 0 ? " " : "", r->ranges[i].start, r->ranges[i].length);
                fputc('\n', f);
        }
        if (t & T_CHAIN)
                fprintf(f, "OFFSET=%" PRIu64 "\n", r->offset);
        if (r->rewrite != JOB_RECORD_REWRITE_NONE) {
                fprintf(f, "REWRITE=%s\n", job_record_rewrite_to_string(r->rewrite));
                put_escaped(f, "REWRITE_OLD_BACKING", r->rewrite_old_backing, &oom);
                put_escaped(f, "REWRITE_NEW_BACKING", r->rewrite_new_backing, &oom);
        }

        if (ferror(f) || oom) {
                fclose(f);
                return -ENOMEM;
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        if (size > JOB_RECORD_SIZE_MAX)
                return error_message(ret_error, -E2BIG, "Job record of '%s' would be %zu bytes, more than %" PRIu64,
                                     r->id, size, JOB_RECORD_SIZE_MAX);

        *ret = TAKE_PTR(text);
        if (ret_size)
                *ret_size = size;
        return 0;
}

/* ---- reading --------------------------------------------------------------------------------- */

static int parse_bool(const Context *c, int key, const char *v, bool *ret) {
        if (strcmp(v, "yes") == 0)
                *ret = true;
        else if (strcmp(v, "no") == 0)
                *ret = false;
        else
                return fail(c, key, "'%s' is neither yes nor no", v);
        return 0;
}

static int parse_number(const Context *c, int key, const char *v, uint64_t max, uint64_t *ret) {
        if (!parse_u64(v, ret))
                return fail(c, key, "'%s' is not a number", v);
        if (*ret > max)
                return fail(c, key, "%s is out of range", v);
        return 0;
}

static int parse_escaped(const Context *c, int key, const char *v, char **ret) {
        char *s;
        int q = xunescape(v, &s);

        if (q == -ENOMEM)
                return q;
        if (q < 0)
                return fail(c, key, "bad escaping");
        free(*ret);
        *ret = s;
        return 0;
}

static int parse_format(const Context *c, int key, const char *v, ImageFormat *ret) {
        ImageFormat f = image_format_from_string(v);

        if (f == IMAGE_FORMAT_PROBE || f >= _IMAGE_FORMAT_MAX)
                return fail(c, key, "'%s' is not an image format", v);
        *ret = f;
        return 0;
}

static int parse_enum(const Context *c, int key, const char *v, int value, int *ret) {
        if (value < 0)
                return fail(c, key, "'%s' is not a known value", v);
        *ret = value;
        return 0;
}

static void free_words(char **words, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(words[i]);
        free(words);
}

/* "a b c": single spaces, no empty item, at most 'max' items. */
static int split_words(const Context *c, int key, const char *v, size_t max, char ***ret, size_t *ret_n) {
        char **words = NULL;
        size_t n = 0;
        int q = 0;

        for (const char *p = v;; p++) {
                size_t len = strcspn(p, " ");
                char **a;

                if (len == 0) {
                        q = fail(c, key, "an empty item");
                        break;
                }
                if (n >= max) {
                        q = fail(c, key, "more than %zu items", max);
                        break;
                }
                a = reallocarray(words, n + 1, sizeof(char *));
                if (!a) {
                        q = -ENOMEM;
                        break;
                }
                words = a;
                words[n] = strndup(p, len);
                if (!words[n]) {
                        q = -ENOMEM;
                        break;
                }
                n++;
                p += len;
                if (!*p)
                        break;
        }
        if (q < 0) {
                free_words(words, n);
                return q;
        }
        *ret = words;
        *ret_n = n;
        return 0;
}

static int parse_ranges(const Context *c, const char *v, JobRecord *r) {
        char **words = NULL;
        size_t n = 0;
        int q;

        q = split_words(c, K_COPIED, v, JOB_RECORD_RANGES_MAX, &words, &n);
        if (q < 0)
                return q;
        r->ranges = calloc(n, sizeof(JobRecordRange));
        if (!r->ranges) {
                free_words(words, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *plus = strchr(words[i], '+');

                if (!plus || !parse_u64_n(words[i], (size_t) (plus - words[i]), &r->ranges[i].start) ||
                    !parse_u64(plus + 1, &r->ranges[i].length)) {
                        q = fail(c, K_COPIED, "'%s' is not START+LENGTH", words[i]);
                        free_words(words, n);
                        return q;
                }
        }
        r->n_ranges = n;
        free_words(words, n);
        return 0;
}

/* "dev=N ino=N size=N mtime=N ctime=N", in this order. */
static int parse_identity(const Context *c, int key, const char *v, JobRecordIdentity *ret) {
        static const char *const names[] = { "dev=", "ino=", "size=", "mtime=", "ctime=" };
        JobRecordIdentity id = {};
        const char *p = v;

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                size_t m = strlen(names[i]), len;
                bool ok;

                if (strncmp(p, names[i], m) != 0)
                        return fail(c, key, "'%s' is not dev=N ino=N size=N mtime=N ctime=N", v);
                p += m;
                len = strcspn(p, " ");
                switch (i) {
                case 0:
                        ok = parse_u64_n(p, len, &id.dev);
                        break;
                case 1:
                        ok = parse_u64_n(p, len, &id.ino);
                        break;
                case 2:
                        ok = parse_u64_n(p, len, &id.size) && id.size <= INT64_MAX;
                        break;
                case 3:
                        ok = parse_i64_n(p, len, &id.mtime_ns);
                        break;
                default:
                        ok = parse_i64_n(p, len, &id.ctime_ns);
                        break;
                }
                if (!ok)
                        return fail(c, key, "'%s' is not dev=N ino=N size=N mtime=N ctime=N", v);
                p += len;
                if (i + 1 < ELEMENTSOF(names)) {
                        if (*p != ' ')
                                return fail(c, key, "'%s' is not dev=N ino=N size=N mtime=N ctime=N", v);
                        p++;
                } else if (*p)
                        return fail(c, key, "'%s' is not dev=N ino=N size=N mtime=N ctime=N", v);
        }
        *ret = id;
        return 0;
}

static int parse_value(const Context *c, JobRecord *r, int key, const char *v) {
        uint64_t u;
        int q, e;

        if (key >= _K_STATIC_MAX) {
                int role = (key - _K_STATIC_MAX) / _SUB_MAX, sub = (key - _K_STATIC_MAX) % _SUB_MAX;
                JobRecordFile *f = record_file(r, role);

                switch (sub) {
                case SUB_PATH:
                        return parse_escaped(c, key, v, &f->path);
                case SUB_IDENTITY:
                        f->present = true;
                        return parse_identity(c, key, v, &f->identity);
                default:
                        f->fdname = strdup(v);
                        return f->fdname ? 0 : -ENOMEM;
                }
        }

        switch (key) {
        case K_ID:
                r->id = strdup(v);
                return r->id ? 0 : -ENOMEM;
        case K_TYPE:
                return parse_enum(c, key, v, job_type_from_string(v), (int *) &r->type);
        case K_OWNER:
                q = parse_number(c, key, v, UINT32_MAX - 1, &u);
                r->owner = (uint32_t) u;
                return q;
        case K_STATUS:
                e = job_status_from_string(v);
                if (IN_SET(e, JOB_STATUS_UNDEFINED, JOB_STATUS_NULL))
                        e = -1;
                return parse_enum(c, key, v, e, (int *) &r->status);
        case K_USER_PAUSED:
                return parse_bool(c, key, v, &r->user_paused);
        case K_ERROR:
                return parse_escaped(c, key, v, &r->error);
        case K_TRANSACTION:
                r->txn_name = strdup(v);
                return r->txn_name ? 0 : -ENOMEM;
        case K_TRANSACTION_MEMBERS:
                return split_words(c, key, v, JOB_RECORD_TXN_MEMBERS_MAX, &r->txn_members, &r->n_txn_members);
        case K_AUTO_FINALIZE:
                return parse_bool(c, key, v, &r->auto_finalize);
        case K_AUTO_DISMISS:
                return parse_bool(c, key, v, &r->auto_dismiss);
        case K_SPEED:
                return parse_number(c, key, v, UINT64_MAX, &r->speed);
        case K_ON_SOURCE_ERROR:
                return parse_enum(c, key, v, job_on_error_from_string(v), (int *) &r->on_source_error);
        case K_ON_TARGET_ERROR:
                return parse_enum(c, key, v, job_on_error_from_string(v), (int *) &r->on_target_error);
        case K_SYNC:
                return parse_enum(c, key, v, job_record_sync_from_string(v), (int *) &r->sync);
        case K_SOURCE_FORMAT:
                return parse_format(c, key, v, &r->source_format);
        case K_TARGET_FORMAT:
                return parse_format(c, key, v, &r->target_format);
        case K_BASE_FORMAT:
                return parse_format(c, key, v, &r->base_format);
        case K_OVERWRITE:
                return parse_bool(c, key, v, &r->overwrite);
        case K_GRANULARITY:
                q = parse_number(c, key, v, GRANULARITY_MAX, &u);
                if (q < 0)
                        return q;
                if (u == 0)
                        return fail(c, key, "0 is not a power of 2 in [512B, 64MB]");
                r->granularity = (uint32_t) u;
                return 0;
        case K_BUF_SIZE:
                q = parse_number(c, key, v, BUF_SIZE_MAX, &r->buf_size);
                if (q >= 0 && r->buf_size == 0)
                        return fail(c, key, "0 is the default: not written");
                return q;
        case K_BACKING_FILE:
                return parse_escaped(c, key, v, &r->backing_file);
        case K_TARGET_BACKING:
                return parse_escaped(c, key, v, &r->target_backing);
        case K_TARGET_BACKING_FORMAT:
                return parse_format(c, key, v, &r->target_backing_format);
        case K_TOP_NAME:
                return parse_escaped(c, key, v, &r->top_name);
        case K_BASE_NAME:
                return parse_escaped(c, key, v, &r->base_name);
        case K_BITMAP:
                return parse_escaped(c, key, v, &r->bitmap);
        case K_BITMAP_MODE:
                return parse_enum(c, key, v, job_record_bitmap_mode_from_string(v), (int *) &r->bitmap_mode);
        case K_TARGET_HIDDEN:
                return parse_escaped(c, key, v, &r->target_hidden);
        case K_COPIED:
                return parse_ranges(c, v, r);
        case K_OFFSET:
                return parse_number(c, key, v, UINT64_MAX, &r->offset);
        case K_REWRITE:
                e = job_record_rewrite_from_string(v);
                if (e == JOB_RECORD_REWRITE_NONE)
                        e = -1;         /* written as no REWRITE line */
                return parse_enum(c, key, v, e, (int *) &r->rewrite);
        case K_REWRITE_OLD_BACKING:
                return parse_escaped(c, key, v, &r->rewrite_old_backing);
        case K_REWRITE_NEW_BACKING:
                return parse_escaped(c, key, v, &r->rewrite_new_backing);
        default:
                assert_se(false);
        }
        return 0;
}

static unsigned line_of(const char *data, const char *p) {
        unsigned n = 1;

        for (const char *q = data; q < p; q++)
                n += *q == '\n';
        return n;
}

/* The keys the text holds against what the record's type wants. */
static int check_keys(const Context *c, const JobRecord *r) {
        unsigned t = 1U << r->type;

        for (int k = 0; k < _K_STATIC_MAX; k++) {
                if (!c->lines[k] && (keys[k].required & t))
                        return fail_at(c, 0, k, "missing");
                if (c->lines[k] && !(keys[k].types & t))
                        return fail(c, k, "not for %s jobs", job_type_to_string(r->type));
        }
        /* A bitmap and its mode, a rewrite and its backing names, a transaction and its members
         * come together; validate() says which is missing. */
        for (int role = 0; role < _ROLE_MAX; role++) {
                int id = K_FILE(role, SUB_IDENTITY);

                for (int sub = 0; sub < _SUB_MAX; sub++)
                        if (c->lines[K_FILE(role, sub)] && !(role_types(role) & t))
                                return fail(c, K_FILE(role, sub), "not for %s jobs", job_type_to_string(r->type));
                if (!c->lines[id] && c->lines[K_FILE(role, SUB_PATH)])
                        return fail(c, K_FILE(role, SUB_PATH), "a file with no identity");
                if (!c->lines[id] && c->lines[K_FILE(role, SUB_FDNAME)])
                        return fail(c, K_FILE(role, SUB_FDNAME), "a file with no identity");
                if (!c->lines[id] && (role_required(role) & t))
                        return fail_at(c, 0, id, "missing");
        }
        if (c->lines[K_BITMAP] && !c->lines[K_BITMAP_MODE])
                return fail_at(c, 0, K_BITMAP_MODE, "missing");
        if (!c->lines[K_BITMAP] && c->lines[K_BITMAP_MODE])
                return fail(c, K_BITMAP_MODE, "without a bitmap");
        return 0;
}

static int parse_lines(Context *c, char *text, size_t size, JobRecord *r) {
        unsigned *lines = c->lines;
        unsigned line = 0;

        for (char *p = text; p < text + size;) {
                char *end = memchr(p, '\n', (size_t) (text + size - p)), *eq;
                int key, q;

                line++;
                /* The caller made sure the text ends in a newline. */
                assert(end);
                if ((size_t) (end - p) > JOB_RECORD_LINE_MAX)
                        return fail_at(c, line, -1, "longer than %u bytes", JOB_RECORD_LINE_MAX);
                *end = '\0';
                eq = strchr(p, '=');
                if (!eq)
                        return fail_at(c, line, -1, "not KEY=VALUE");
                *eq = '\0';

                if (line == 1) {
                        if (strcmp(p, JOB_RECORD_VERSION_KEY) != 0)
                                return fail_at(c, line, -1, "not a blockjobd job record (no " JOB_RECORD_VERSION_KEY "=)");
                        if (strcmp(eq + 1, "1") != 0)
                                return fail_at(c, line, -1,
                                               "version '%s' is not one this blockjobd reads (%d): written by a newer one?",
                                               eq + 1, JOB_RECORD_VERSION);
                        lines[K_VERSION] = line;
                        p = end + 1;
                        continue;
                }

                key = key_lookup(p, (size_t) (eq - p));
                if (key < 0)
                        return fail_at(c, line, -1, "unknown key '%s' (written by a newer blockjobd?)", p);
                if (lines[key])
                        return fail_at(c, line, key, "given twice (first on line %u)", lines[key]);
                lines[key] = line;
                q = parse_value(c, r, key, eq + 1);
                if (q < 0)
                        return q;
                p = end + 1;
        }
        return 0;
}

int job_record_parse(const char *data, size_t size, const char *file_name, JobRecord **ret, char **ret_error) {
        _cleanup_(job_record_freep) JobRecord *r = NULL;
        _cleanup_free_ unsigned *lines = NULL;
        _cleanup_free_ char *text = NULL;
        Context c = { .file = file_name, .ret_error = ret_error, .error = -EBADMSG };
        const char *nul;
        int q;

        if (size > JOB_RECORD_SIZE_MAX)
                return fail_at(&c, 0, -1, "larger than %" PRIu64 " bytes", JOB_RECORD_SIZE_MAX);
        if (size == 0)
                return fail_at(&c, 0, -1, "empty");
        nul = memchr(data, '\0', size);
        if (nul)
                return fail_at(&c, line_of(data, nul), -1, "a NUL byte");
        if (data[size - 1] != '\n')
                return fail_at(&c, line_of(data, data + size - 1), -1, "no newline at the end (cut short?)");

        text = malloc(size);
        lines = calloc(_K_MAX, sizeof(unsigned));
        r = record_alloc();
        if (!text || !lines || !r)
                return -ENOMEM;
        memcpy(text, data, size);
        c.lines = lines;

        q = parse_lines(&c, text, size, r);
        if (q < 0)
                return q;
        /* The type first: what else is required depends on it. */
        if (!lines[K_TYPE])
                return fail_at(&c, 0, K_TYPE, "missing");
        q = check_keys(&c, r);
        if (q < 0)
                return q;
        for (int i = 0; i < JOB_RECORD_LAYERS_MAX; i++)
                if (r->layers[i].present)
                        r->n_layers = (size_t) i + 1;
        q = validate(&c, r);
        if (q < 0)
                return q;

        if (file_name) {
                _cleanup_free_ char *id = NULL;
                uint32_t owner;

                q = job_record_file_name_parse(file_name, &owner, &id);
                if (q == -ENOMEM)
                        return q;
                if (q < 0)
                        return fail_at(&c, 0, -1, "not a job record's file name");
                if (owner != r->owner)
                        return fail(&c, K_OWNER, "%" PRIu32 ", but the file name says %" PRIu32, r->owner, owner);
                if (strcmp(id, r->id) != 0)
                        return fail(&c, K_ID, "'%s', but the file name says '%s'", r->id, id);
        }

        *ret = TAKE_PTR(r);
        return 0;
}

/* ---- comparing ------------------------------------------------------------------------------- */

static bool file_equal(const JobRecordFile *a, const JobRecordFile *b) {
        return a->present == b->present && streq_ptr(a->path, b->path) && streq_ptr(a->fdname, b->fdname) &&
               job_record_identity_equal(&a->identity, &b->identity);
}

bool job_record_equal(const JobRecord *a, const JobRecord *b) {
        if (!streq_ptr(a->id, b->id) || a->type != b->type || a->owner != b->owner || a->status != b->status ||
            a->user_paused != b->user_paused || !streq_ptr(a->error, b->error) || !streq_ptr(a->txn_name, b->txn_name) ||
            a->n_txn_members != b->n_txn_members)
                return false;
        for (size_t i = 0; i < a->n_txn_members; i++)
                if (strcmp(a->txn_members[i], b->txn_members[i]) != 0)
                        return false;
        if (a->auto_finalize != b->auto_finalize || a->auto_dismiss != b->auto_dismiss || a->speed != b->speed ||
            a->on_source_error != b->on_source_error || a->on_target_error != b->on_target_error || a->sync != b->sync ||
            a->source_format != b->source_format || a->target_format != b->target_format ||
            a->base_format != b->base_format || a->overwrite != b->overwrite || a->granularity != b->granularity ||
            a->buf_size != b->buf_size || !streq_ptr(a->backing_file, b->backing_file) ||
            !streq_ptr(a->bitmap, b->bitmap) || a->bitmap_mode != b->bitmap_mode ||
            !streq_ptr(a->target_backing, b->target_backing) || a->target_backing_format != b->target_backing_format ||
            !streq_ptr(a->top_name, b->top_name) || !streq_ptr(a->base_name, b->base_name))
                return false;
        if (!file_equal(&a->source, &b->source) || a->n_layers != b->n_layers || !file_equal(&a->target, &b->target) ||
            !file_equal(&a->top, &b->top) || !file_equal(&a->base, &b->base) ||
            !streq_ptr(a->target_hidden, b->target_hidden))
                return false;
        for (size_t i = 0; i < JOB_RECORD_LAYERS_MAX; i++)
                if (!file_equal(&a->layers[i], &b->layers[i]))
                        return false;
        if (a->n_ranges != b->n_ranges ||
            (a->n_ranges > 0 && memcmp(a->ranges, b->ranges, a->n_ranges * sizeof(*a->ranges)) != 0))
                return false;
        return a->offset == b->offset && a->rewrite == b->rewrite &&
               streq_ptr(a->rewrite_old_backing, b->rewrite_old_backing) &&
               streq_ptr(a->rewrite_new_backing, b->rewrite_new_backing);
}
