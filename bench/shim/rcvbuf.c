/* LD_PRELOAD shim for perfdhcp (bench/dora.py --client-rcvbuf): every UDP socket it opens
 * gets a receive buffer of $TANDEM_BENCH_RCVBUF bytes (SO_RCVBUFFORCE: perfdhcp runs as
 * root in its namespace). perfdhcp receives the replies meant for 25,000 simulated clients
 * through one socket with the kernel's default buffer (208 KiB, ~300 datagrams) and, busy
 * sending at 99 % of its core, drops replies that arrive in bursts: a limit of the load
 * generator, not of the server. net.core.rmem_default cannot be set inside a namespace. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>

int socket(int domain, int type, int protocol) {
    static int (*real_socket)(int, int, int) = 0;
    if (!real_socket) real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real_socket(domain, type, protocol);
    if (fd >= 0 && domain == AF_INET && (type & 0xf) == SOCK_DGRAM) {
        const char *v = getenv("TANDEM_BENCH_RCVBUF");
        int size = v ? atoi(v) : 0;
        if (size > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    return fd;
}
