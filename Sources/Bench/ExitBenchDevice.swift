// ExitBenchDevice.swift: skvm's side of the exit-bench protocol.
//
// The guest times each batch of iterations with rdtsc and reports the cycles
// on two ports; at the end it reports how many iterations it ran. This device
// records the samples into a buffer allocated up front, counts the exits at
// the measured port, and snapshots the vCPU thread's allocation count at the
// first and last report, so the allocations *during* the measured batches are
// known exactly (the device runs on the vCPU thread).

import CAllocationCounter
import Devices
import Synchronization

/// The benchmark ports 0x5E0-0x5FF (the measured PIO target among them).
final class ExitBenchDevice: BusDevice {
    let name = "exit-bench"

    struct State {
        var samples: [UInt64]
        var count = 0
        var low: UInt32 = 0
        var total: UInt32? = nil
        var targetExits: UInt64 = 0
        var allocationsAtFirstSample: UInt64? = nil
        var allocationsAtTotal: UInt64? = nil
    }
    let state: Mutex<State>

    init(capacity: Int) {
        state = Mutex(State(samples: [UInt64](repeating: 0, count: capacity)))
    }

    func read(offset: UInt64, size: Int) -> UInt64 {
        if offset == UInt64(BenchPorts.target - BenchPorts.deviceBase) {
            state.withLock { $0.targetExits &+= 1 }
            return 0
        }
        return allOnes(size)
    }

    func write(offset: UInt64, size: Int, value: UInt64) {
        let port = BenchPorts.deviceBase + UInt16(offset)
        let v = UInt32(truncatingIfNeeded: value)
        state.withLock { s in
            switch port {
            case BenchPorts.target: s.targetExits &+= 1
            case BenchPorts.sampleLow: s.low = v
            case BenchPorts.sampleHigh:
                if s.count < s.samples.count {
                    s.samples[s.count] = UInt64(v) << 32 | UInt64(s.low)
                    s.count += 1
                }
                if s.allocationsAtFirstSample == nil { s.allocationsAtFirstSample = skvm_thread_allocations() }
            case BenchPorts.total:
                s.total = v
                s.allocationsAtTotal = skvm_thread_allocations()
            default: break  // ioeventfd ports whose write did not match land here: ignored
            }
        }
    }
}

/// The measured MMIO page: counts accesses, reads return 0.
final class MMIOTarget: BusDevice {
    let name = "exit-bench MMIO"
    let exits = Atomic<UInt64>(0)

    func read(offset: UInt64, size: Int) -> UInt64 {
        exits.add(1, ordering: .relaxed)
        return 0
    }

    func write(offset: UInt64, size: Int, value: UInt64) {
        exits.add(1, ordering: .relaxed)
    }
}
