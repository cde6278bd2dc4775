// ckvm.c: the few shims that need _GNU_SOURCE. Swift's Glibc module is built
// without it, so `sched_setaffinity` and `CPU_SET` are invisible to Swift and
// even to `static inline` functions in ckvm.h (see SWIFT-ON-KVM.md, pitfall 7).
#define _GNU_SOURCE
#include <sched.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/if_tun.h>
#include "ckvm.h"

int ckvm_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    // pid 0 means "the calling thread" for sched_setaffinity (it acts on a tid).
    return sched_setaffinity(0, sizeof set, &set) < 0 ? -errno : 0;
}

int ckvm_current_cpu(void) {
    int cpu = sched_getcpu();
    return cpu < 0 ? -errno : cpu;
}

int ckvm_allowed_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0) return -errno;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        if (n < capacity) cpus[n] = cpu;
        n++;
    }
    return n;
}

int ckvm_set_thread_name(const char *name) {
    int r = pthread_setname_np(pthread_self(), name);
    return -r;
}

int ckvm_gettid(void) { return (int)syscall(SYS_gettid); }

int ckvm_tap_open(char *name, short flags) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = flags;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    return fd;
}
