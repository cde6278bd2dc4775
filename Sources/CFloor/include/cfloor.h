// cfloor.h: the floor for `skvm bench exits`, a minimal KVM_RUN loop in C.
//
// It runs the exit-bench guest (guests/exit-bench) with nothing between two
// KVM_RUNs but a switch on the exit reason and the few stores the benchmark
// protocol needs. skvm's own Swift run loop runs the same guest in the same
// VM set-up; the difference between the two is what skvm adds per exit.
#ifndef CFLOOR_H
#define CFLOOR_H

#include <stdint.h>
#include <linux/kvm.h>

/// The guest's benchmark ports and addresses (guests/exit-bench/README).
struct cfloor_ports {
    uint16_t target_port;      // the userspace PIO exit being measured (reads return 0)
    uint16_t sample_low_port;  // a batch's TSC cycles, low 32 bits
    uint16_t sample_high_port; // high 32 bits: completes the sample
    uint16_t total_port;       // the guest's iteration count at the end
    uint16_t exit_port;        // debug-exit: the guest is done
    uint64_t target_mmio;      // the userspace MMIO exit being measured (reads return 0)
};

/// What the loop collected.
struct cfloor_result {
    uint64_t *samples;         // caller's buffer for per-batch cycle counts
    uint32_t capacity;
    uint32_t count;
    uint32_t total;            // iterations the guest says it ran
    uint32_t exit_value;       // the value written to the exit port
    uint64_t target_exits;     // exits seen at the target port or address
    int finished;              // 1 once the guest wrote the exit port
};

/// Runs vCPU `vcpu_fd` (whose mmapped kvm_run is `run`) until the guest
/// writes the exit port (returns 0), KVM_RUN fails (returns -errno; -EINTR
/// when the VMM kicked it), or an exit the floor does not handle occurs
/// (returns its positive exit reason).
int cfloor_run(int vcpu_fd, struct kvm_run *run, const struct cfloor_ports *ports, struct cfloor_result *result);

#endif
