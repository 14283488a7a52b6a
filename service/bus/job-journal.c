/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>

#include "job-journal.h"
#include "macro.h"
#include "message-ids.h"

static const struct {
        const char *message_id;
        int priority;
} events[_JOB_JOURNAL_EVENT_MAX] = {
        [JOB_JOURNAL_STARTED]   = { "MESSAGE_ID=" BLOCKJOBD_MESSAGE_JOB_STARTED,   LOG_INFO },
        [JOB_JOURNAL_FINISHED]  = { "MESSAGE_ID=" BLOCKJOBD_MESSAGE_JOB_FINISHED,  LOG_INFO },
        [JOB_JOURNAL_FAILED]    = { "MESSAGE_ID=" BLOCKJOBD_MESSAGE_JOB_FAILED,    LOG_ERR },
        [JOB_JOURNAL_CANCELLED] = { "MESSAGE_ID=" BLOCKJOBD_MESSAGE_JOB_CANCELLED, LOG_WARNING },
        [JOB_JOURNAL_CHANGED]   = { "MESSAGE_ID=" BLOCKJOBD_MESSAGE_JOB_CHANGED,   LOG_INFO },
};

JobJournalEvent job_journal_event(const JobJournalInfo *info) {
        switch (info->status) {
        case JOB_STATUS_RUNNING:
                return info->first_running ? JOB_JOURNAL_STARTED : JOB_JOURNAL_CHANGED;
        case JOB_STATUS_CONCLUDED:
                /* As QEMU tells them apart: a force-cancelled job is cancelled, whatever error it
                 * met on its way out (members of a grouped transaction that another member's
                 * failure aborted are cancelled too, as QEMU's BLOCK_JOB_CANCELLED says). */
                if (info->cancelled)
                        return JOB_JOURNAL_CANCELLED;
                return info->error ? JOB_JOURNAL_FAILED : JOB_JOURNAL_FINISHED;
        default:
                return JOB_JOURNAL_CHANGED;
        }
}

void job_journal_entry_done(JobJournalEntry *e) {
        /* fields[0] is the MESSAGE_ID, a constant. */
        for (size_t i = 1; i < ELEMENTSOF(e->fields) && e->fields[i]; i++)
                free(e->fields[i]);
        *e = (JobJournalEntry) {};
}

int job_journal_entry_build(const JobJournalInfo *info, JobJournalEntry *ret) {
        JobJournalEntry e = { .event = job_journal_event(info) };
        size_t n = 0;
        int r = 0;

        e.priority = events[e.event].priority;
        e.fields[n++] = (char *) events[e.event].message_id;
        if (asprintf(&e.fields[n++], "BLOCKJOBD_JOB=%s", info->id) < 0 ||
            asprintf(&e.fields[n++], "BLOCKJOBD_JOB_OWNER=%" PRIu32, info->owner) < 0 ||
            asprintf(&e.fields[n++], "BLOCKJOBD_JOB_TYPE=%s", job_type_to_string(info->type)) < 0 ||
            asprintf(&e.fields[n++], "BLOCKJOBD_JOB_STATUS=%s", job_status_to_string(info->status)) < 0 ||
            asprintf(&e.fields[n++], "BLOCKJOBD_JOB_PATH=%s", info->path) < 0)
                r = -ENOMEM;
        /* The error is the failure's: a cancelled job's "Operation canceled" says nothing more. */
        else if (info->error && !info->cancelled && asprintf(&e.fields[n++], "BLOCKJOBD_ERROR=%s", info->error) < 0)
                r = -ENOMEM;
        if (r < 0)
                e.fields[n - 1] = NULL;        /* asprintf() leaves it undefined */
        *ret = e;
        return r;
}
