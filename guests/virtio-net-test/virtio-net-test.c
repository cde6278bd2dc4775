/* =============================================================================
 * virtio-net-test.c -- a minimal modern virtio-pci network driver, and a
 * test suite for the device it drives
 * =============================================================================
 *
 * What this guest does
 * --------------------
 * It finds a virtio network device on PCI bus 0, brings it up exactly as
 * the virtio specification describes, and then, depending on the command
 * line (test=info|ping|frames|bench), talks to the host end of the tap
 * device the VMM connects it to: ARP and ICMP echo with the host kernel
 * (test=ping), or a byte-checked stream of frames in both directions with
 * a small program on the host, guests/tools/net-peer.c (test=frames). It
 * prints only what the specification, the command line and the test setup
 * fix, so the output is the same under every correct VMM: QEMU's
 * virtio-net-pci (tap backend, vhost=off) is the reference, skvm's
 * virtio-net is what it is for. guests/README.md lists the exact output of
 * each mode; guests/tools/net-test.sh builds the network namespace, the
 * tap, the peer and the VMM around it.
 *
 * Read virtio-blk-test.c first: this file is the same kind of driver, and
 * the parts that do not depend on the device type (the machine, serial
 * output, checks and the verdict, the command line, PCI discovery, the
 * virtio capabilities, BAR sizing and assignment, the common-configuration
 * helpers) are the ones it uses too, in virtio-common/ (guest.h and
 * virtio.h list them). What is here is the network device (§5.1), two
 * virtqueues instead of one, receive buffers the device fills, merged
 * receive buffers, the offload header, and a tiny ARP/IPv4/ICMP stack.
 *
 * All of it runs in 64-bit user mode (CPL 3) and polls; the same
 * virtio-common/entry.asm as virtio-blk-test's gets there.
 *
 * The specification: Virtual I/O Device (VIRTIO) Version 1.2. Section
 * numbers below are that version's.
 *
 * 1. The device: §5.1 Network Device
 * ----------------------------------
 * PCI device ID 0x1041 (0x1040 + device ID 1, §4.1.2, §5.1.1), discovered
 * and brought up as in virtio-blk-test (§4.1.4 capabilities, §3.1.1
 * initialisation). §5.1.2: queue 0 is receiveq1, queue 1 transmitq1 (more
 * pairs only with VIRTIO_NET_F_MQ, a control queue only with CTRL_VQ; we
 * negotiate neither). §5.1.4 the configuration space:
 *     u8 mac[6]; le16 status; le16 max_virtqueue_pairs; le16 mtu; ...
 * mac exists with VIRTIO_NET_F_MAC (5), status with VIRTIO_NET_F_STATUS
 * (16): bit 0 VIRTIO_NET_S_LINK_UP, bit 1 ANNOUNCE. Six single bytes are
 * more than one 32-bit read, so the MAC is read inside the
 * config_generation loop of §2.5.1.
 *
 * Features (§5.1.3) the driver accepts, and nothing else:
 *     VERSION_1 (32), MAC (5), STATUS (16)               always (if offered)
 *     MRG_RXBUF (15)                                     mrg=1 (and offload=1)
 *     CSUM (0), HOST_TSO4 (11), GUEST_CSUM (1), GUEST_TSO4 (7)   offload=1
 * §5.1.3.1: HOST_TSO4 requires CSUM, GUEST_TSO4 requires GUEST_CSUM. No
 * EVENT_IDX, no indirect descriptors, no control queue (so the device's
 * receive filter stays in its default, promiscuous-enough state: it
 * delivers frames to our MAC and broadcasts, which is all we use).
 *
 * 2. The packet header: §5.1.6
 * ----------------------------
 * Every packet, both ways, is preceded by
 *     struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len;
 *         le16 gso_size; le16 csum_start; le16 csum_offset;
 *         le16 num_buffers; };                     // 12 bytes
 * With VERSION_1 the header is always these 12 bytes (num_buffers
 * included), merged buffers or not (§5.1.6: the legacy 10-byte form is
 * gone). flags: NEEDS_CSUM 1 (the checksum from csum_start to the end is
 * to be completed and stored at csum_start + csum_offset; the field
 * already holds the pseudo-header sum), DATA_VALID 2 (receive only: the
 * device checked it). gso_type: NONE 0, TCPV4 1, UDP 3, TCPV6 4, ECN 0x80.
 *
 * Transmit (§5.1.6.2): the driver puts header and frame in one chain of
 * device-readable descriptors; how it splits them is its business (§2.7.4
 * message framing: with VERSION_1 any layout is allowed). test=frames
 * sends alternately one descriptor (header and frame together) and two
 * (header; frame). Without offloads: flags 0, gso_type NONE, num_buffers
 * 0 (§5.1.6.2.1: the driver MUST set num_buffers to zero). With
 * offload=1 (CSUM and HOST_TSO4 negotiated) the GSO frames carry
 * NEEDS_CSUM, gso_type TCPV4, gso_size 1448 (the MSS of a 1500-byte MTU),
 * hdr_len 54, csum_start 34, csum_offset 16 (the TCP checksum field).
 *
 * Receive (§5.1.6.3, §5.1.6.4): the driver keeps the receive queue full
 * of device-writable buffers. Without MRG_RXBUF each buffer must hold a
 * whole packet: at least 1526 bytes (12 + 1514), and one buffer per
 * packet; num_buffers MUST be 1 (§5.1.6.4.1). With MRG_RXBUF a packet may
 * spread over several buffers: the header of the first one says how many
 * (num_buffers), they come as that many consecutive used elements, and
 * "the device MUST use all buffers but the last completely, up to the
 * full length of each buffer" (§5.1.6.4.1). This driver posts buffers of
 * rxbuf bytes (2048, or 1024 with mrg=1, so that frames over 1012 bytes
 * take two buffers), one descriptor each, descriptor i always holding
 * buffer i, and checks exactly that: num_buffers =
 * ceil((12 + length) / rxbuf), every buffer but the last full. Flags: 0
 * without GUEST_CSUM (MUST, §5.1.6.4.1); with it, NEEDS_CSUM or
 * DATA_VALID may appear, and GSO frames (GUEST_TSO4) arrive whole, up to
 * 65535 bytes, merged from many buffers, as the host stack built them
 * (gso_type TCPV4 with NEEDS_CSUM and the csum_start/csum_offset the host
 * stack set). A device may also deliver such a packet segmented; this test
 * expects it whole, as a device that passes the tap's vnet header through
 * (QEMU's, skvm's) delivers it.
 *
 * 3. Two queues: §2.7 Split Virtqueues
 * ------------------------------------
 * As in virtio-blk-test, each queue is a descriptor table, an available
 * ring and a used ring, avail.flags = NO_INTERRUPT, polled. Receive: all
 * buffers are offered at start, and each is offered again as soon as its
 * packet has been copied out; the driver notifies the receive queue when
 * it has offered buffers and finds nothing more to read (a device with no
 * buffers may stop reading its backend until notified, as QEMU does).
 * Transmit: descriptors 2s and 2s+1 belong to "slot" s; a frame in slot s
 * has head 2s; slots are reused round robin once the device has used them
 * (used.id / 2 names the slot). The driver notifies every 32 frames and
 * whenever it waits.
 *
 * 4. The network around it
 * ------------------------
 * guests/tools/net-test.sh creates a network namespace, a tap device tap0
 * in it with address 10.0.2.2/24 (the host end), and runs the VMM there.
 * The guest is 10.0.2.15 with the MAC from its configuration space. It
 * speaks just enough ARP (RFC 826) and IPv4/ICMP (RFC 791, 792):
 *   - ARP: it asks who has 10.0.2.2 (learning the host's MAC), and answers
 *     every request for 10.0.2.15, in every mode, whenever it reads.
 *   - test=ping: three ICMP echo requests to 10.0.2.2 (id 0x534B, sequence
 *     1-3, 56 bytes of payload), each reply checked (addresses, id,
 *     sequence, payload, both checksums); then it answers echo requests to
 *     10.0.2.15 (the runner pings it from the host) until it has answered
 *     `pings` (3) of them.
 *   - Everything else (IPv6, whatever the host sends) is ignored.
 *
 * 5. The frame protocol with net-peer (test=frames, test=bench)
 * ------------------------------------------------------------
 * net-peer (guests/tools/net-peer.c) reads and writes tap0 through an
 * AF_PACKET socket with PACKET_VNET_HDR (so it sees and sets the same
 * header as the guest, in its 10-byte form). The guest leads; the peer
 * follows. All numbers are big-endian (network order). Every test frame
 * carries this 20-byte control block ("ctl"):
 *     0  'S' 'K' 'V' 'N'        magic
 *     4  u8 kind                1 DATA, 2 END, 3 REPORT, 4 ACK, 5 START, 6 BYE
 *     5  u8 phase               see below
 *     6  be16 0
 *     8  be32 seq               DATA: 0, 1, 2, ... within the phase
 *     12 be32 a                 DATA: the frame's length; END, ACK, START:
 *                               a count; REPORT: frames received intact
 *     16 be32 b                 REPORT: frames missing or wrong; GSO DATA
 *                               and START(4): the length step (gso_step);
 *                               START(7, 8): the frame length; else 0
 * Raw frames: Ethernet header (dst, src, ethertype 0x88B5, IEEE "local
 * experimental"), ctl at offset 14, the pattern from offset 34 to the end.
 * GSO frames: Ethernet (0x0800), IPv4 (20 bytes: 0x45, tos 0, total
 * length, id = seq, DF, TTL 64, TCP, checksum), TCP (20 bytes: ports,
 * seq = seq * 65536, ack 0, offset 5, PSH|ACK, window 65535, checksum =
 * the pseudo-header sum (NEEDS_CSUM), urgent 0), ctl at offset 54, the
 * pattern from offset 74. Guest->host GSO: 10.0.2.15:21334 -> 10.0.2.3:
 * 21320 (10.0.2.3 exists nowhere, so the host's stack drops it after the
 * peer's socket has seen it; no TCP resets come back). Host->guest:
 * 10.0.2.2:21320 -> 10.0.2.15:21334.
 * The pattern byte at frame offset i of frame seq, length n, direction d
 * (0 guest->host, 0x5A host->guest) is
 *     (i + (i >> 8) * 7 + seq * 13 + n * 3) & 0xFF  XOR  d.
 * Control frames (END, REPORT, ACK, START, BYE) are 60-byte raw frames.
 * Phases:
 *     1  raw, guest->host: one frame of every length 60..1514 (seq =
 *        length - 60, 1455 frames), then END(1455); the peer answers
 *        REPORT(received intact, missing or wrong). The peer ACKs every
 *        32 frames (ACK(frames so far)) and the guest stays at most 128
 *        frames ahead of the last ACK.
 *     2  raw, host->guest: the guest sends START(2); the peer sends the
 *        same 1455 lengths (direction 0x5A) in windows of 32 frames, and
 *        waits after each window for the guest's ACK(count so far); then
 *        END(1455). The windows keep the tap's queue (500 packets) from
 *        overflowing while the guest is slow to take them.
 *     3  GSO, guest->host (offload=1): TCP/IPv4 frames of lengths 1503
 *        (the smallest with two segments: payload 1449), 1503 + step,
 *        1503 + 2 step, ... while below 65535, then 65535 (the largest
 *        frame): 64 frames with the default step 1021 (a prime, so the
 *        lengths fall everywhere relative to the MSS and the buffer size),
 *        64033 with gso_step=1 (every length); ACKs as in phase 1; END;
 *        REPORT. The peer
 *        checks the header it gets (TCPV4, gso_size 1448, NEEDS_CSUM,
 *        csum_start 34, csum_offset 16), the IPv4 and TCP headers, the
 *        pseudo-header sum and every byte.
 *     4  GSO, host->guest (offload=1): START(4, step); the same lengths,
 *        sent by the peer as GSO frames (same header), windows of 32 with
 *        ACKs; END. The guest gets them whole, merged from rxbuf-sized
 *        buffers, and checks the same.
 *     5, 6  test=bench: `count` frames of 60 bytes (5), and count / 10
 *        GSO frames of 65535 bytes (6, offload=1), guest->host, as fast
 *        as the driver can; END; REPORT (the peer counts, checking only
 *        the control block).
 *     7, 8  test=bench: START(count, length); the peer sends as fast as it
 *        can, at most 160 frames ahead of the guest's ACKs (every 32),
 *        60-byte frames (7) and 65535-byte GSO frames (8, offload=1); END.
 * Then BYE: the peer prints its summary and exits.
 *
 * Output: one line per check, "virtio-net-test: <what>: ok" or
 * "virtio-net-test: <what>: FAIL (<why>)", a few information lines, and the
 * verdict, as in virtio-blk-test:
 *     virtio-net-test: all N checks passed     -> v = 0, exit status 1
 *     virtio-net-test: K of N checks failed    -> v = 1, exit status 3
 * verbose=1 adds "[verbose]" lines (layout, and counts that depend on the
 * host, such as ARP requests answered and frames ignored).
 * ========================================================================== */

