// NotificationTests.swift: notification suppression in both directions.
//
// virtio 1.2 §2.7.7 "Used Buffer Notification Suppression" (the driver's
// avail->flags VIRTQ_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX its
// used_event), §2.7.10 "Available Buffer Notification Suppression" (the
// device's used->flags VIRTQ_USED_F_NO_NOTIFY, or avail_event), and the
// vring_need_event() helper of virtio_queue.h with its 16-bit wrap-around.

import Memory
import Testing
import TestSupport
import VirtioQueue

/// Pops one chain and returns it with length 0.
private func completeOne(_ q: inout Virtqueue) throws {
    let c = try #require(try q.popAvailable())
    try q.addUsed(head: c.headIndex, length: 0)
}

/// `q.needsNotification()` (a mutating call cannot sit directly inside `#expect`).
private func notified(_ q: inout Virtqueue) -> Bool { q.needsNotification() }

@Suite("Virtqueue: notification suppression")
struct NotificationTests {
    @Test(
        "vring_need_event: the event index inside [old, new) of a batch, modulo 65536",
        arguments: [
            // (event, new, old, expected)
            (UInt16(0), UInt16(1), UInt16(0), true),  // used_event 0: notify after the first buffer
            (1, 1, 0, false),  // entry 1 not written yet
            (0, 2, 1, false),  // entry 0 was in an earlier batch
            (3, 6, 3, true),  // first entry of the batch
            (5, 6, 3, true),  // last entry of the batch
            (6, 6, 3, false),  // just past it
            (2, 6, 3, false),  // just before it
            (5, 5, 5, false),  // an empty batch never notifies
            (65535, 0, 65535, true),  // entry 65535, idx wrapped to 0
            (65535, 2, 65534, true),  // a batch straddling the wrap
            (0, 2, 65535, true),
            (1, 2, 65535, true),
            (2, 2, 65535, false),
            (65534, 0, 65535, false),  // behind the batch's start
            (1, 0, 65534, false),  // ahead of the batch's end
            (0, 0, 1, false),  // a batch of 65535 entries: [1, 0) holds everything but 0
            (1, 0, 1, true),
            (65535, 0, 1, true),
        ])
    func needEvent(event: UInt16, new: UInt16, old: UInt16, expected: Bool) {
        #expect(Virtqueue.needEvent(eventIndex: event, newIndex: new, oldIndex: old) == expected)
    }

    @Test("without EVENT_IDX: interrupt unless avail->flags has NO_INTERRUPT, once per batch")
    func flagsSuppression() throws {
        var (driver, q) = try makePair()
        for _ in 0..<4 { try driver.addChain([.readable([1])]) }
        #expect(!notified(&q))  // nothing used yet
        try completeOne(&q)
        #expect(notified(&q))
        #expect(!notified(&q))  // the same batch is not notified twice
        try driver.setAvailFlags(Virtqueue.availFlagNoInterrupt)
        try completeOne(&q)
        #expect(!notified(&q))
        try driver.setAvailFlags(0)
        try completeOne(&q)
        try completeOne(&q)
        #expect(notified(&q))
        // used_event is ignored without the feature.
        try driver.setUsedEvent(100)
        try driver.addChain([.readable([1])])
        try completeOne(&q)
        #expect(notified(&q))
    }

    @Test("with EVENT_IDX: interrupt exactly when a batch writes entry used_event; flags are ignored")
    func eventIndexSuppression() throws {
        var (driver, q) = try makePair(features: [.ringEventIdx])
        for _ in 0..<8 { try driver.addChain([.readable([1])]) }
        // used_event 0 (as initialized): the first entry notifies, the next do not.
        try completeOne(&q)
        #expect(notified(&q))
        try completeOne(&q)
        #expect(!notified(&q))
        // The driver re-arms for entry 2 (used->idx reaching 3); NO_INTERRUPT is ignored.
        try driver.setAvailFlags(Virtqueue.availFlagNoInterrupt)
        try driver.setUsedEvent(2)
        try completeOne(&q)
        #expect(notified(&q))
        // A batch of three covering entry 4 notifies once, at the end of the batch.
        try driver.setUsedEvent(4)
        try completeOne(&q)
        try completeOne(&q)
        try completeOne(&q)
        #expect(q.nextUsed == 6)
        #expect(notified(&q))
        // A batch that stops short of used_event does not.
        try driver.setUsedEvent(7)
        try completeOne(&q)
        #expect(!notified(&q))
        try completeOne(&q)
        #expect(notified(&q))
    }

    @Test("without EVENT_IDX: disable/enable set and clear used->flags NO_NOTIFY")
    func usedFlags() throws {
        var (driver, q) = try makePair()
        q.disableNotification()
        #expect(try driver.usedFlags() == Virtqueue.usedFlagNoNotify)
        #expect(q.enableNotification() == false)  // nothing pending: the device may sleep
        #expect(try driver.usedFlags() == 0)
        #expect(try driver.availEvent() == 0)  // untouched without the feature
        // A chain made available before the device re-enabled: it must keep popping.
        q.disableNotification()
        try driver.addChain([.readable([1])])
        #expect(q.enableNotification() == true)
        try completeOne(&q)
        #expect(q.enableNotification() == false)
    }

    @Test("with EVENT_IDX: enable writes avail_event = next available index; disable writes nothing")
    func availEvent() throws {
        var (driver, q) = try makePair(features: [.ringEventIdx])
        for _ in 0..<3 { try driver.addChain([.readable([1])]) }
        try completeOne(&q)
        try completeOne(&q)
        #expect(q.enableNotification() == true)  // one chain still unpopped
        #expect(try driver.availEvent() == 2)
        try completeOne(&q)
        #expect(q.enableNotification() == false)
        #expect(try driver.availEvent() == 3)
        #expect(try driver.usedFlags() == 0)  // the device MUST keep flags 0
        q.disableNotification()
        #expect(try driver.usedFlags() == 0)
        #expect(try driver.availEvent() == 3)
        // setAvailEvent asks for a notification later (after 4 more buffers).
        try q.setAvailEvent(7)
        #expect(try driver.availEvent() == 7)
    }

    @Test("notifications delivered through an InterruptSignal")
    func recordingSignal() throws {
        var (driver, q) = try makePair()
        let irq = RecordingInterruptSignal()
        try driver.addChain([.readable([1])])
        try driver.addChain([.readable([2])])
        while let c = try q.popAvailable() { try q.addUsed(head: c.headIndex, length: 0) }
        if q.needsNotification() { irq.signalUsedBuffer(queueIndex: 3) }
        if q.needsNotification() { irq.signalUsedBuffer(queueIndex: 3) }
        irq.signalConfigChange()
        #expect(irq.events == [.usedBuffer(queueIndex: 3), .configChange])
    }
}
