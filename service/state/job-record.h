/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A job's record: what the daemon keeps of a job in its state directory (state-dir.h) so that the
 * job comes back after a restart, a crash or a reboot (issue 15). This file knows the record and
 * its text format; nothing about how jobs run, no I/O.
 *
 * The format, version 1: text, one "KEY=VALUE" line per field, every line ending in "\n", the
 * first line "BLOCKJOBD-JOB-RECORD=1". Values that hold names or messages (paths, the error
 * text, backing file names, the bitmap name) are escaped with xescape() (escape.h), so that any
 * byte but NUL round-trips and a line is always one line; all other values are plain ASCII.
 * Booleans are "yes"/"no", numbers plain decimal (no sign, no leading zero; timestamps may be
 * negative), enums the core's and the image layer's strings (job-lifecycle.h, image.h). The
 * writer writes the keys in a fixed order; the reader takes them in any order after the first.
 *
 * A record is read as untrusted input (a damaged disk, a record of a newer version, a hand-edited
 * file): an unknown key, a key given twice, a required key missing, a key for another job type, a
 * bad number, escape or enum, a value out of range, a path not absolute or not normalized, a bad
 * id, too many or unsorted or overlapping ranges, a line longer than JOB_RECORD_LINE_MAX, a NUL
 * byte, a missing final newline: each is -EBADMSG and a message naming the record and the line.
 * The reader never half-reads: a record either parses whole or not at all.
 *
 * What is checked here is the record's own consistency. Whether the files it names are still
 * the files it recorded (identities), and whether the job can continue, is for the layer that
 * restores jobs, which opens the files with the same checks as a new call. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "image.h"
#include "job-files.h"
#include "job-lifecycle.h"
#include "macro.h"

#define JOB_RECORD_VERSION 1
#define JOB_RECORD_VERSION_KEY "BLOCKJOBD-JOB-RECORD"
/* A record larger than this is damaged (the state directory does not read more). */
#define JOB_RECORD_SIZE_MAX (UINT64_C(1) << 20)
/* The longest line: room for the longest COPIED and TRANSACTION_MEMBERS lines and any escaped
 * path or error text (static asserts in job-record.c). */
#define JOB_RECORD_LINE_MAX (256U << 10)
/* Copied ranges a backup checkpoint holds. Forgetting a range is always safe (it is copied again
 * after a restart), so a writer that reaches this can drop the shortest ones. */
#define JOB_RECORD_RANGES_MAX 4096U
/* Jobs in one grouped transaction. */
#define JOB_RECORD_TXN_MEMBERS_MAX 1024U
/* Bytes of the error text (unescaped). */
#define JOB_RECORD_ERROR_MAX (16U << 10)
/* Backing file layers below the source (the chain is at most JOB_FILES_CHAIN_MAX deep). */
#define JOB_RECORD_LAYERS_MAX (JOB_FILES_CHAIN_MAX - 1)
/* QEMU's limit on a persistent bitmap's name (qcow2-bitmap.h). */
#define JOB_RECORD_BITMAP_NAME_MAX 1023U

/* QEMU's MirrorSyncMode as far as blockjobd uses it: full and top (SyncMode, job-request.h), and
 * bitmap (a backup of what a persistent bitmap recorded, issue 14). */
typedef enum JobRecordSync {
        JOB_RECORD_SYNC_FULL,
        JOB_RECORD_SYNC_TOP,
        JOB_RECORD_SYNC_BITMAP,
        _JOB_RECORD_SYNC_MAX,
        _JOB_RECORD_SYNC_INVALID = -1,
} JobRecordSync;

/* QEMU's BitmapSyncMode. */
typedef enum JobRecordBitmapMode {
        JOB_RECORD_BITMAP_ON_SUCCESS,
        JOB_RECORD_BITMAP_ALWAYS,
        JOB_RECORD_BITMAP_NEVER,
        _JOB_RECORD_BITMAP_MODE_MAX,
        _JOB_RECORD_BITMAP_MODE_INVALID = -1,
} JobRecordBitmapMode;