#include "virtio.h"

#define NAME "virtio-net-test"
const char guest_name[] = NAME;   /* guest.h: the prefix of every line */

/* ---- the command line -------------------------------------------------------- */

enum mode { M_INFO, M_PING, M_FRAMES, M_BENCH };
static const char *const mode_names[] = { "info", "ping", "frames", "bench" };

static struct {
    enum mode mode;
    unsigned nic;                       /* which virtio-net function */
    bool mrg, offload;
    unsigned rxbuf;                     /* 0: 2048, or 1024 with mrg */
    unsigned qsize;                     /* 0: 256 */
    uint64_t tsc_khz;                   /* 0: from CPUID, if it says */
    uint64_t count;                     /* bench: frames of each kind */
    uint64_t pings;                     /* ping: echo requests to answer */
    uint64_t wait_s;                    /* ping: how long to wait for them, in 10^9 cycles */
    uint32_t gso_step;                  /* frames offload=1: GSO lengths 1503, 1503 + step, ... */
} opt = { M_INFO, 0, false, false, 0, 0, 0, 20000, 3, 30, 1021 };

/* What a bad argument's FAIL line says after "expected ". */
#define USAGE                                                                                     \
    "test=info|ping|frames|bench nic=N mrg=0|1 offload=0|1 rxbuf=64..4096 "                        \
    "qsize=64..256 tsc_khz=N count=N pings=N wait=N gso_step=1..64032 assign-bars=0|1 verbose=0|1"

/* One KEY=VALUE argument (guest.c's parse_cmdline splits the command line
 * and handles test=MODE and verbose=0|1 itself). */
static bool option(const char *w, size_t k, const char *v, size_t vn)
{
    uint64_t num = 0;
    bool ok;
    if (word_is(w, k, "nic")) {
        ok = parse_u64(v, vn, &num) && num < 32 * 8;
        opt.nic = (unsigned)num;
    } else if (word_is(w, k, "mrg")) {
        ok = parse_bool(v, vn, &opt.mrg);
    } else if (word_is(w, k, "offload")) {
        ok = parse_bool(v, vn, &opt.offload);
    } else if (word_is(w, k, "rxbuf")) {
        ok = parse_u64(v, vn, &num) && num >= 64 && num <= 4096;
        opt.rxbuf = (unsigned)num;
    } else if (word_is(w, k, "qsize")) {
        ok = parse_u64(v, vn, &num) && num >= 64 && num <= 256 && (num & (num - 1)) == 0;
        opt.qsize = (unsigned)num;
    } else if (word_is(w, k, "tsc_khz")) {
        ok = parse_u64(v, vn, &opt.tsc_khz) && opt.tsc_khz >= 1000 && opt.tsc_khz <= 100000000;
    } else if (word_is(w, k, "count")) {
        ok = parse_u64(v, vn, &opt.count) && opt.count >= 1 && opt.count <= 100000000;
    } else if (word_is(w, k, "pings")) {
        ok = parse_u64(v, vn, &opt.pings) && opt.pings <= 1000;
    } else if (word_is(w, k, "wait")) {
        ok = parse_u64(v, vn, &opt.wait_s) && opt.wait_s >= 1 && opt.wait_s <= 1000;
    } else if (word_is(w, k, "gso_step")) {
        ok = parse_u64(v, vn, &num) && num >= 1 && num <= 64032;
        opt.gso_step = (uint32_t)num;
    } else if (word_is(w, k, "assign-bars")) {
        ok = parse_bool(v, vn, &assign_bars);
    } else {
        ok = false;
    }
    return ok;
}

/* The defaults that depend on other arguments, and their combinations. */
static void options_done(void)
{
    if (opt.offload)                    /* GUEST_TSO4 without merged buffers would need 64 KiB buffers */
        opt.mrg = true;
    if (!opt.rxbuf)
        opt.rxbuf = opt.mrg ? 1024 : 2048;
    if (!opt.mrg && opt.rxbuf < 12 + 1514) {
        set_why("without merged buffers each buffer must hold 12 + 1514 bytes (§5.1.6.3.1)");
        result(false, "argument rxbuf=%u", opt.rxbuf);
    }
}

/* ---- the device ---------------------------------------------------------------- */

#define VIRTIO_NET_DEVICE 0x1041        /* 0x1040 + device ID 1 (§4.1.2, §5.1.1) */

/* feature bits (§5.1.3; virtio.h has those of §6) */
#define F_NET_CSUM 0
#define F_NET_GUEST_CSUM 1
#define F_NET_CTRL_GUEST_OFFLOADS 2
#define F_NET_MTU 3
#define F_NET_MAC 5
#define F_NET_GUEST_TSO4 7
#define F_NET_GUEST_TSO6 8
#define F_NET_GUEST_ECN 9
#define F_NET_GUEST_UFO 10
#define F_NET_HOST_TSO4 11
#define F_NET_HOST_TSO6 12
#define F_NET_HOST_ECN 13
#define F_NET_HOST_UFO 14
#define F_NET_MRG_RXBUF 15
#define F_NET_STATUS 16
#define F_NET_CTRL_VQ 17
#define F_NET_CTRL_RX 18
#define F_NET_CTRL_VLAN 19
#define F_NET_GUEST_ANNOUNCE 21
#define F_NET_MQ 22
#define F_NET_CTRL_MAC_ADDR 23

