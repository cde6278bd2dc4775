// MACAddressTests.swift: --net mac= parsing, the default MAC, and the tap
// errors that need no network (bad names, descriptors that are not taps).
// Opening real taps is tested by the integration tests, inside a network
// namespace they create.

#if canImport(Glibc)
import Glibc
#endif
import Network
import Testing

@Suite("MACAddress")
struct MACAddressTests {
    @Test("parses six hex pairs with ':' or '-'", arguments: ["52:54:00:12:34:56", "52-54-00-12-34-56", "02:AB:cd:00:00:01"])
    func parses(_ text: String) throws {
        let mac = try #require(MACAddress(text))
        #expect(mac.bytes.count == 6)
        #expect(mac.description == String(text.lowercased().map { $0 == "-" ? ":" : $0 }))
    }

    @Test("refuses malformed and multicast addresses",
          arguments: ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:5", "52:54:00:12:34:5g", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "52:54:00-12:34:56"])
    func refuses(_ text: String) {
        #expect(MACAddress(text) == nil)
    }

    @Test("the default is stable, locally administered, unicast, and differs per seed")
    func stable() {
        let a = MACAddress.stable(seed: "tap0#0"), b = MACAddress.stable(seed: "tap0#0"), c = MACAddress.stable(seed: "tap1#1")
        #expect(a == b)
        #expect(a != c)
        #expect(Array(a.bytes.prefix(3)) == [0x52, 0x54, 0x00])
        #expect(a.bytes[0] & 0x02 != 0 && a.bytes[0] & 0x01 == 0)
    }
}

@Suite("TapDevice errors")
struct TapErrorTests {
    @Test("names the kernel would refuse are one clear line, before anything is opened",
          arguments: ["", "a/b", "has space", "sixteen-chars-xx", "..", "eth0:1"])
    func badName(_ name: String) {
        #expect(throws: NetError.self) { try TapDevice.open(name: name) }
        do { _ = try TapDevice.open(name: name) } catch {
            #expect(error.description.contains("not an interface name"))
        }
    }

    @Test("a descriptor that is not a tap is refused by --net fd=")
    func notATap() {
        let fd = open("/dev/null", O_RDWR)
        defer { close(fd) }
        do {
            _ = try TapDevice.adopt(fd: fd)
            Issue.record("adopted /dev/null")
        } catch {
            #expect(error.description.contains("--net fd=\(fd): not an open tap descriptor"))
        }
    }
}
