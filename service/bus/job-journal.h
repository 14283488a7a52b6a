/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the journal is told of a job's status change (issue 11): which event it is, with which
 * MESSAGE_ID (message-ids.h) and priority, and the BLOCKJOBD_* fields that let
 * `journalctl BLOCKJOBD_JOB=nightly` show one job's history. Pure: no I/O, so that the rules can
 * be tested on their own; bus-job.c logs the entries. */

#include <stdbool.h>
#include <stdint.h>

#include "job-lifecycle.h"

typedef enum JobJournalEvent {
        JOB_JOURNAL_STARTED,
        JOB_JOURNAL_FINISHED,
        JOB_JOURNAL_FAILED,
        JOB_JOURNAL_CANCELLED,
        JOB_JOURNAL_CHANGED,
        _JOB_JOURNAL_EVENT_MAX,
} JobJournalEvent;

typedef struct JobJournalInfo {
        const char *id;
        uint32_t owner;
        JobType type;
        JobStatus status;               /* the new one */
        const char *path;               /* the job's D-Bus object */
        const char *error;              /* NULL while the job has not failed */
        bool cancelled;                 /* force-cancelled (job_is_cancelled()) */
        bool first_running;             /* this 'running' is the job's first */
} JobJournalInfo;

/* MESSAGE_ID=, the BLOCKJOBD_* fields, and the NULL that ends them. */
#define JOB_JOURNAL_FIELDS_MAX 8

typedef struct JobJournalEntry {
        JobJournalEvent event;
        int priority;
        char *fields[JOB_JOURNAL_FIELDS_MAX];   /* "NAME=value", NULL-terminated */
} JobJournalEntry;

JobJournalEvent job_journal_event(const JobJournalInfo *info);
/* -ENOMEM, or 0 and the entry (job_journal_entry_done() it either way). */
int job_journal_entry_build(const JobJournalInfo *info, JobJournalEntry *ret);
void job_journal_entry_done(JobJournalEntry *e);
