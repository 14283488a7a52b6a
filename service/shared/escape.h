/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Text from images and callers (error messages, file and backing-file names), made safe to
 * print, log or send: control characters (C0
 * including ESC, DEL, and C1, U+0080 to U+009F) and bytes that are not part of valid UTF-8 are
 * shown as \xNN, one per byte, so that the text cannot forge a log line, move the cursor,
 * recolour, retitle or otherwise drive the terminal it is printed on, and the result is always
 * valid UTF-8, as D-Bus requires of its strings.
 *
 * Backslashes are left alone: the daemon escapes such text before it sends it, and blockjobctl
 * escapes what it prints once more (it may talk to another daemon); escaping "\x1b" again would
 * print "\\x1b".
 *
 * Returns a new string (free it), NULL only when out of memory. */
char *escape_untrusted(const char *s);

/* Any bytes, as text that gives back exactly those bytes (for values stored in files, such as
 * the job records of service/state/): what escape_untrusted() escapes, and the backslash too, is
 * written as \xNN (lowercase hex), one per byte; everything else (printable, valid UTF-8) is
 * left as it is. The result is valid UTF-8 with no control characters, so it never holds a
 * newline, and a backslash in it always starts an escape.
 *
 * xescape() returns a new string, NULL only when out of memory. xunescape() reverses it, and
 * accepts only text that xescape() writes: a bad or uppercase escape, \x00, a byte escaped that
 * needs no escaping, or one left raw that does, is -EINVAL; -ENOMEM; else 0 and *ret (free it). */
char *xescape(const char *s);
int xunescape(const char *s, char **ret);
