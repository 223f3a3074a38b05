/* Benchmark child: records a monotonic timestamp first thing, then waits;
 * on SIGTERM or SIGINT it leaves 100 ms later (exit 0). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_stop(int s) { (void)s; stop = 1; }

int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    const char *log = getenv("BENCH_LOG");
    const char *name = getenv("BENCH_NAME");
    if (log) {
        char b[160];
        int n = snprintf(b, sizeof b, "start %s %d %lld\n", name ? name : "child", getpid(),
                         (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
        int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0) { write(fd, b, n); close(fd); }
    }
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    while (!stop) pause();
    struct timespec d = {0, 100000000};
    nanosleep(&d, NULL);
    return 0;
}
