// ckvm_net.h: the tun/tap pieces the Network target needs and Swift cannot
// import: the TUNSET* requests are function-like _IOW/_IOR macros and
// TUNSETIFF takes a struct ifreq whose name lives in a union. Same contract
// as ckvm.h: the shim exports, it never decides; functions return >= 0 on
// success and -errno on failure. Documentation/networking/tuntap.rst.
#ifndef CKVM_NET_H
#define CKVM_NET_H

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>

static const unsigned CKVM_TUN_F_CSUM = TUN_F_CSUM;
static const unsigned CKVM_TUN_F_TSO4 = TUN_F_TSO4;
static const unsigned CKVM_TUN_F_TSO6 = TUN_F_TSO6;
static const short CKVM_IFF_TAP = IFF_TAP;
static const short CKVM_IFF_NO_PI = IFF_NO_PI;
static const short CKVM_IFF_VNET_HDR = IFF_VNET_HDR;
static const int CKVM_IFNAMSIZ = IFNAMSIZ;

/// TUNSETIFF: attaches `fd` (an open /dev/net/tun) to the interface `name`
/// with `flags`, creating it when it does not exist (a non-persistent
/// interface then vanishes when the last descriptor closes). The kernel's
/// name for it (IFNAMSIZ bytes, NUL-terminated) goes to `actual`.
static inline int ckvm_tun_set_iff(int fd, const char *name, short flags, char *actual) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return -errno;
    memcpy(actual, ifr.ifr_name, IFNAMSIZ);
    actual[IFNAMSIZ - 1] = 0;
    return 0;
}

/// TUNGETIFF: the interface name and flags of an attached tun/tap descriptor
/// (for a descriptor handed over by a parent process).
static inline int ckvm_tun_get_iff(int fd, short *flags, char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) < 0) return -errno;
    *flags = ifr.ifr_flags;
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    return 0;
}

/// TUNSETVNETHDRSZ: the virtio-net header length the tap reads and writes
/// in front of every frame (12 for virtio 1.x: struct virtio_net_hdr plus
/// num_buffers).
static inline int ckvm_tun_set_vnet_hdr_size(int fd, int size) {
    return ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? -errno : 0;
}

/// TUNSETOFFLOAD: which offloads the tap may hand us (TUN_F_*): what the
/// guest accepts on receive (VIRTIO_NET_F_GUEST_CSUM, _GUEST_TSO4/6).
static inline int ckvm_tun_set_offload(int fd, unsigned flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0;
}

#endif