/* The features test=info reports as offered or not: the ones this driver
 * knows and skvm's device implements (issue #6), so that the line is the
 * same under every VMM that offers them. */
#define F_REPORTED                                                                                               \
    (BIT(F_NET_CSUM) | BIT(F_NET_GUEST_CSUM) | BIT(F_NET_MAC) | BIT(F_NET_GUEST_TSO4) | BIT(F_NET_GUEST_TSO6) | \
     BIT(F_NET_HOST_TSO4) | BIT(F_NET_HOST_TSO6) | BIT(F_NET_MRG_RXBUF) | BIT(F_NET_STATUS) | BIT(F_EVENT_IDX) |   \
     BIT(F_VERSION_1))

/* struct virtio_net_config (§5.1.4): byte offsets */
#define NC_MAC 0                /* u8 mac[6] */
#define NC_STATUS 6             /* le16 status */
#define NC_MAX_VQ_PAIRS 8       /* le16 max_virtqueue_pairs */
#define NC_MTU 10               /* le16 mtu */
#define NET_S_LINK_UP 1
#define NET_S_ANNOUNCE 2

/* This driver's part of the device's state (virtio.h's dev holds the rest). */
static struct {
    uint8_t mac[6];
} net;

/* ---- the virtqueues (§2.7) ---------------------------------------------------- */

#define HDR 12                          /* struct virtio_net_hdr with VERSION_1 */
#define FRAME_MAX 65535                 /* the largest frame: a 64 KiB GSO packet */

static struct virtq_desc rx_desc[QMAX] __attribute__((aligned(4096)));
static struct virtq_avail rx_avail __attribute__((aligned(4096)));
static volatile struct virtq_used rx_used __attribute__((aligned(4096)));
static struct virtq_desc tx_desc[QMAX] __attribute__((aligned(4096)));
static struct virtq_avail tx_avail __attribute__((aligned(4096)));
static volatile struct virtq_used tx_used __attribute__((aligned(4096)));

struct vq {
    const char *name;
    uint16_t index, size;
    uint16_t avail_idx;                 /* the driver's copy of avail.idx */
    uint16_t last_used;                 /* the next used.idx we will consume */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    volatile struct virtq_used *used;
    uint64_t notify;                    /* MMIO address of its notification */
};
static struct vq rxq = { "receiveq1", 0, 0, 0, 0, rx_desc, &rx_avail, &rx_used, 0 };
static struct vq txq = { "transmitq1", 1, 0, 0, 0, tx_desc, &tx_avail, &tx_used, 0 };

/* Offer the chain at `head` (§2.7.13): ring entry, write barrier, index. */
static void vq_publish(struct vq *q, uint16_t head)
{
    q->avail->ring[q->avail_idx % q->size] = head;
    barrier();
    q->avail_idx++;
    *(volatile uint16_t *)&q->avail->idx = q->avail_idx;
}

static void vq_kick(struct vq *q)
{
    mb();                               /* avail.idx visible before the notify */
    mmio_w16(q->notify, q->index);      /* §4.1.5.2 */
}

/* The next used element, if there is one (§2.7.14). */
static bool vq_pop(struct vq *q, uint32_t *id, uint32_t *len)
{
    if (q->used->idx == q->last_used)
        return false;
    barrier();                          /* the index before the element */
    volatile struct virtq_used_elem *e = &q->used->ring[q->last_used % q->size];
    *id = e->id;
    *len = e->len;
    q->last_used++;
    return true;
}

static void __attribute__((noreturn)) timeout_fatal(struct vq *q, const char *what)
{
    set_why("nothing within 10^10 TSC cycles; %s: used.idx %u, avail.idx %u; device_status 0x%02X", q->name,
            q->used->idx, q->avail_idx, status_read());
    fatal(what);
}

/* Queue setup, step 7 of §3.1.1 (§4.1.5.1.3), for queue q->index. */
static bool vq_setup(struct vq *q, const char *label)
{
    mmio_w16(dev.common + CC_Q_SELECT, q->index);
    uint16_t max = mmio_r16(dev.common + CC_Q_SIZE);
    uint16_t noffq = mmio_r16(dev.common + CC_Q_NOFF);
    unsigned want = opt.qsize ? opt.qsize : 256;
    uint16_t size = (uint16_t)(max < want ? max : want);
    uint64_t noff = (uint64_t)noffq * dev.notify_mult;
    if (verbose)
        print(NAME ": [verbose] queue %u: maximum size %u, queue_notify_off %u\n", q->index, max, noffq);
    bool ok = false;
    if (max == 0)
        set_why("queue_size reads 0: the queue is unavailable");
    else if (max & (max - 1))
        set_why("queue_size %u is not a power of 2", max);
    else if (size < 64)
        set_why("queue_size %u: this driver needs at least 64 entries", max);
    else if (q == &rxq && opt.offload && (uint32_t)size * opt.rxbuf < HDR + FRAME_MAX)
        set_why("%u buffers of %u bytes cannot hold a 65535-byte GSO frame and its header (raise qsize or rxbuf)",
                size, opt.rxbuf);
    else if (noff + 2 > dev.caps[CAP_NOTIFY].length)
        set_why("notify offset %llu + 2 exceeds the notify structure's %u bytes", (unsigned long long)noff,
                dev.caps[CAP_NOTIFY].length);
    else
        ok = true;
    if (ok) {
        q->size = size;
        q->avail_idx = q->last_used = 0;
        memset(q->desc, 0, sizeof(struct virtq_desc) * QMAX);
        memset(q->avail, 0, sizeof(struct virtq_avail));
        memset((void *)q->used, 0, sizeof(struct virtq_used));
        q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
        mmio_w16(dev.common + CC_Q_SIZE, size);
        write64(dev.common + CC_Q_DESC, (uint64_t)(uintptr_t)q->desc);
        write64(dev.common + CC_Q_DRIVER, (uint64_t)(uintptr_t)q->avail);
        write64(dev.common + CC_Q_DEVICE, (uint64_t)(uintptr_t)q->used);
        mmio_w16(dev.common + CC_Q_ENABLE, 1);
        q->notify = dev.bar_base[dev.caps[CAP_NOTIFY].bar] + dev.caps[CAP_NOTIFY].offset + noff;
        uint16_t en = mmio_r16(dev.common + CC_Q_ENABLE);
        if (en != 1) {
            set_why("queue_enable reads %u after writing 1", en);
            ok = false;
        }
    }
    char sz[64];
    if (size >= want || !ok)
        fmt(sz, sizeof sz, "%u entries", want);
    else
        fmt(sz, sizeof sz, "%u entries (the device's maximum)", size);
    return result(ok, "%squeue %u (%s): %s, enabled", label, q->index, q->name, sz);
}

/* ---- initialisation (§3.1.1, §5.1.5) ------------------------------------------ */

static uint64_t wanted_features(uint64_t offered)
{
    uint64_t w = BIT(F_VERSION_1) | BIT(F_NET_MAC) | BIT(F_NET_STATUS);
    if (opt.mrg)
        w |= BIT(F_NET_MRG_RXBUF);
    if (opt.offload)
        w |= BIT(F_NET_CSUM) | BIT(F_NET_HOST_TSO4) | BIT(F_NET_GUEST_CSUM) | BIT(F_NET_GUEST_TSO4);
    return w & offered;
}

const char *device_feature_name(unsigned bit)
{
    switch (bit) {
    case F_NET_CSUM: return "CSUM";
    case F_NET_GUEST_CSUM: return "GUEST_CSUM";
    case F_NET_CTRL_GUEST_OFFLOADS: return "CTRL_GUEST_OFFLOADS";
    case F_NET_MTU: return "MTU";
    case F_NET_MAC: return "MAC";
    case F_NET_GUEST_TSO4: return "GUEST_TSO4";
    case F_NET_GUEST_TSO6: return "GUEST_TSO6";
    case F_NET_GUEST_ECN: return "GUEST_ECN";
    case F_NET_GUEST_UFO: return "GUEST_UFO";
    case F_NET_HOST_TSO4: return "HOST_TSO4";
    case F_NET_HOST_TSO6: return "HOST_TSO6";
    case F_NET_HOST_ECN: return "HOST_ECN";
    case F_NET_HOST_UFO: return "HOST_UFO";
    case F_NET_MRG_RXBUF: return "MRG_RXBUF";
    case F_NET_STATUS: return "STATUS";
    case F_NET_CTRL_VQ: return "CTRL_VQ";
    case F_NET_CTRL_RX: return "CTRL_RX";
    case F_NET_CTRL_VLAN: return "CTRL_VLAN";
    case F_NET_GUEST_ANNOUNCE: return "GUEST_ANNOUNCE";
    case F_NET_MQ: return "MQ";
    case F_NET_CTRL_MAC_ADDR: return "CTRL_MAC_ADDR";
    default: return NULL;
    }
}

static void rx_fill(void);

