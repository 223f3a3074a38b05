/* The floor: a minimal fork+exec+respawn loop for N children of argv[1].
 * SIGTERM: TERM to every child, wait for all, exit 0. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 3
static pid_t kids[N];

static pid_t spawn(const char *path, sigset_t *old) {
    pid_t p = fork();
    if (p == 0) {
        sigprocmask(SIG_SETMASK, old, NULL);
        execl(path, path, (char *)NULL);
        _exit(127);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, &old);
    for (int i = 0; i < N; i++) kids[i] = spawn(argv[1], &old);
    int stopping = 0, alive = N;
    for (;;) {
        int sig;
        sigwait(&set, &sig);
        if (sig == SIGTERM && !stopping) {
            stopping = 1;
            for (int i = 0; i < N; i++) if (kids[i] > 0) kill(kids[i], SIGTERM);
        }
        pid_t p;
        int st;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < N; i++) {
                if (kids[i] != p) continue;
                if (stopping) { kids[i] = 0; alive--; }
                else kids[i] = spawn(argv[1], &old);
            }
        }
        if (stopping && alive == 0) return 0;
    }
}
