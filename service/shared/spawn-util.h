/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Starting a helper program from a process that holds many descriptors, at a cost that does not
 * grow with them.
 *
 * fork() and posix_spawn() give the child a copy of the whole descriptor table, and exec then
 * closes every O_CLOEXEC one of them: each close of a file that carries record locks walks the
 * lock list of its inode (locks_remove_posix()), so with N jobs holding locks on one source a
 * spawn costs O(N) closes of O(N) each, while the event loop waits. spawn_with_stdin() instead
 * lets the child share the table (CLONE_FILES) and make a private one with close_range(2)'s
 * CLOSE_RANGE_UNSHARE over [slot + 1, ~0U]: the kernel then copies only the descriptors below the
 * start of the range, rounded up to a multiple of 64, so the child copies and closes at most 64
 * descriptors, whatever the parent holds. The descriptor it gets is moved there beforehand into a
 * "spawn slot", a low descriptor reserved once (spawn_slot_reserve()) and otherwise kept on
 * /dev/null, O_CLOEXEC. Where the kernel has no CLOSE_RANGE_UNSHARE (before 5.9, or a seccomp
 * filter refuses it), posix_spawn() does the same job at the old cost. */

#include <stdbool.h>
#include <sys/types.h>

/* Reserves the spawn slot, if not done yet: call early (when the lowest free descriptors are
 * still low) from the thread that spawns; spawn_with_stdin() does it itself otherwise. Returns
 * the slot's number, or a negative errno. */
int spawn_slot_reserve(void);

/* Runs the program at 'path' with 'argv', an empty environment, every signal at its default
 * disposition and none blocked, 'stdin_fd' as its standard input, standard output and error as
 * ours, and no other descriptor of ours. Returns 0 once the program runs (it has been exec'd),
 * with its pid (the caller reaps it), or a negative errno: the exec's own (-ENOENT, -EACCES, ...)
 * when it could not run, the child then reaped already.
 *
 * For the duration of the call the slot holds 'stdin_fd' without O_CLOEXEC: another thread of the
 * process that execs (fork() + exec, system(), posix_spawn()) meanwhile would pass it on. Callers
 * make sure no thread does (blockjobd: only the event loop thread spawns; worker threads never
 * exec). Calls are serialized. */
int spawn_with_stdin(const char *path, char *const argv[], int stdin_fd, pid_t *ret_pid);

/* Tests: force posix_spawn() (true), or use the cheap path where the kernel has it (false). */
void spawn_set_force_posix_spawn(bool b);
/* Whether the last spawn_with_stdin() took the cheap path. */
bool spawn_last_was_cheap(void);