/* Steps 1-8 of §3.1.1. false: the device is unusable, stop. */
static bool device_init(void)
{
    /* 1. reset */
    if (!result(device_reset(), "reset: device_status reads 0"))
        return false;
    /* 2, 3 */
    status_write(S_ACKNOWLEDGE);
    status_write(S_ACKNOWLEDGE | S_DRIVER);
    /* 4. features */
    dev.offered = read_features();
    char names[300];
    if (verbose) {
        feature_list(names, sizeof names, dev.offered, "(none)");
        print(NAME ": [verbose] device features 0x%016llx: %s\n", (unsigned long long)dev.offered, names);
    }
    if (opt.mode == M_INFO) {
        feature_list(names, sizeof names, dev.offered & F_REPORTED, "(none)");
        print(NAME ": offered, of CSUM GUEST_CSUM MAC GUEST_TSO4 GUEST_TSO6 HOST_TSO4 HOST_TSO6 MRG_RXBUF STATUS "
                   "RING_EVENT_IDX VERSION_1: %s\n",
              names);
    }
    uint64_t need = BIT(F_VERSION_1) | BIT(F_NET_MAC);
    if (opt.mrg)
        need |= BIT(F_NET_MRG_RXBUF);
    if (opt.offload)
        need |= BIT(F_NET_CSUM) | BIT(F_NET_HOST_TSO4) | BIT(F_NET_GUEST_CSUM) | BIT(F_NET_GUEST_TSO4);
    feature_list(names, sizeof names, need, "(none)");
    if ((dev.offered & need) != need) {
        char miss[300];
        feature_list(miss, sizeof miss, need & ~dev.offered, "(none)");
        set_why("not offered: %s", miss);
    }
    if (!result((dev.offered & need) == need, "features: the device offers %s", names))
        return false;
    dev.features = wanted_features(dev.offered);
    write_features(dev.features);
    /* 5, 6. FEATURES_OK, and it must stick */
    status_write(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    uint8_t s = status_read();
    feature_list(names, sizeof names, dev.features, "(none)");
    if (!(s & S_FEATURES_OK))
        set_why("device_status reads 0x%02X: the device refused the features", s);
    if (!result(s & S_FEATURES_OK, "features: the driver accepts %s; FEATURES_OK stays set", names)) {
        status_write(s | S_FAILED);
        return false;
    }
    /* 7. the queues: receiveq1 and transmitq1 (§5.1.2) */
    uint16_t numq = mmio_r16(dev.common + CC_NUMQ);
    if (verbose)
        print(NAME ": [verbose] num_queues %u\n", numq);
    if (numq < 2) {
        set_why("num_queues is %u", numq);
        fatal("num_queues >= 2 (receiveq1, transmitq1)");
    }
    if (!vq_setup(&rxq, "") || !vq_setup(&txq, "")) {
        status_write(status_read() | S_FAILED);
        return false;
    }
    /* 8. DRIVER_OK */
    status_write(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    s = status_read();
    if (s != 0x0F)
        set_why("device_status reads 0x%02X", s);
    if (!result(s == 0x0F, "DRIVER_OK: device_status reads 0x0F"))
        return false;
    /* §5.1.5: fill the receive queue (notifications only after DRIVER_OK, §3.1.1) */
    rx_fill();
    return true;
}

/* ---- byte order, checksums, the pattern ------------------------------------------ */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void putle16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* The Internet checksum (RFC 1071): the ones' complement sum of 16-bit
 * big-endian words, `sum` carried in; fold, don't complement. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
    for (; n > 1; n -= 2, p += 2)
        sum += get16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    return sum;
}
static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)sum;
}

/* The TCP pseudo-header sum (RFC 793) for NEEDS_CSUM: folded, not
 * complemented, as the field holds it before the device completes it. */
static uint16_t pseudo_sum(uint32_t src, uint32_t dst, uint32_t tcp_len)
{
    uint32_t s = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + tcp_len;
    return csum_fold(s);
}

#define DIR_G2H 0x00
#define DIR_H2G 0x5A
static uint8_t pattern(uint32_t i, uint32_t seq, uint32_t n, uint8_t dir)
{
    return (uint8_t)((i + (i >> 8) * 7 + seq * 13 + n * 3) ^ dir);
}

/* ---- frames ------------------------------------------------------------------------ */

#define HF_NEEDS_CSUM 1
#define HF_DATA_VALID 2
#define GSO_NONE 0
#define GSO_TCPV4 1
#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define ETH_TEST 0x88B5
#define MY_IP 0x0A00020Fu               /* 10.0.2.15 */
#define HOST_IP 0x0A000202u             /* 10.0.2.2 */
#define NOWHERE_IP 0x0A000203u          /* 10.0.2.3 */
#define GUEST_PORT 21334                /* 0x5356 */
#define PEER_PORT 21320                 /* 0x5348 */
#define MSS 1448
#define WINDOW 32

static uint8_t host_mac[6];
static const uint8_t bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
static struct {
    uint64_t arp_answered, icmp_answered, ignored, rx_frames, rx_bufs, rx_merged;
    uint64_t nb_not_1;                  /* without MRG_RXBUF: num_buffers not 1 (nor 0) */
    uint64_t nb_0;                      /* without MRG_RXBUF: num_buffers 0 (QEMU 7.2) */
    uint64_t short_buf;                 /* with MRG_RXBUF: a buffer but the last not full */
} stat;
static char hdr_why[160];

/* Receive: buffer i (rxbuf bytes) in descriptor i, always. A frame is
 * copied out to rx_frame (header included) and its buffers offered again. */
static uint8_t rx_mem[QMAX * 4096] __attribute__((aligned(4096)));
static uint8_t rx_frame[HDR + FRAME_MAX + 4096] __attribute__((aligned(64)));
static uint32_t rx_len;                 /* header + frame */
static uint8_t *const rxh = rx_frame;   /* the header */
static uint8_t *const rxp = rx_frame + HDR; /* the frame */
static uint32_t rxn;                    /* the frame's length */
static bool rx_need_kick;

static void rx_post(uint16_t i)
{
    struct virtq_desc *d = &rx_desc[i];
    d->addr = (uint64_t)(uintptr_t)(rx_mem + (size_t)i * opt.rxbuf);
    d->len = opt.rxbuf;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
    vq_publish(&rxq, i);
    rx_need_kick = true;
}

static void rx_fill(void)
{
    for (uint16_t i = 0; i < rxq.size; i++)
        rx_post(i);
    vq_kick(&rxq);
    rx_need_kick = false;
}

static void rx_bad_elem(uint32_t id, uint32_t len)
{
    set_why("used element id %u, len %u: not a posted buffer of %u bytes holding at least the %u-byte header", id,
            len, opt.rxbuf, HDR);
    fatal("receiveq1: used ring");
}

/* Take the next packet, if one is there: false if none. With MRG_RXBUF
 * the packet's num_buffers used elements are consumed together. */
static bool rx_get(void)
{
    uint32_t id, len;
    if (!vq_pop(&rxq, &id, &len)) {
        if (rx_need_kick) {             /* the device may be waiting for buffers */
            vq_kick(&rxq);
            rx_need_kick = false;
        }
        return false;
    }
    if (id >= rxq.size || len > opt.rxbuf || len < HDR)
        rx_bad_elem(id, len);
    memcpy(rx_frame, rx_mem + (size_t)id * opt.rxbuf, len);
    rx_post((uint16_t)id);
    uint32_t total = len;
    uint16_t nb = le16(rx_frame + 10);
    stat.rx_frames++;
    stat.rx_bufs++;
    if (!(dev.features & BIT(F_NET_MRG_RXBUF))) {
        if (nb == 0)
            stat.nb_0++;
        else if (nb != 1)
            stat.nb_not_1++;
    } else {
        if (nb == 0) {
            set_why("num_buffers 0 in the first buffer of a packet (used len %u)", len);
            fatal("receiveq1: merged buffers");
        }
        bool short_seen = false;
        uint32_t last_len = len;
        for (uint16_t k = 1; k < nb; k++) {
            uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
            while (!vq_pop(&rxq, &id, &len)) {
                if (rx_need_kick) {
                    vq_kick(&rxq);
                    rx_need_kick = false;
                }
                if (rdtsc() > deadline) {
                    set_why("num_buffers %u, but buffer %u did not come", nb, k + 1);
                    fatal("receiveq1: merged buffers");
                }
                cpu_relax();
            }
            if (id >= rxq.size || len > opt.rxbuf)
                rx_bad_elem(id, len);
            if (total + len > sizeof rx_frame) {
                set_why("a packet of more than %u bytes", (unsigned)sizeof rx_frame);
                fatal("receiveq1: merged buffers");
            }
            if (last_len != opt.rxbuf)
                short_seen = true;
            memcpy(rx_frame + total, rx_mem + (size_t)id * opt.rxbuf, len);
            rx_post((uint16_t)id);
            total += len;
            last_len = len;
            stat.rx_bufs++;
        }
        if (short_seen)
            stat.short_buf++;
        if (nb > 1)
            stat.rx_merged++;
    }
    rx_len = total;
    rxn = total - HDR;
    return true;
}

/* Transmit: slot s = descriptors 2s, 2s+1; small frames in tx_small[s],
 * large ones (GSO) in tx_big[s], s < TX_BIG. */
