/* The pod sandbox's process for the node test environment (tests/support/nodeenv.py).
 *
 * No registry is reachable here, so registry.k8s.io/pause cannot be pulled: this is the
 * same program in spirit (sleep until told to stop, reap zombies as PID 1), built
 * statically by scripts/setup-node-testenv.sh and packed by scripts/oci_image.py. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
