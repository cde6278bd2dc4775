// FeatureTests.swift: feature bits and the device status field
// (virtio 1.2 §2.1 "Device Status Field", §2.2 "Feature Bits", §6
// "Reserved Feature Bits").

import Testing
import VirtioQueue

@Suite("FeatureSet and DeviceStatus")
struct FeatureTests {
    @Test("reserved feature bits have the spec's numbers")
    func featureBitNumbers() {
        #expect(FeatureSet.ringIndirectDesc.rawValue == 1 << 28)
        #expect(FeatureSet.ringEventIdx.rawValue == 1 << 29)
        #expect(FeatureSet.version1.rawValue == 1 << 32)
        #expect(FeatureSet.accessPlatform.rawValue == 1 << 33)
        #expect(FeatureSet.ringPacked.rawValue == 1 << 34)
        #expect(FeatureSet.inOrder.rawValue == 1 << 35)
        #expect(FeatureSet.orderPlatform.rawValue == 1 << 36)
        #expect(FeatureSet.srIOV.rawValue == 1 << 37)
        #expect(FeatureSet.notificationData.rawValue == 1 << 38)
        #expect(FeatureSet.notifConfigData.rawValue == 1 << 39)
        #expect(FeatureSet.ringReset.rawValue == 1 << 40)
        #expect(FeatureSet(bit: 9).rawValue == 0x200)  // e.g. VIRTIO_BLK_F_FLUSH
        #expect(FeatureSet(bit: 64).rawValue == 0)
        #expect(FeatureSet(bit: -1).rawValue == 0)
    }

    @Test("the two 32-bit words a transport's select register shows")
    func words() {
        let f: FeatureSet = [.version1, .ringEventIdx, .ringIndirectDesc, FeatureSet(bit: 9)]
        #expect(f.word(0) == 0x3000_0200)
        #expect(f.word(1) == 0x0000_0001)
        #expect(f.word(2) == 0)
        // The driver writes its acceptance word by word.
        let accepted = FeatureSet().settingWord(0, to: 0x2000_0000).settingWord(1, to: 1)
        #expect(accepted == [.ringEventIdx, .version1])
        #expect(accepted.isSubset(of: f))
        #expect(accepted.settingWord(1, to: 0) == [.ringEventIdx])
        #expect(accepted.settingWord(7, to: 0xFFFF_FFFF) == accepted)
        #expect(f.description == "{9, 28, 29, 32}")
    }

    @Test("device status bits and their names")
    func status() {
        #expect(DeviceStatus.acknowledge.rawValue == 1)
        #expect(DeviceStatus.driver.rawValue == 2)
        #expect(DeviceStatus.driverOK.rawValue == 4)
        #expect(DeviceStatus.featuresOK.rawValue == 8)
        #expect(DeviceStatus.deviceNeedsReset.rawValue == 64)
        #expect(DeviceStatus.failed.rawValue == 128)
        let s: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK]
        #expect(s.rawValue == 0x0F)
        #expect(s.description == "ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK")
        #expect(DeviceStatus(rawValue: 0).description == "0")
        #expect(DeviceStatus(rawValue: 0x50).description == "DEVICE_NEEDS_RESET|0x10")
    }

    @Test("device type IDs (§5)")
    func deviceTypes() {
        #expect(VirtioDeviceType.net.rawValue == 1)
        #expect(VirtioDeviceType.block.rawValue == 2)
        #expect(VirtioDeviceType.vsock.rawValue == 19)
        #expect(VirtioDeviceType.block.description == "block")
        #expect(VirtioDeviceType(rawValue: 42).description == "type 42")
    }
}