#define TX_SLOTS (QMAX / 2)
#define TX_BIG 16
static uint8_t tx_small[TX_SLOTS][2048] __attribute__((aligned(4096)));
static uint8_t tx_big[TX_BIG][HDR + FRAME_MAX + 1] __attribute__((aligned(4096)));
static bool tx_busy[TX_SLOTS];
static unsigned tx_next_small, tx_next_big, tx_unkicked, tx_inflight;

static void tx_kick(void)
{
    vq_kick(&txq);
    tx_unkicked = 0;
}

static void tx_reap(void)
{
    uint32_t id, len;
    while (vq_pop(&txq, &id, &len)) {
        if (id >= txq.size || (id & 1) || !tx_busy[id / 2]) {
            set_why("used element id %u is no outstanding frame's head", id);
            fatal("transmitq1: used ring");
        }
        tx_busy[id / 2] = false;
        tx_inflight--;
    }
}

/* A free slot's buffer (header + frame) for a frame of up to `len` bytes. */
static uint8_t *tx_alloc(uint32_t len, unsigned *slot)
{
    bool big = HDR + len > sizeof tx_small[0];
    unsigned nslots = txq.size / 2;
    unsigned s = big ? tx_next_big++ % TX_BIG : tx_next_small++ % nslots;
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (tx_busy[s]) {
        if (tx_unkicked)
            tx_kick();
        tx_reap();
        if (rdtsc() > deadline)
            timeout_fatal(&txq, "transmitq1: a free slot");
        cpu_relax();
    }
    *slot = s;
    uint8_t *b = big ? tx_big[s] : tx_small[s];
    memset(b, 0, HDR);
    return b;
}

/* Offer slot s's frame (HDR + len bytes at b): one descriptor, or two
 * (header; frame) if `split`. */
static void tx_submit(unsigned s, uint8_t *b, uint32_t len, bool split)
{
    struct virtq_desc *d = &tx_desc[2 * s];
    d->addr = (uint64_t)(uintptr_t)b;
    if (split) {
        d->len = HDR;
        d->flags = VIRTQ_DESC_F_NEXT;
        d->next = (uint16_t)(2 * s + 1);
        struct virtq_desc *e = &tx_desc[2 * s + 1];
        e->addr = (uint64_t)(uintptr_t)(b + HDR);
        e->len = len;
        e->flags = 0;
        e->next = 0;
    } else {
        d->len = HDR + len;
        d->flags = 0;
        d->next = 0;
    }
    tx_busy[s] = true;
    tx_inflight++;
    vq_publish(&txq, (uint16_t)(2 * s));
    if (++tx_unkicked >= WINDOW)
        tx_kick();
}

/* Notify, and wait until the device has used every frame. */
static void tx_flush(const char *what)
{
    if (tx_unkicked)
        tx_kick();
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (tx_inflight) {
        tx_reap();
        if (rdtsc() > deadline)
            timeout_fatal(&txq, what);
        cpu_relax();
    }
}

static void eth_header(uint8_t *f, const uint8_t *dst, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, net.mac, 6);
    put16(f + 12, type);
}

/* A 60-byte frame (the Ethernet minimum without FCS), zero padded. */
static void send_small(const uint8_t *frame, uint32_t len)
{
    unsigned s;
    uint8_t *b = tx_alloc(60, &s);
    memset(b + HDR, 0, 60);
    memcpy(b + HDR, frame, len);
    tx_submit(s, b, len < 60 ? 60 : len, false);
    tx_kick();
}

/* ---- ARP (RFC 826) and ICMP echo (RFC 792) -------------------------------------------- */

static bool is_arp(uint16_t oper)
{
    const uint8_t *a = rxp + 14;
    return rxn >= 42 && get16(rxp + 12) == ETH_ARP && get16(a) == 1 && get16(a + 2) == ETH_IP && a[4] == 6 &&
           a[5] == 4 && get16(a + 6) == oper;
}

static void arp_send(uint16_t oper, const uint8_t *dst_mac, const uint8_t *tha, uint32_t tpa)
{
    uint8_t f[42];
    eth_header(f, dst_mac, ETH_ARP);
    uint8_t *a = f + 14;
    put16(a, 1);                        /* Ethernet */
    put16(a + 2, ETH_IP);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, oper);
    memcpy(a + 8, net.mac, 6);          /* sender: us */
    put32(a + 14, MY_IP);
    memcpy(a + 18, tha, 6);
    put32(a + 24, tpa);
    send_small(f, sizeof f);
}

/* An IPv4 packet to us, header without options, checksum valid; its
 * protocol, or -1. */
static int ip_to_me(void)
{
    const uint8_t *ip = rxp + 14;
    if (rxn < 34 || get16(rxp + 12) != ETH_IP || ip[0] != 0x45 || get32(ip + 16) != MY_IP)
        return -1;
    uint16_t tot = get16(ip + 2);
    if (tot < 20 || 14u + tot > rxn || csum_fold(csum_add(0, ip, 20)) != 0xFFFF)
        return -1;
    return ip[9];
}

static bool answer_icmp;                /* test=ping's second part */
static bool rx_answered;                /* rx_next returned an echo request it answered */

static void icmp_echo_reply(void)
{
    const uint8_t *ip = rxp + 14;
    uint16_t tot = get16(ip + 2);
    unsigned s;
    uint8_t *b = tx_alloc(14u + tot, &s);
    uint8_t *f = b + HDR;
    eth_header(f, rxp + 6, ETH_IP);
    memcpy(f + 14, ip, tot);
    uint8_t *rip = f + 14, *icmp = rip + 20;
    put32(rip + 12, MY_IP);
    memcpy(rip + 16, ip + 12, 4);       /* back to the sender */
    rip[8] = 64;
    put16(rip + 10, 0);
    put16(rip + 10, (uint16_t)~csum_fold(csum_add(0, rip, 20)));
    icmp[0] = 0;                        /* echo reply */
    put16(icmp + 2, 0);
    put16(icmp + 2, (uint16_t)~csum_fold(csum_add(0, icmp, tot - 20u)));
    uint32_t len = 14u + tot;
    if (len < 60) {
        memset(f + len, 0, 60 - len);
        len = 60;
    }
    tx_submit(s, b, len, false);
    tx_kick();
}

/* The next frame for the caller, answering ARP requests for us on the
 * way (and, if answer_icmp, echo requests: then it returns with
 * rx_answered set). false: nothing before the deadline. */
static bool rx_next(uint64_t deadline)
{
    rx_answered = false;
    for (;;) {
        while (!rx_get()) {
            tx_reap();
            if (rdtsc() > deadline)
                return false;
            cpu_relax();
        }
        if (is_arp(1) && get32(rxp + 14 + 24) == MY_IP) {
            arp_send(2, rxp + 6, rxp + 14 + 8, get32(rxp + 14 + 14));
            stat.arp_answered++;
            continue;
        }
        if (answer_icmp && ip_to_me() == 1) {
            const uint8_t *ip = rxp + 14, *icmp = ip + 20;
            uint16_t tot = get16(ip + 2);
            if (tot >= 28 && icmp[0] == 8 && icmp[1] == 0 && csum_fold(csum_add(0, icmp, tot - 20u)) == 0xFFFF) {
                icmp_echo_reply();
                stat.icmp_answered++;
                if (verbose)
                    print(NAME ": [verbose] answered an echo request from %u.%u.%u.%u, id 0x%04X, seq %u\n", ip[12],
                          ip[13], ip[14], ip[15], get16(icmp + 4), get16(icmp + 6));
                rx_answered = true;     /* back to the caller, who counts them */
                return true;
            }
        }
        return true;
    }
}

/* Who has 10.0.2.2? Three tries, 10^9 cycles apart. */
static bool arp_resolve(const char *label)
{
    static const uint8_t zero[6];
    for (int tries = 0; tries < 3; tries++) {
        arp_send(1, bcast, zero, HOST_IP);
        uint64_t deadline = rdtsc() + TIMEOUT_CYCLES / 10;
        while (rx_next(deadline)) {
            const uint8_t *a = rxp + 14;
            if (is_arp(2) && get32(a + 14) == HOST_IP) {
                bool ok = get32(a + 24) == MY_IP && !memcmp(a + 18, net.mac, 6) && !memcmp(rxp, net.mac, 6) &&
                          !(a[8] & 1) && !memcmp(rxp + 6, a + 8, 6);
                if (!ok)
                    set_why("the reply is not addressed to 10.0.2.15 at our MAC, or its sender MAC is not unicast");
                memcpy(host_mac, a + 8, 6);
                if (verbose)
                    print(NAME ": [verbose] 10.0.2.2 is at %02x:%02x:%02x:%02x:%02x:%02x\n", host_mac[0],
                          host_mac[1], host_mac[2], host_mac[3], host_mac[4], host_mac[5]);
                return result(ok, "%sARP: who-has 10.0.2.2: a reply from the host's MAC, to ours", label);
            }
            stat.ignored++;
        }
    }
    set_why("no ARP reply to three requests, 10^9 TSC cycles apart");
    return result(false, "%sARP: who-has 10.0.2.2: a reply from the host's MAC, to ours", label);
}

