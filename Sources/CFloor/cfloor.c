// cfloor.c: see cfloor.h. Deliberately nothing but the loop.
#include "cfloor.h"
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

int cfloor_run(int vcpu_fd, struct kvm_run *run, const struct cfloor_ports *p, struct cfloor_result *r) {
    uint32_t low = 0;
    for (;;) {
        if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) return -errno;
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            uint16_t port = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_IN) {
                memset(data, port == p->target_port ? 0 : 0xFF, (size_t)run->io.size * run->io.count);
                if (port == p->target_port) r->target_exits++;
                break;
            }
            uint32_t v = 0;
            memcpy(&v, data, run->io.size <= 4 ? run->io.size : 4);
            if (port == p->target_port) {
                r->target_exits++;
            } else if (port == p->sample_low_port) {
                low = v;
            } else if (port == p->sample_high_port) {
                if (r->count < r->capacity) r->samples[r->count++] = ((uint64_t)v << 32) | low;
            } else if (port == p->total_port) {
                r->total = v;
            } else if (port == p->exit_port) {
                r->exit_value = v;
                r->finished = 1;
                return 0;
            }
            break;
        }
        case KVM_EXIT_MMIO:
            if (run->mmio.phys_addr == p->target_mmio) r->target_exits++;
            if (!run->mmio.is_write) memset(run->mmio.data, 0, sizeof run->mmio.data);
            break;
        default:
            return (int)run->exit_reason;
        }
    }
}
