/* The benchmark workload: on start, append "<CLOCK_MONOTONIC ns> <pid>\n" to the file named
 * by argv[1] (one write(2), O_APPEND, so concurrent children never interleave), then sleep
 * until killed. Tiny and fast to start, so it measures the supervisor, not the child. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stamp FILE\n");
        return 2;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char line[64];
    int n = snprintf(line, sizeof line, "%lld %d\n",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (int)getpid());
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) {
        perror("stamp");
        return 1;
    }
    close(fd);
    for (;;)
        pause();
}
