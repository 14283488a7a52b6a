/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "job-request.h"

void job_request_done(JobRequest *r) {
        free(r->source);
        free(r->target);
        free(r->job_id);
        free(r->top);
        free(r->base);
        free(r->backing_file);
        free(r->bitmap);
        free(r->target_backing);
        free(r->target_backing_path);
        free(r->target_resume_name);
        job_files_done(&r->files);
        job_files_done(&r->target_backing_files);
        *r = (JobRequest) JOB_REQUEST_INIT;
}