#define PING_ID 0x534B
#define PING_DATA 56

static void ping_out(uint16_t seq)
{
    unsigned s;
    uint8_t *b = tx_alloc(14 + 20 + 8 + PING_DATA, &s);
    uint8_t *f = b + HDR, *ip = f + 14, *icmp = ip + 20;
    eth_header(f, host_mac, ETH_IP);
    ip[0] = 0x45;
    ip[1] = 0;
    put16(ip + 2, 20 + 8 + PING_DATA);
    put16(ip + 4, seq);                 /* id */
    put16(ip + 6, 0x4000);              /* DF */
    ip[8] = 64;
    ip[9] = 1;
    put16(ip + 10, 0);
    put32(ip + 12, MY_IP);
    put32(ip + 16, HOST_IP);
    put16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, 20)));
    icmp[0] = 8;
    icmp[1] = 0;
    put16(icmp + 2, 0);
    put16(icmp + 4, PING_ID);
    put16(icmp + 6, seq);
    for (unsigned i = 0; i < PING_DATA; i++)
        icmp[8 + i] = pattern(i, seq, PING_DATA, DIR_G2H);
    put16(icmp + 2, (uint16_t)~csum_fold(csum_add(0, icmp, 8 + PING_DATA)));
    tx_submit(s, b, 14 + 20 + 8 + PING_DATA, false);
    tx_kick();
}

static void test_ping(void)
{
    if (!arp_resolve("ping: "))
        return;
    for (uint16_t seq = 1; seq <= 3; seq++) {
        ping_out(seq);
        uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
        bool got = false, ok = false;
        while (!got && rx_next(deadline)) {
            if (ip_to_me() != 1) {
                stat.ignored++;
                continue;
            }
            const uint8_t *ip = rxp + 14, *icmp = ip + 20;
            uint16_t tot = get16(ip + 2);
            if (tot < 28 || icmp[0] != 0 || get16(icmp + 4) != PING_ID || get16(icmp + 6) != seq) {
                stat.ignored++;
                continue;
            }
            got = true;
            ok = true;
            if (get32(ip + 12) != HOST_IP) {
                ok = false;
                set_why("the reply comes from %u.%u.%u.%u", ip[12], ip[13], ip[14], ip[15]);
            } else if (tot != 20 + 8 + PING_DATA) {
                ok = false;
                set_why("the reply's IP packet is %u bytes", tot);
            } else if (csum_fold(csum_add(0, icmp, tot - 20u)) != 0xFFFF) {
                ok = false;
                set_why("bad ICMP checksum");
            } else {
                for (unsigned i = 0; i < PING_DATA; i++)
                    if (icmp[8 + i] != pattern(i, seq, PING_DATA, DIR_G2H)) {
                        ok = false;
                        set_why("payload byte %u is 0x%02X, sent 0x%02X", i, icmp[8 + i],
                                pattern(i, seq, PING_DATA, DIR_G2H));
                        break;
                    }
            }
        }
        if (!got)
            set_why("no echo reply within 10^10 TSC cycles");
        result(ok, "ping: echo request %u to 10.0.2.2: a reply from 10.0.2.2 with id 0x%04X, sequence %u, the %u "
                   "bytes of data sent, valid checksums",
               seq, PING_ID, seq, PING_DATA);
    }
    /* The runner waits for this line, then pings 10.0.2.15 from the host. */
    print(NAME ": ping: answering ICMP echo requests to 10.0.2.15 until %llu are answered\n",
          (unsigned long long)opt.pings);
    answer_icmp = true;
    uint64_t deadline = rdtsc() + opt.wait_s * 1000000000ull;
    while (stat.icmp_answered < opt.pings && rx_next(deadline))
        if (!rx_answered)
            stat.ignored++;
    tx_flush("ping: the last echo reply sent");
    if (stat.icmp_answered < opt.pings)
        set_why("answered %llu within %llu x 10^9 TSC cycles", (unsigned long long)stat.icmp_answered,
                (unsigned long long)opt.wait_s);
    result(stat.icmp_answered >= opt.pings, "ping: answered %llu ICMP echo requests (valid checksums) to 10.0.2.15",
           (unsigned long long)opt.pings);
}

/* ---- the frame protocol with net-peer ----------------------------------------------- */

enum { K_DATA = 1, K_END, K_REPORT, K_ACK, K_START, K_BYE };
#define RAW_FIRST 60
#define RAW_LAST 1514
#define RAW_COUNT (RAW_LAST - RAW_FIRST + 1)
#define GSO_FIRST 1503                 /* 54 + 1449: the smallest with two segments */

/* The GSO lengths: 1503, 1503 + step, ... while below 65535, then 65535. */
static uint32_t gso_count(uint32_t step)
{
    return (FRAME_MAX - GSO_FIRST + step - 1) / step + 1;
}
static uint32_t gso_len(uint32_t seq, uint32_t step)
{
    return seq + 1 < gso_count(step) ? GSO_FIRST + seq * step : FRAME_MAX;
}

static void put_ctl(uint8_t *c, uint8_t kind, uint8_t phase, uint32_t seq, uint32_t a, uint32_t b)
{
    c[0] = 'S';
    c[1] = 'K';
    c[2] = 'V';
    c[3] = 'N';
    c[4] = kind;
    c[5] = phase;
    put16(c + 6, 0);
    put32(c + 8, seq);
    put32(c + 12, a);
    put32(c + 16, b);
}

static void send_ctl(uint8_t kind, uint8_t phase, uint32_t a, uint32_t b)
{
    uint8_t f[34];
    eth_header(f, host_mac, ETH_TEST);
    put_ctl(f + 14, kind, phase, 0, a, b);
    send_small(f, sizeof f);
}

/* Where the control block of the received frame is: 14 (raw), 54 (our
 * TCP frames), 0 (not a test frame). */
static uint32_t ctl_at(void)
{
    if (rxn >= 34 && get16(rxp + 12) == ETH_TEST && !memcmp(rxp + 14, "SKVN", 4))
        return 14;
    if (rxn >= 74 && ip_to_me() == 6 && get16(rxp + 34) == PEER_PORT && get16(rxp + 36) == GUEST_PORT &&
        !memcmp(rxp + 54, "SKVN", 4))
        return 54;
    return 0;
}

/* Wait for control frame `kind` of `phase` (answering ARP on the way). */
static bool wait_ctl(uint8_t kind, uint8_t phase, uint32_t *a, uint32_t *b)
{
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (rx_next(deadline)) {
        uint32_t c = ctl_at();
        if (c == 14 && rxp[18] == kind && rxp[19] == phase) {
            *a = get32(rxp + 26);
            *b = get32(rxp + 30);
            return true;
        }
        stat.ignored++;
    }
    return false;
}

/* Build a test frame of `len` bytes into f: raw, or TCP/IPv4 (gso). */
static void build_frame(uint8_t *f, uint32_t len, uint32_t seq, uint8_t phase, bool tcp)
{
    uint32_t c = 14;
    if (!tcp) {
        eth_header(f, host_mac, ETH_TEST);
    } else {
        eth_header(f, host_mac, ETH_IP);
        uint8_t *ip = f + 14, *th = f + 34;
        ip[0] = 0x45;
        ip[1] = 0;
        put16(ip + 2, (uint16_t)(len - 14));
        put16(ip + 4, (uint16_t)seq);
        put16(ip + 6, 0x4000);
        ip[8] = 64;
        ip[9] = 6;
        put16(ip + 10, 0);
        put32(ip + 12, MY_IP);
        put32(ip + 16, NOWHERE_IP);
        put16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, 20)));
        put16(th, GUEST_PORT);
        put16(th + 2, PEER_PORT);
        put32(th + 4, seq << 16);
        put32(th + 8, 0);
        th[12] = 0x50;
        th[13] = 0x18;                  /* PSH, ACK */
        put16(th + 14, 0xFFFF);
        put16(th + 16, pseudo_sum(MY_IP, NOWHERE_IP, len - 34));
        put16(th + 18, 0);
        c = 54;
    }
    put_ctl(f + c, K_DATA, phase, seq, len, tcp ? opt.gso_step : 0);
    for (uint32_t i = c + 20; i < len; i++)
        f[i] = pattern(i, seq, len, DIR_G2H);
}

static void gso_header(uint8_t *b);

/* Phases 1 and 3: the peer ACKs every 32 frames; the guest stays at most
 * G2H_AHEAD frames ahead, so that a slow peer loses nothing (its socket
 * buffer is finite, the stream with gso_step=1 is 2 GB). */
#define G2H_AHEAD 128

