/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: arbitrary bytes as a job record (service/state/job-record.h), as the daemon
 * reads one from its state directory at start. Whatever the bytes, parsing ends in a record or in
 * -EBADMSG with a message, never in a crash, a hang or a memory error. And a record that parses is
 * one the writer can write: serialized, it parses back to the same record, and serializing that
 * gives the same text (the writer's output is canonical). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job-record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        JobRecord *r = NULL, *again = NULL;
        char *error = NULL, *text = NULL, *text2 = NULL;
        size_t n = 0, n2 = 0;
        int q;

        q = job_record_parse((const char *) data, size, NULL, &r, &error);
        if (q < 0) {
                /* A damaged record is always said as such, with a message. */
                if (q != -EBADMSG && q != -ENOMEM)
                        abort();
                if (q == -EBADMSG && !error)
                        abort();
                free(error);
                return 0;
        }
        if (error)
                abort();

        if (job_record_serialize(r, &text, &n, NULL) < 0)
                abort();
        /* Canonical text is never longer than what was accepted. */
        if (n > size)
                abort();
        if (job_record_parse(text, n, NULL, &again, NULL) < 0)
                abort();
        if (!job_record_equal(r, again))
                abort();
        if (job_record_serialize(again, &text2, &n2, NULL) < 0 || n2 != n || memcmp(text, text2, n) != 0)
                abort();

        free(text);
        free(text2);
        job_record_free(r);
        job_record_free(again);
        return 0;
}
