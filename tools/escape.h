/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Text from the daemon, and through it from images and other users (error messages, file and
 * backing-file names, job ids), made safe to print on a terminal: control characters (C0
 * including ESC, DEL, and C1, U+0080 to U+009F) and bytes that are not part of valid UTF-8 are
 * shown as \xNN, one per byte, so that the text cannot move the cursor, recolour, retitle or
 * otherwise drive the terminal it is printed on, and the result is always valid UTF-8.
 *
 * Backslashes are left alone: the daemon escapes such text the same way before it sends it, and
 * escaping its "\x1b" again would print "\\x1b".
 *
 * Returns a new string (free it), NULL only when out of memory. */
char *escape_untrusted(const char *s);
