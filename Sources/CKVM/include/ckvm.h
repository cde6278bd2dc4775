// ckvm.h: the C shim between Swift and the Linux KVM API.
//
// Swift imports plain structs, enums and object-like #defines from C headers,
// but not function-like macros (`_IOW(KVMIO, 0x80, ...)`), variadic functions
// (`ioctl`) or glibc's _GNU_SOURCE-only APIs (`sched_setaffinity`). This
// header re-exports exactly those, and nothing else: the shim exports, it
// never decides. Every function returns a value >= 0 on success and -errno on
// failure, so Swift never has to read the thread-local `errno`.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <poll.h>
#include <signal.h>
#include "ckvm_storage.h"
#include "ckvm_net.h"

/// One 16-bit load or store that cannot tear, for memory the guest changes
/// concurrently (virtio ring indexes and flags). `p` is 2-byte aligned.
/// A Swift generic load of guest memory may be compiled as a memcpy, which
/// is free to move the two bytes one at a time: a device reading avail->idx
/// while the driver moves it from 0x44FF to 0x4500 could see 0x45FF.
static inline uint16_t ckvm_load_shared_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline void ckvm_store_shared_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}

// MARK: - Request numbers (Documentation/virt/kvm/api.rst, section 4)

// System ioctls, on the /dev/kvm fd.
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// VM ioctls, on the fd KVM_CREATE_VM returns.
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;

// vCPU ioctls, on the fd KVM_CREATE_VCPU returns.
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;

// MARK: - ioctl without varargs

/// `ioctl(fd, request, arg)` with an integer argument; returns the result or -errno.
static inline int ckvm_ioctl(int fd, unsigned long request, unsigned long arg) {
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

/// `ioctl(fd, request, ptr)` with a pointer argument; returns the result or -errno.
static inline int ckvm_ioctl_ptr(int fd, unsigned long request, void *ptr) {
    int r = ioctl(fd, request, ptr);
    return r < 0 ? -errno : r;
}

// MARK: - Thread affinity and scheduling (glibc _GNU_SOURCE APIs; defined in ckvm.c)

/// Pins the calling thread to the one host CPU `cpu`. Returns 0 or -errno
/// (-EINVAL when the CPU does not exist or is not allowed).
int ckvm_pin_current_thread(int cpu);

/// The host CPU the calling thread runs on now, or -errno.
int ckvm_current_cpu(void);

/// Writes up to `capacity` CPU numbers the calling thread may run on into `cpus`;
/// returns how many there are (which may exceed `capacity`) or -errno.
int ckvm_allowed_cpus(int *cpus, int capacity);

/// Names the calling thread (at most 15 characters; shown by top -H and in
/// /proc/PID/task/TID/comm). Returns 0 or -errno.
int ckvm_set_thread_name(const char *name);

/// The kernel thread id of the calling thread.
int ckvm_gettid(void);

/// Opens the tun/tap clone device and attaches interface `name` with
/// `flags` (IFF_TAP | IFF_NO_PI | ...). Returns the fd or -errno; the
/// kernel's chosen name is copied back into `name` (IFNAMSIZ bytes).
int ckvm_tap_open(char *name, short flags);

#endif
