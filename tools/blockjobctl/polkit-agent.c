/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "polkit-agent.h"
#include "util.h"

#define POLKIT_AGENT_BINARY_PATH "/usr/bin/pkttyagent"

static pid_t agent_pid = 0;
static bool agent_tried = false;

static void agent_child(int notify_fd, const char *agent) {
        char fd_string[16];
        sigset_t all;

        /* The parent blocks SIGINT and SIGTERM to handle them on its event loop; the agent must
         * die by them, and with its parent. */
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);

        /* It talks to the user on the terminal, whatever stdout is. */
        if (!isatty(STDOUT_FILENO) || !isatty(STDERR_FILENO)) {
                int tty = open("/dev/tty", O_WRONLY | O_NOCTTY | O_CLOEXEC);
                if (tty >= 0) {
                        if (!isatty(STDOUT_FILENO))
                                (void) dup2(tty, STDOUT_FILENO);
                        if (!isatty(STDERR_FILENO))
                                (void) dup2(tty, STDERR_FILENO);
                        if (tty > STDERR_FILENO)
                                close(tty);
                }
        }
        /* Nothing but stdio and the notification descriptor goes along. */
        for (int fd = STDERR_FILENO + 1; fd < 1024; fd++)
                if (fd != notify_fd)
                        (void) close(fd);

        snprintf(fd_string, sizeof(fd_string), "%d", notify_fd);
        execl(agent, agent, "--notify-fd", fd_string, "--fallback", (char *) NULL);
        _exit(EXIT_FAILURE);
}

void polkit_agent_open_if_enabled(bool ask_password) {
        const char *agent = getenv("BLOCKJOBCTL_POLKIT_AGENT") ?: POLKIT_AGENT_BINARY_PATH;
        int pipe_fd[2];
        pid_t pid;

        if (agent_tried)
                return;
        agent_tried = true;

        /* Root is never asked; without a terminal to type on there is nobody to ask. */
        if (!ask_password || geteuid() == 0 || !isatty(STDIN_FILENO))
                return;
        if (access(agent, X_OK) < 0)
                return;
        if (pipe2(pipe_fd, O_CLOEXEC) < 0)
                return;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                close(pipe_fd[0]);
                close(pipe_fd[1]);
                return;
        }
        if (pid == 0) {
                close(pipe_fd[0]);
                /* Not close-on-exec for the agent. */
                int fd = fcntl(pipe_fd[1], F_DUPFD, 3);
                if (fd < 0)
                        _exit(EXIT_FAILURE);
                agent_child(fd, agent);
        }
        agent_pid = pid;
        close(pipe_fd[1]);

        /* It closes its end once it is registered with polkit (or dies): a bounded wait, should
         * it hang, after which the call goes ahead as if there were no agent. */
        struct pollfd p = { .fd = pipe_fd[0], .events = POLLIN };
        for (;;) {
                int r = poll(&p, 1, 10000);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r > 0 && (p.revents & POLLIN)) {
                        char c;
                        ssize_t n = read(pipe_fd[0], &c, 1);
                        if (n > 0)
                                continue;
                }
                break;
        }
        close(pipe_fd[0]);
}

void polkit_agent_close(void) {
        if (agent_pid <= 0)
                return;
        (void) kill(agent_pid, SIGTERM);
        (void) kill(agent_pid, SIGCONT);
        while (waitpid(agent_pid, NULL, 0) < 0 && errno == EINTR)
                ;
        agent_pid = 0;
}