/* Commit and stream rewrite a backing file name when they complete: recorded as pending before
 * the rewrite and done after, so that a restart in between redoes it (it is idempotent). */
typedef enum JobRecordRewrite {
        JOB_RECORD_REWRITE_NONE,
        JOB_RECORD_REWRITE_PENDING,
        JOB_RECORD_REWRITE_DONE,
        _JOB_RECORD_REWRITE_MAX,
        _JOB_RECORD_REWRITE_INVALID = -1,
} JobRecordRewrite;

/* Which file it was when the job was created: a mismatch after a restart means the file changed
 * (or was replaced) while the daemon was stopped. */
typedef struct JobRecordIdentity {
        uint64_t dev;
        uint64_t ino;
        uint64_t size;                  /* at most INT64_MAX */
        int64_t mtime_ns;
        int64_t ctime_ns;
} JobRecordIdentity;

/* One file the job holds. present: the role has a file (then its identity is recorded, and a path
 * or an fd-store name or both; a backing layer reached through the name its parent records has
 * neither: it is found again the same way, and its identity compared). */
typedef struct JobRecordFile {
        bool present;
        char *path;                     /* absolute and normalized; NULL: a passed descriptor with no name */
        JobRecordIdentity identity;
        char *fdname;                   /* the caller passed a descriptor, kept in systemd's fd store
                                         * under this name (job_record_fdname()); NULL: opened by name */
} JobRecordFile;

typedef struct JobRecordRange {
        uint64_t start;
        uint64_t length;
} JobRecordRange;

typedef struct JobRecord {
        char *id;                       /* job_id_is_valid() */
        JobType type;
        uint32_t owner;                 /* a uid, not (uid_t) -1 */

        /* Status: the core's status (neither undefined nor null) and its user-paused flag; the
         * error text once the job failed (aborting or concluded only). */
        JobStatus status;
        bool user_paused;
        char *error;

        /* A grouped transaction: its name (an id's syntax) and every member's id, this job's too.
         * NULL: a transaction of its own. */
        char *txn_name;
        char **txn_members;
        size_t n_txn_members;

        /* Options, as the caller gave them (JobRequest, bus-options.c). */
        bool auto_finalize;
        bool auto_dismiss;
        uint64_t speed;
        JobOnError on_source_error;
        JobOnError on_target_error;
        JobRecordSync sync;             /* backup, mirror */
        ImageFormat source_format;      /* source-format, or image-format (commit, stream); PROBE: not given */
        ImageFormat target_format;      /* backup, mirror; PROBE: not given */
        ImageFormat base_format;        /* commit, stream; PROBE: not given */
        bool overwrite;                 /* backup, mirror */
        uint32_t granularity;           /* mirror; 0: not given */
        uint64_t buf_size;              /* mirror; 0: not given */
        char *backing_file;             /* commit, stream; NULL: not given */
        char *bitmap;                   /* backup; NULL: none */
        JobRecordBitmapMode bitmap_mode;/* with a bitmap */
        char *target_backing;           /* backup: target-backing as given; NULL: none */
        ImageFormat target_backing_format;      /* with it; PROBE: not given */
        char *top_name;                 /* commit: 'top' as the caller named it; NULL: not given */
        char *base_name;                /* commit, stream: 'base' likewise */

        /* Files. source: backup's and mirror's source, commit's and stream's image (the top of the
         * chain); layers: its backing files, in chain order; target: backup's and mirror's; top
         * and base: commit's and stream's, as the job resolved them. */
        JobRecordFile source;
        JobRecordFile layers[JOB_RECORD_LAYERS_MAX];
        size_t n_layers;
        JobRecordFile target;
        JobRecordFile top;
        JobRecordFile base;
        /* A new target is built under this name in the target's directory until it is published
         * (job_record_hidden_target_name()); NULL: written in place. */
        char *target_hidden;

        /* Checkpoint. backup: what it has copied, sorted, merged (no two ranges touch), each
         * non-empty. commit, stream: the offset reached, and the backing file rewrite. */
        JobRecordRange *ranges;
        size_t n_ranges;
        uint64_t offset;
        JobRecordRewrite rewrite;
        char *rewrite_old_backing;      /* with a rewrite: "" when there was none */
        char *rewrite_new_backing;      /* with a rewrite: "" when there is none after */
} JobRecord;

