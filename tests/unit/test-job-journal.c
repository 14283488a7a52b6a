/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The journal entries of job status changes (job-journal.h): which event, MESSAGE_ID, priority
 * and fields. */

#include <glib.h>
#include <syslog.h>

#include "job-journal.h"
#include "message-ids.h"

static JobJournalInfo info(JobStatus status) {
        return (JobJournalInfo) {
                .id = "nightly",
                .owner = 1000,
                .type = JOB_TYPE_BACKUP,
                .status = status,
                .path = "/org/blockjobd/Jobs1/job/nightly_u1000",
        };
}

static void assert_entry(const JobJournalInfo *i, JobJournalEvent event, const char *message_id, int priority,
                         const char *const *expected) {
        JobJournalEntry e;
        g_autofree char *id_field = g_strconcat("MESSAGE_ID=", message_id, NULL);

        g_assert_cmpint(job_journal_entry_build(i, &e), ==, 0);
        g_assert_cmpint(e.event, ==, event);
        g_assert_cmpint(e.priority, ==, priority);
        g_assert_cmpstr(e.fields[0], ==, id_field);
        for (size_t k = 0; expected[k]; k++)
                g_assert_cmpstr(e.fields[k + 1], ==, expected[k]);
        g_assert_null(e.fields[g_strv_length((char **) expected) + 1]);
        job_journal_entry_done(&e);
}

#define COMMON(status)                                                            \
        "BLOCKJOBD_JOB=nightly", "BLOCKJOBD_JOB_OWNER=1000", "BLOCKJOBD_JOB_TYPE=backup", \
                "BLOCKJOBD_JOB_STATUS=" status, "BLOCKJOBD_JOB_PATH=/org/blockjobd/Jobs1/job/nightly_u1000"

static void test_events(void) {
        JobJournalInfo i;

        i = info(JOB_STATUS_CREATED);
        assert_entry(&i, JOB_JOURNAL_CHANGED, BLOCKJOBD_MESSAGE_JOB_CHANGED, LOG_INFO,
                     (const char *const[]) { COMMON("created"), NULL });

        i = info(JOB_STATUS_RUNNING);
        i.first_running = true;
        assert_entry(&i, JOB_JOURNAL_STARTED, BLOCKJOBD_MESSAGE_JOB_STARTED, LOG_INFO,
                     (const char *const[]) { COMMON("running"), NULL });
        i.first_running = false;        /* resumed */
        assert_entry(&i, JOB_JOURNAL_CHANGED, BLOCKJOBD_MESSAGE_JOB_CHANGED, LOG_INFO,
                     (const char *const[]) { COMMON("running"), NULL });

        i = info(JOB_STATUS_CONCLUDED);
        assert_entry(&i, JOB_JOURNAL_FINISHED, BLOCKJOBD_MESSAGE_JOB_FINISHED, LOG_INFO,
                     (const char *const[]) { COMMON("concluded"), NULL });

        /* A failure carries its error, also on the way there; a cancel does not. */
        i.error = "Could not write 'x\nB': No space left on device";
        assert_entry(&i, JOB_JOURNAL_FAILED, BLOCKJOBD_MESSAGE_JOB_FAILED, LOG_ERR,
                     (const char *const[]) { COMMON("concluded"),
                                             "BLOCKJOBD_ERROR=Could not write 'x\nB': No space left on device", NULL });
        i.status = JOB_STATUS_ABORTING;
        assert_entry(&i, JOB_JOURNAL_CHANGED, BLOCKJOBD_MESSAGE_JOB_CHANGED, LOG_INFO,
                     (const char *const[]) { COMMON("aborting"),
                                             "BLOCKJOBD_ERROR=Could not write 'x\nB': No space left on device", NULL });

        i = info(JOB_STATUS_CONCLUDED);
        i.error = "Operation canceled";
        i.cancelled = true;
        assert_entry(&i, JOB_JOURNAL_CANCELLED, BLOCKJOBD_MESSAGE_JOB_CANCELLED, LOG_WARNING,
                     (const char *const[]) { COMMON("concluded"), NULL });

        i = info(JOB_STATUS_NULL);
        assert_entry(&i, JOB_JOURNAL_CHANGED, BLOCKJOBD_MESSAGE_JOB_CHANGED, LOG_INFO,
                     (const char *const[]) { COMMON("null"), NULL });
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/job-journal/events", test_events);
        return g_test_run();
}
