/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Fault rules for tests: a file that says which I/O of which image fails, and how, installed as
 * the image layer's fault hook (service/image/image-fault.h). One rule per line:
 *
 *     <image path> <read|write|flush> <offset> <EIO|ENOSPC|EINVAL|EROFS|number> [<count>]
 *
 * A read or write fails when it covers the byte at <offset> (of the image as its users see it;
 * a flush ignores it); with <count>, only that many times, then the rule goes quiet (so that
 * 'stop' and 'resume' can be seen to retry and succeed). Blank lines and lines starting with #
 * are ignored. The file is read again whenever it changes, so a test can add or lift faults
 * while a job runs; counts start over then. A missing file means no faults. */

/* Installs the hook with the rules in 'path'. */
void fault_rules_install(const char *path);