const char *job_record_sync_to_string(JobRecordSync s);
JobRecordSync job_record_sync_from_string(const char *s);
const char *job_record_bitmap_mode_to_string(JobRecordBitmapMode m);
JobRecordBitmapMode job_record_bitmap_mode_from_string(const char *s);
const char *job_record_rewrite_to_string(JobRecordRewrite w);
JobRecordRewrite job_record_rewrite_from_string(const char *s);

/* A record with the options' defaults (as JOB_REQUEST_INIT) and nothing else: fill in the rest. */
JobRecord *job_record_new(JobType type, uint32_t owner, const char *id);
JobRecord *job_record_free(JobRecord *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(JobRecord *, job_record_free);

/* A file's identity as fstat() gave it. */
void job_record_identity_from_stat(const struct stat *st, JobRecordIdentity *ret);
bool job_record_identity_equal(const JobRecordIdentity *a, const JobRecordIdentity *b);

/* Adds [start, start + length) to the copied ranges, merging it with those it overlaps or
 * touches. -EINVAL for an empty or overflowing range, -E2BIG if the ranges would be more than
 * JOB_RECORD_RANGES_MAX (nothing changed), -ENOMEM. */
int job_record_add_range(JobRecord *r, uint64_t start, uint64_t length);

/* The record's file name in the state directory: "<owner>-<id>.job" (ids are unique per owner).
 * job_record_file_name_parse() accepts exactly such names (-EINVAL otherwise). */
int job_record_file_name(uint32_t owner, const char *id, char **ret);
int job_record_file_name_parse(const char *name, uint32_t *ret_owner, char **ret_id);
bool job_record_file_name_is_valid(const char *name);
/* The hidden name of a new target whose final path is 'target': ".<final-name>.blockjobd-<owner>-<id>",
 * in the same directory. Only this name is accepted in a record: a damaged record cannot name
 * another file for the daemon to remove. -ENAMETOOLONG if it would be longer than NAME_MAX. */
int job_record_hidden_target_name(const char *target, uint32_t owner, const char *id, char **ret);
/* The fd-store name of a descriptor the caller passed: "<owner>-<id>-<role>", role one of
 * "source", "target", "top", "base", "layer<N>". Likewise the only one accepted, so that a record
 * cannot lead a job to another job's descriptor. */
int job_record_fdname(uint32_t owner, const char *id, const char *role, char **ret);

/* Is the record consistent (everything the parser checks, but for what only the text can have
 * wrong)? -EINVAL and a message. Serializing checks this first. */
int job_record_validate(const JobRecord *r, char **ret_error);
/* The record as text: -EINVAL (and a message) for a record that is not valid, -E2BIG for one
 * longer than JOB_RECORD_SIZE_MAX, -ENOMEM. *ret is NUL-terminated, *ret_size without the NUL. */
int job_record_serialize(const JobRecord *r, char **ret, size_t *ret_size, char **ret_error);
/* Parses 'size' bytes. 'file_name' (may be NULL) names the record in messages, and if given, the
 * record's owner and id must be the ones it spells. -EBADMSG and a message for a damaged record,
 * -ENOMEM. */
int job_record_parse(const char *data, size_t size, const char *file_name, JobRecord **ret, char **ret_error);
/* Same content (for tests and the fuzzer: parse(serialize(r)) equals r). */
bool job_record_equal(const JobRecord *a, const JobRecord *b);
