/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <string.h>

#include "job-files.h"
#include "log.h"

void job_files_done(JobFiles *f) {
        /* A named temporary file that no job took: nobody else will remove it. */
        if (f->target_dir_fd >= 0 && f->target_temp_name &&
            unlinkat(f->target_dir_fd, f->target_temp_name, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove temporary file '%s': %m", f->target_temp_name);
        for (size_t i = 0; i < f->n_chain; i++)
                safe_close(f->chain[i]);
        safe_close(f->target_fd);
        safe_close(f->target_dir_fd);
        safe_close(f->target_replaced_fd);
        free(f->target_name);
        free(f->target_temp_name);
        *f = (JobFiles) JOB_FILES_INIT;
}

int job_files_add_layer(JobFiles *f, int fd) {
        if (f->n_chain >= JOB_FILES_CHAIN_MAX) {
                safe_close(fd);
                return -E2BIG;
        }
        f->chain[f->n_chain++] = fd;
        return 0;
}

int job_files_set_new_target(JobFiles *f, int fd, int dir_fd, const char *name, const char *temp_name, uid_t owner,
                             int replaced_fd) {
        assert(f->target_fd < 0);

        f->target_fd = fd;
        f->target_dir_fd = dir_fd;
        f->target_replaced_fd = replaced_fd;
        f->target_owner = owner;
        f->target_name = strdup(name);
        f->target_temp_name = temp_name ? strdup(temp_name) : NULL;
        if (!f->target_name || (temp_name && !f->target_temp_name))
                return -ENOMEM;
        return 0;
}

void job_files_set_target_in_place(JobFiles *f, int fd) {
        assert(f->target_fd < 0);
        f->target_fd = fd;
}

void job_files_hand_over(JobFiles *f) {
        free(f->target_temp_name);
        f->target_temp_name = NULL;
}