static void send_stream(uint8_t phase, bool tcp, uint32_t count)
{
    uint32_t acked = 0;
    for (uint32_t seq = 0; seq < count; seq++) {
        while (seq - acked >= G2H_AHEAD) {
            if (tx_unkicked)
                tx_kick();
            uint32_t a = 0, b = 0;
            if (!wait_ctl(K_ACK, phase, &a, &b)) {
                set_why("%u frames sent, %u acknowledged, then no ACK within 10^10 TSC cycles", seq, acked);
                fatal("frames: sending");
            }
            if (a > acked)
                acked = a;
        }
        uint32_t len = tcp ? gso_len(seq, opt.gso_step) : RAW_FIRST + seq;
        unsigned s;
        uint8_t *b = tx_alloc(len, &s);
        build_frame(b + HDR, len, seq, phase, tcp);
        if (tcp)
            gso_header(b);
        tx_submit(s, b, len, seq & 1);
    }
    tx_flush("sending");
}

/* Check the received frame against what the peer sends as frame seq of
 * the phase; `why` says what is wrong. */
static bool check_h2g(uint8_t phase, uint32_t seq, bool tcp)
{
    uint32_t len = tcp ? gso_len(seq, opt.gso_step) : RAW_FIRST + seq;
    uint32_t c = tcp ? 54 : 14;
    if (ctl_at() != c) {
        set_why("frame %u: not a %s test frame", seq, tcp ? "TCP" : "raw");
        return false;
    }
    const uint8_t *k = rxp + c;
    if (k[4] != K_DATA || k[5] != phase || get32(k + 8) != seq || get32(k + 12) != len) {
        set_why("expected frame %u (%u bytes), got kind %u phase %u seq %u length field %u", seq, len, k[4], k[5],
                get32(k + 8), get32(k + 12));
        return false;
    }
    if (rxn != len) {
        set_why("frame %u: %u bytes, expected %u", seq, rxn, len);
        return false;
    }
    if (memcmp(rxp, net.mac, 6) || memcmp(rxp + 6, host_mac, 6)) {
        set_why("frame %u: wrong Ethernet addresses", seq);
        return false;
    }
    /* The header: §5.1.6.4.1 */
    uint8_t fl = rxh[0], gt = rxh[1];
    bool gcsum = dev.features & BIT(F_NET_GUEST_CSUM);
    if (!tcp) {
        if (gt != GSO_NONE || (gcsum ? (fl & ~HF_DATA_VALID) : fl) != 0) {
            set_why("frame %u: header flags 0x%02X gso_type %u", seq, fl, gt);
            return false;
        }
    } else {
        uint16_t gs = le16(rxh + 4), cs = le16(rxh + 6), co = le16(rxh + 8);
        if (fl != HF_NEEDS_CSUM || gt != GSO_TCPV4 || gs != MSS || cs != 34 || co != 16) {
            set_why("frame %u: header flags 0x%02X gso_type %u gso_size %u csum_start %u csum_offset %u (expected "
                    "0x01 1 %u 34 16)",
                    seq, fl, gt, gs, cs, co, MSS);
            return false;
        }
        const uint8_t *ip = rxp + 14, *th = rxp + 34;
        if (get16(ip + 2) != len - 14 || get16(ip + 4) != (uint16_t)seq || get32(ip + 12) != HOST_IP ||
            get32(th + 4) != seq << 16 || th[12] != 0x50 || th[13] != 0x18 ||
            get16(th + 16) != pseudo_sum(HOST_IP, MY_IP, len - 34)) {
            set_why("frame %u: IPv4 or TCP header not as sent (total length %u, id %u, TCP checksum field 0x%04X, "
                    "pseudo-header sum 0x%04X)",
                    seq, get16(ip + 2), get16(ip + 4), get16(th + 16), pseudo_sum(HOST_IP, MY_IP, len - 34));
            return false;
        }
    }
    for (uint32_t i = c + 20; i < len; i++)
        if (rxp[i] != pattern(i, seq, len, DIR_H2G)) {
            set_why("frame %u (%u bytes): byte %u is 0x%02X, expected 0x%02X", seq, len, i, rxp[i],
                    pattern(i, seq, len, DIR_H2G));
            return false;
        }
    /* Merged buffers: exactly as many as needed, all but the last full */
    if (dev.features & BIT(F_NET_MRG_RXBUF)) {
        uint32_t want = (HDR + len + opt.rxbuf - 1) / opt.rxbuf;
        if (le16(rxh + 10) != want) {
            set_why("frame %u (%u bytes): num_buffers %u, expected ceil((12 + %u) / %u) = %u", seq, len,
                    le16(rxh + 10), len, opt.rxbuf, want);
            return false;
        }
    }
    return true;
}

/* A phase guest->host: send, END, and the peer's REPORT. */
static void phase_g2h(uint8_t phase, bool tcp, uint32_t count, const char *what)
{
    send_stream(phase, tcp, count);
    result(true, "frames: %s: %u frames sent", what, count);
    send_ctl(K_END, phase, count, 0);
    uint32_t a = 0, b = 0;
    bool got = wait_ctl(K_REPORT, phase, &a, &b);
    if (!got)
        set_why("no REPORT from net-peer within 10^10 TSC cycles (is it running?)");
    else if (a != count || b != 0)
        set_why("the peer received %u intact, %u missing or wrong (its output says which)", a, b);
    result(got && a == count && b == 0, "frames: %s: the peer received all %u, every byte as sent", what, count);
}

/* A phase host->guest: START, receive in windows (ACK each), END. */
static void phase_h2g(uint8_t phase, bool tcp, uint32_t count, const char *what)
{
    send_ctl(K_START, phase, count, tcp ? opt.gso_step : 0);
    uint32_t got = 0, bad = 0;
    bool ended = false;
    uint32_t end_count = 0;
    uint64_t merged_before = stat.rx_merged, short_before = stat.short_buf;
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (!ended && rx_next(deadline)) {
        uint32_t c = ctl_at();
        if (!c) {
            stat.ignored++;
            continue;
        }
        const uint8_t *k = rxp + c;
        if (k[4] == K_END && k[5] == phase) {
            ended = true;
            end_count = get32(k + 12);
            break;
        }
        if (k[4] != K_DATA || k[5] != phase) {
            stat.ignored++;
            continue;
        }
        if (!check_h2g(phase, got, tcp)) {
            if (!bad)
                fmt(hdr_why, sizeof hdr_why, "%s", why);
            bad++;
            why[0] = 0;
        }
        got++;
        if (got % WINDOW == 0 || got == count)
            send_ctl(K_ACK, phase, got, 0);
        deadline = rdtsc() + TIMEOUT_CYCLES;
    }
    if (!ended)
        set_why("received %u frames, then nothing for 10^10 TSC cycles", got);
    else if (bad)
        set_why("%u of %u wrong; the first: %s", bad, got, hdr_why);
    else if (got != count || end_count != count)
        set_why("received %u, the peer says it sent %u", got, end_count);
    result(ended && !bad && got == count && end_count == count,
           "frames: %s: received all %u in order, every byte as sent", what, count);
    if (dev.features & BIT(F_NET_MRG_RXBUF)) {
        uint64_t merged = stat.rx_merged - merged_before;
        if (stat.short_buf != short_before)
            set_why("%llu packets had a buffer other than the last not full",
                    (unsigned long long)(stat.short_buf - short_before));
        result(stat.short_buf == short_before,
               "frames: %s: merged buffers: %llu frames took more than one %u-byte buffer, all but the last full",
               what, (unsigned long long)merged, opt.rxbuf);
    }
}

static void test_frames(void)
{
    if (!arp_resolve("frames: "))
        return;
    phase_g2h(1, false, RAW_COUNT, "guest->host, 60..1514 bytes");
    phase_h2g(2, false, RAW_COUNT, "host->guest, 60..1514 bytes");
    if (opt.offload) {
        char what[80];
        fmt(what, sizeof what, "guest->host, TCPv4 GSO 1503..65535 bytes, step %u", opt.gso_step);
        phase_g2h(3, true, gso_count(opt.gso_step), what);
        fmt(what, sizeof what, "host->guest, TCPv4 GSO 1503..65535 bytes, step %u", opt.gso_step);
        phase_h2g(4, true, gso_count(opt.gso_step), what);
    }
    send_ctl(K_BYE, 0, 0, 0);
    tx_flush("BYE");
    if (!(dev.features & BIT(F_NET_MRG_RXBUF))) {
        /* §5.1.6.4.1: "the device MUST set num_buffers to 1" without
         * MRG_RXBUF. QEMU 7.2 leaves it 0 (QEMU's virtio-net fills it in only
         * for merged buffers; Linux's vhost-net had the same bug until 2025),
         * and drivers ignore it, so 0 is tolerated; anything else fails. */
        if (verbose)
            print(NAME ": [verbose] num_buffers 0 in %llu of %llu packets\n", (unsigned long long)stat.nb_0,
                  (unsigned long long)stat.rx_frames);
        if (stat.nb_not_1)
            set_why("%llu of %llu packets had num_buffers other than 1 (or 0)", (unsigned long long)stat.nb_not_1,
                    (unsigned long long)stat.rx_frames);
        result(stat.nb_not_1 == 0,
               "frames: without MRG_RXBUF every packet has num_buffers 1 (§5.1.6.4.1; 0 tolerated, as QEMU 7.2 leaves it)");
    }
}

/* ---- bench ------------------------------------------------------------------------------ */

static uint64_t tsc_khz(void)
{
    if (opt.tsc_khz)
        return opt.tsc_khz;
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    if (a >= 0x15) {
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x15), "c"(0));
        if (a && b && c)
            return (uint64_t)c * b / a / 1000;
    }
    return 0;
}

