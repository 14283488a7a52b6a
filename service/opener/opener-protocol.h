/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How the daemon and blockjobd-opener talk.
 *
 * The daemon (root) runs one opener server per identity, with a SOCK_SEQPACKET control socket as
 * its standard input and who to become on its command line:
 *
 *     blockjobd-opener UID GROUPS --serve
 *
 * GROUPS is the comma-separated list of the caller's groups (as the bus reports them), "-" for
 * none, or "*": the user's groups from the user database, as a login would have them. The gid is
 * the user's primary group from the database, if the caller has it (otherwise the first of its
 * groups; a user without any: the overflow group, 65534). The server looks that up once, stays
 * root, and takes requests: each a packet "request" on the control socket with one descriptor, a
 * SOCK_SEQPACKET socket of the request's own. For each it forks a child that takes that socket as
 * its standard input and answers on it; the server never writes to the control socket, and exits
 * when the daemon closes it, once it took the requests sent before.
 *
 * On the request's socket the daemon has queued what to open, one packet (names are nobody else's
 * business: a command line is readable by every user in /proc), words separated by NUL:
 *
 *     [target NUL keep|overwrite NUL PATH NUL] [chain NUL read|write NUL FORMAT NUL PATH NUL]
 *     or, for a job that continues after a restart (its unfinished target under HIDDEN):
 *     [target NUL resume-keep|resume-overwrite NUL PATH NUL HIDDEN NUL] [chain ...]
 *
 * FORMAT is raw, qcow2 or probe. The child becomes that user for good (groups, gid, uid), then
 * opens the target, then the chain. For root (UID 0), the names in a chain are followed with the
 * rights of whoever could have written them (see opener-main.c). It answers with one packet per
 * file, each a word, maybe a text, and descriptors (SCM_RIGHTS):
 *
 *     "pid"                            1 fd: a pidfd of the child, first, sent while it is
 *                                      still root: the daemon kills it when the request ends
 *                                      (it is not the daemon's child)
 *     "layer"                          1 fd: the next layer of the chain, top first
 *     "target-new NAME/TEMP"           2 or 3 fds: a new, empty target file, the directory to
 *                                      publish it in as NAME, and what NAME holds now (to be
 *                                      replaced; none: the name is free); TEMP is its hidden
 *                                      name there, or empty for an unnamed (O_TMPFILE) file;
 *                                      for a resumed target the file under HIDDEN, TEMP = HIDDEN
 *     "target-in-place"                1 fd: an existing target to write in place (a device)
 *     "error ERRNO MESSAGE"            the request failed; nothing else follows
 *     "done"                           everything asked for was sent
 */

#define OPENER_PACKET_MAX 8192
/* Two paths shorter than PATH_MAX, a hidden name (NAME_MAX), and the words around them. */
#define OPENER_REQUEST_MAX (2 * 4096 + 512)
#define OPENER_FDS_MAX 3
/* The daemon's patience: an open that blocks (a FIFO, a hung network file system) ends here. */
#define OPENER_TIMEOUT_USEC (30 * UINT64_C(1000000))
#define OPENER_GROUPS_MAX 65536
