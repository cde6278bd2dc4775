// I8042.swift: the PS/2 controller at ports 0x60 (data) and 0x64 (status/command).
//
// On a PC the keyboard controller also drives the CPU's reset line: command
// 0xFE pulses it, which is how Linux's `reboot=k` and countless test kernels
// restart the machine. skvm ends the VM there (a VMM has nothing to reset
// into). The rest is a minimal but consistent controller (no keyboard is
// attached): the commands firmware and Linux's i8042 driver issue at probe
// time get the answers a real controller gives, so probing finishes quickly.
// Command list: the IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device
// Controller", and OSDev's summary of it.
//
// Registered for the 5 ports 0x60-0x64; offset 0 is the data port, offset 4
// the status/command port. Offsets 1-3 (0x61-0x63) read all ones: port 0x61
// belongs to the in-kernel PIT's speaker gate and never reaches this device.

import Synchronization

/// The i8042 keyboard controller, reset line included.
public final class I8042: BusDevice {
    public let name = "i8042"

    static let statusOutputFull: UInt8 = 0x01
    static let statusSystemFlag: UInt8 = 0x04   // set once the self-test passed
    static let statusCommandLast: UInt8 = 0x08  // last write was to 0x64

    private struct State {
        /// Controller configuration byte: keyboard interrupt on, system flag, translation.
        var commandByte: UInt8 = 0x45
        /// The command waiting for its data byte on port 0x60 (0x60 or 0xD1), if any.
        var pendingCommand: UInt8? = nil
        /// Bytes waiting to be read from port 0x60 (replies are at most two bytes).
        var output: [UInt8] = []
        var lastWriteWasCommand = false
    }

    private let state = Mutex(State())
    private let control: any MachineControl

    public init(control: any MachineControl) {
        self.control = control
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0:
            return UInt64(state.withLock { s in s.output.isEmpty ? 0 : s.output.removeFirst() })
        case 4:
            return UInt64(state.withLock { s in
                (s.output.isEmpty ? 0 : Self.statusOutputFull) | Self.statusSystemFlag
                    | (s.lastWriteWasCommand ? Self.statusCommandLast : 0)
            })
        default:
            return allOnes(size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let v = UInt8(truncatingIfNeeded: value)
        var reset = false
        state.withLock { s in
            switch offset {
            case 4:
                s.lastWriteWasCommand = true
                reset = command(&s, v)
            case 0:
                s.lastWriteWasCommand = false
                reset = data(&s, v)
            default:
                break
            }
        }
        // Outside the lock: the VMM may call back into devices while stopping.
        if reset { control.requestStop(.reset) }
    }

    /// A controller command on port 0x64. Returns true when it resets the machine.
    private func command(_ s: inout State, _ c: UInt8) -> Bool {
        switch c {
        case 0x20: reply(&s, s.commandByte)              // read command byte
        case 0x60, 0xD1: s.pendingCommand = c            // write command byte / output port: data follows
        case 0xA7: s.commandByte |= 0x20                 // disable aux port
        case 0xA8: s.commandByte &= ~0x20                // enable aux port
        case 0xA9: reply(&s, 0x00)                       // test aux port: passed
        case 0xAA: reply(&s, 0x55)                       // controller self-test: passed
        case 0xAB: reply(&s, 0x00)                       // test keyboard port: passed
        case 0xAD: s.commandByte |= 0x10                 // disable keyboard
        case 0xAE: s.commandByte &= ~0x10                // enable keyboard
        case 0xD0: reply(&s, 0x01)                       // read output port: reset line not asserted
        case 0xF0...0xFF:
            // Pulse output lines: bit 0 clear pulses the reset line (0xFE).
            return c & 0x01 == 0
        default: break                                   // unknown commands are ignored, as hardware does
        }
        return false
    }

    /// A byte on port 0x60. Returns true when it resets the machine.
    private func data(_ s: inout State, _ d: UInt8) -> Bool {
        switch s.pendingCommand {
        case 0x60:
            s.pendingCommand = nil
            s.commandByte = d
        case 0xD1:
            s.pendingCommand = nil
            // Output port bit 0 is the (active low) reset line.
            return d & 0x01 == 0
        default:
            // A byte for the keyboard, which is absent: a real controller
            // answers for a missing device with a timeout error code.
            reply(&s, 0xFE)
        }
        return false
    }

    private func reply(_ s: inout State, _ byte: UInt8) {
        if s.output.count < 2 { s.output.append(byte) }
    }
}
