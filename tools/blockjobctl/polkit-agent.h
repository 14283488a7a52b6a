/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A polkit text agent for the calls that polkit may want a password for, as systemctl and
 * importctl have one: on a terminal, for a caller other than root, `pkttyagent --notify-fd N
 * --fallback` is started (once) and waited for until it says it is registered, by closing N; it
 * is stopped at exit. Without pkttyagent (or $BLOCKJOBCTL_POLKIT_AGENT, the program to run
 * instead) nothing happens: polkit then answers as it would without an agent. */
void polkit_agent_open_if_enabled(bool ask_password);
void polkit_agent_close(void);