static uint32_t bench_count(bool tcp)
{
    uint32_t count = (uint32_t)opt.count;
    if (tcp)                            /* a tenth as many 64 KiB frames */
        count = count / 10 ? count / 10 : 1;
    return count;
}

/* One information line (timings differ from run to run, so no check). */
static void bench_print(const char *what, uint32_t count, uint32_t len, uint64_t cycles, const char *tail)
{
    uint64_t khz = tsc_khz();
    print(NAME ": bench: %s: %u frames of %u bytes in %llu TSC cycles", what, count, len, (unsigned long long)cycles);
    if (khz) {
        uint64_t us = cycles * 1000 / khz;
        if (!us)
            us = 1;
        print(" = %llu us: %llu frames/s, %llu MB/s", (unsigned long long)us, (unsigned long long)count * 1000000 / us,
              (unsigned long long)count * len / us);
    }
    print("%s\n", tail);
}

static void gso_header(uint8_t *b)
{
    b[0] = HF_NEEDS_CSUM;
    b[1] = GSO_TCPV4;
    putle16(b + 2, 54);                 /* hdr_len */
    putle16(b + 4, MSS);                /* gso_size */
    putle16(b + 6, 34);                 /* csum_start */
    putle16(b + 8, 16);                 /* csum_offset */
}

/* Transmit: `count` frames of `len` bytes, as fast as the driver can: each
 * slot's frame is built once, the loop only renumbers and re-offers it,
 * notifying every 32 frames and whenever it waits for a slot. Timed from
 * the first offer until the device has used the last frame. */
static void bench_tx(uint8_t phase, bool tcp, uint32_t len, const char *what)
{
    uint32_t count = bench_count(tcp);
    unsigned nslots = tcp ? TX_BIG : txq.size / 2;
    for (unsigned s = 0; s < nslots; s++) {
        uint8_t *b = tcp ? tx_big[s] : tx_small[s];
        build_frame(b + HDR, len, 0, phase, tcp);
    }
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < count; i++) {
        unsigned s;
        uint8_t *b = tx_alloc(len, &s); /* waits for the slot; zeroes the header */
        if (tcp)
            gso_header(b);
        put32(b + HDR + (tcp ? 54 : 14) + 8, i);    /* ctl.seq */
        tx_submit(s, b, len, false);
    }
    tx_flush("bench");
    uint64_t cycles = rdtsc() - t0;
    send_ctl(K_END, phase, count, 0);
    uint32_t a = 0, b = 0;
    bool got = wait_ctl(K_REPORT, phase, &a, &b);
    char tail[64];
    fmt(tail, sizeof tail, "; the peer received %u", got ? a : 0);
    bench_print(what, count, len, cycles, tail);
    if (!got)
        set_why("no REPORT from net-peer");
    result(got, "bench: %s: the peer reported", what);
}

/* Receive: the peer sends `count` frames of `len` bytes as fast as it can,
 * keeping at most 160 unacknowledged (the guest ACKs every 32). Timed
 * from the first frame to the last. */
static void bench_rx(uint8_t phase, bool tcp, uint32_t len, const char *what)
{
    uint32_t count = bench_count(tcp);
    send_ctl(K_START, phase, count, len);
    uint32_t got = 0, wrong = 0;
    uint64_t t0 = 0, t1 = 0;
    bool ended = false;
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (rx_next(deadline)) {
        uint32_t c = ctl_at();
        const uint8_t *k = rxp + c;
        if (!c || k[5] != phase) {
            stat.ignored++;
            continue;
        }
        if (k[4] == K_END) {
            ended = true;
            break;
        }
        if (k[4] != K_DATA)
            continue;
        t1 = rdtsc();
        if (!got)
            t0 = t1;
        if (rxn != len || get32(k + 8) != got)
            wrong++;
        got++;
        if (got % WINDOW == 0 || got == count)
            send_ctl(K_ACK, phase, got, 0);
        deadline = t1 + TIMEOUT_CYCLES;
    }
    bench_print(what, got, len, t1 - t0, "");
    if (!ended)
        set_why("received %u, then nothing for 10^10 TSC cycles", got);
    else if (got != count || wrong)
        set_why("received %u of %u, %u out of order or of the wrong length", got, count, wrong);
    result(ended && got == count && !wrong, "bench: %s: received all %u in order", what, count);
}

static void test_bench(void)
{
    if (!arp_resolve("bench: "))
        return;
    if (!tsc_khz())
        print(NAME ": bench: TSC frequency unknown (give tsc_khz=): cycles only\n");
    bench_tx(5, false, 60, "guest->host, 60-byte frames");
    bench_rx(7, false, 60, "host->guest, 60-byte frames");
    if (opt.offload) {
        bench_tx(6, true, FRAME_MAX, "guest->host, 65535-byte TCPv4 GSO frames");
        bench_rx(8, true, FRAME_MAX, "host->guest, 65535-byte TCPv4 GSO frames");
    }
    send_ctl(K_BYE, 0, 0, 0);
    tx_flush("BYE");
}

/* ---- main ---------------------------------------------------------------------- */

/* entry.asm calls this at CPL 3 with the Multiboot information's address. */
void guest_main(uint32_t mbi_addr);
void guest_main(uint32_t mbi_addr)
{
    opt.mode = (enum mode)parse_cmdline(guest_cmdline(mbi_addr), mode_names,
                                        sizeof mode_names / sizeof mode_names[0], option, USAGE);
    options_done();
    if (checks_failed)
        finish();
    print(NAME ": test=%s nic=%u mrg=%u offload=%u rxbuf=%u\n", mode_names[opt.mode], opt.nic, opt.mrg,
          opt.offload, opt.rxbuf);

    /* PCI discovery (§4.1.2) */
    if (!pci_find_virtio(VIRTIO_NET_DEVICE, opt.nic)) {
        set_why("found %u virtio-net function%s (1AF4:1041) on bus 0", dev.count, dev.count == 1 ? "" : "s");
        char what[64];
        fmt(what, sizeof what, "PCI bus 0: virtio-net #%u", opt.nic);
        fatal(what);
    }
    result(true, "PCI bus 0: %u virtio-net function%s (1AF4:1041), using #%u", dev.count, dev.count == 1 ? "" : "s",
           opt.nic);
    struct bdf b = dev.bdf;
    if (verbose)
        print(NAME ": [verbose] %02x:%02x.%u: revision %u, command 0x%04X\n", b.bus, b.dev, b.fn, pci_r8(b, 0x08),
              pci_r16(b, PCI_COMMAND));

    /* The virtio capabilities and their BARs (§4.1.4), then memory space
     * and bus mastering on (virtio.c) */
    virtio_pci_enable(virtio_pci_map(NC_STATUS + 2));

    /* §3.1.1 */
    if (!device_init())
        finish();

    /* §5.1.4: the MAC (six bytes: the generation loop of §2.5.1), the status */
    uint8_t before, after;
    do {
        before = mmio_r8(dev.common + CC_CFGGEN);
        for (int i = 0; i < 6; i++)
            net.mac[i] = mmio_r8(dev.devcfg + NC_MAC + i);
        after = mmio_r8(dev.common + CC_CFGGEN);
    } while (before != after);
    print(NAME ": config: MAC %02x:%02x:%02x:%02x:%02x:%02x\n", net.mac[0], net.mac[1], net.mac[2], net.mac[3],
          net.mac[4], net.mac[5]);
    if ((net.mac[0] & 1) || !(net.mac[0] | net.mac[1] | net.mac[2] | net.mac[3] | net.mac[4] | net.mac[5]))
        set_why("a multicast or all-zero address");
    result(!(net.mac[0] & 1) && (net.mac[0] | net.mac[1] | net.mac[2] | net.mac[3] | net.mac[4] | net.mac[5]),
           "config: the MAC is a unicast address");
    if (dev.features & BIT(F_NET_STATUS)) {
        uint16_t st = mmio_r16(dev.devcfg + NC_STATUS);
        if (verbose)
            print(NAME ": [verbose] config: status 0x%04X\n", st);
        if (!(st & NET_S_LINK_UP))
            set_why("status 0x%04X", st);
        result(st & NET_S_LINK_UP, "config: status: link up (VIRTIO_NET_S_LINK_UP)");
    } else {
        print(NAME ": config: no STATUS feature: the link is assumed up (§5.1.4.2)\n");
    }

    switch (opt.mode) {
    case M_INFO: break;
    case M_PING: test_ping(); break;
    case M_FRAMES: test_frames(); break;
    case M_BENCH: test_bench(); break;
    }
    if (verbose)
        print(NAME ": [verbose] received %llu packets in %llu buffers (%llu merged); answered %llu ARP requests; "
                   "ignored %llu frames\n",
              (unsigned long long)stat.rx_frames, (unsigned long long)stat.rx_bufs, (unsigned long long)stat.rx_merged,
              (unsigned long long)stat.arp_answered, (unsigned long long)stat.ignored);
    result(device_reset(), "reset at the end: device_status reads 0");
    finish();
}
