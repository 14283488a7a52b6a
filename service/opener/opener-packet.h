/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Packets of the opener protocol (opener-protocol.h), both sides: a text and up to
 * OPENER_FDS_MAX descriptors (SCM_RIGHTS) on a SOCK_SEQPACKET socket. */

#include <stddef.h>
#include <sys/types.h>

/* Sends 'text' with 'n_fds' descriptors; 'flags' are send(2)'s, MSG_NOSIGNAL always. Returns 0 or
 * a negative errno. */
int opener_send_packet(int fd, const char *text, const int *fds, size_t n_fds, int flags);

/* Receives one packet: its text, NUL-terminated, into 'text' ('size' bytes), and the descriptors
 * that came with it, O_CLOEXEC. Returns the text's length, 0 at the end of the stream, or a
 * negative errno (-EAGAIN: nothing there yet, with MSG_DONTWAIT in 'flags'). A packet cut short
 * (text too long, more descriptors than OPENER_FDS_MAX) is -EPROTO, its descriptors closed; or
 * -EMFILE or -ENFILE if the kernel dropped descriptors because we could not take one more. */
ssize_t opener_receive_packet(int fd, char *text, size_t size, int *fds, size_t *n_fds, int flags);
