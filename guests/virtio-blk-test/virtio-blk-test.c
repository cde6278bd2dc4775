/* =============================================================================
 * virtio-blk-test.c -- a minimal modern virtio-pci block driver, and a test
 * suite for the device it drives
 * =============================================================================
 *
 * What this guest does
 * --------------------
 * It finds a virtio block device on PCI bus 0, brings it up exactly as the
 * virtio specification describes, and sends it requests chosen on the
 * command line (test=info|rw|ro|bad|discard|reset|wrap), checking every
 * answer. It prints only what the specification (and the disk image) fixes,
 * so the output is the same under every correct VMM: QEMU's virtio-blk-pci
 * is the reference, skvm's virtio-blk is what it is for. guests/README.md
 * lists the exact output of each mode.
 *
 * All of it runs in 64-bit user mode (CPL 3), which KVM runs natively even
 * where CPL 0 is emulated (PVM); virtio-common/entry.asm gets there and
 * grants the ports. The driver never takes an interrupt: it polls the used
 * ring.
 *
 * Where the code is: what does not depend on the device type lives in
 * virtio-common/ and is shared with virtio-net-test: guest.h/guest.c (the
 * machine, memset and friends, serial output and printf, checks and the
 * verdict, the command line) and virtio.h/virtio.c (PCI configuration
 * mechanism #1, discovery, the virtio capabilities, BAR sizing and
 * assignment, the common configuration and virtio-mmio's registers,
 * feature names of §6, the split-virtqueue structures). This file is the
 * block driver: its queue, its requests and its tests. The story below
 * covers both, in the order a driver needs them.
 *
 * The specification: Virtual I/O Device (VIRTIO) Version 1.2. Section
 * numbers below are that version's.
 *
 * 1. Finding the device: virtio over PCI (§4.1)
 * ---------------------------------------------
 * §4.1.2 PCI Device Discovery: vendor 0x1AF4; device 0x1040 + the virtio
 * device ID, and a block device has ID 2 (§5.2.1), so 0x1042. (0x1001 is
 * the "transitional" ID of a device that also speaks the legacy interface;
 * this driver is modern only, like QEMU's disable-legacy=on.) We scan bus
 * 0 through PCI configuration mechanism #1: write 0x8000_0000 | bus << 16 |
 * device << 11 | function << 8 | register to port 0xCF8, then access
 * 0xCFC-0xCFF (1, 2 or 4 bytes).
 *
 * §4.1.4 Virtio Structure PCI Capabilities: the device's registers are not
 * at fixed places. The PCI capability list (status bit 4, pointer at
 * config offset 0x34) holds vendor-specific capabilities (cap_vndr 0x09),
 * each a struct virtio_pci_cap:
 *     u8 cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
 *     le32 offset, length;
 * saying "structure cfg_type lives in BAR `bar` at `offset`". We use the
 * first capability of each of these types (§4.1.4.1: "SHOULD use the first
 * instance"):
 *     1 common configuration (§4.1.4.3): features, status, queue setup
 *     2 notifications (§4.1.4.4): followed by le32 notify_off_multiplier;
 *       queue q is notified by writing q (16 bits) at
 *       cap.offset + queue_notify_off(q) * notify_off_multiplier
 *     3 ISR status (§4.1.4.5): one byte, read-to-clear (interrupt causes)
 *     4 device-specific configuration (§4.1.4.6): struct virtio_blk_config
 * and ignore the others (5 = PCI configuration access, 8 = shared memory).
 *
 * The BARs: firmware (QEMU's SeaBIOS) programs them before the kernel
 * runs, and skvm has no firmware but pre-assigns them itself, so normally
 * the driver just reads the address. It still sizes every BAR it uses (PCI
 * 3.0 §6.2.5.1: with decoding off, write all ones, read back, restore) and
 * checks that each structure lies inside it. A BAR that reads 0 (nobody
 * programmed it), or lies above 4 GiB (outside our page tables), it
 * assigns itself, naturally aligned, from 0xC000_0000 up (assign-bars=1
 * forces that, to test the path under QEMU). Then it sets the command
 * register's Memory Space (bit 1) and Bus Master (bit 2) bits: a PCI
 * device may only reach guest memory (the virtqueues, the buffers) with
 * bus mastering on. (QEMU 7.2's virtio-blk-pci happens to work without
 * it; a VMM may do the same, but the driver asks properly.)
 * Register access widths follow §4.1.3.1: 8-bit fields with 8-bit
 * accesses, 16-bit with 16-bit, 32-bit and 64-bit fields with (two)
 * 32-bit accesses. All fields are little-endian, as is x86.
 *
 * MSI-X: QEMU's device has an MSI-X capability (table in BAR 1). The driver
 * leaves it disabled and never writes config_msix_vector or
 * queue_msix_vector: no interrupts are wanted.
 *
 * 2. Bringing it up: §3.1 Device Initialization, §4.1.5 (PCI specifics)
 * -----------------------------------------------------------------------
 * device_status (§2.1) collects bits as initialisation proceeds:
 *     ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FEATURES_OK 8,
 *     DEVICE_NEEDS_RESET 64, FAILED 128.
 * §3.1.1, in order:
 *   1. reset: write 0 to device_status, and wait until it reads 0 (§4.1.4.3.2)
 *   2. ACKNOWLEDGE ("I see a virtio device")
 *   3. DRIVER ("I know how to drive it")
 *   4. read the 64 device feature bits (device_feature_select 0 and 1, 32
 *      bits each) and write the subset we accept to driver_feature (§2.2).
 *      VIRTIO_F_VERSION_1 (bit 32, §6) must be offered and accepted: it
 *      is what makes this the modern (1.x) interface. Block features we
 *      accept (§5.2.3): RO (5) if offered (§5.2.6.1: "SHOULD accept"),
 *      FLUSH (9) if offered, DISCARD (13) and WRITE_ZEROES (14) in
 *      test=discard only. Nothing else: no indirect descriptors, no
 *      event index, no multiqueue, no packed ring.
 *   5. FEATURES_OK, then read device_status back: if FEATURES_OK did not
 *      stick, the device refused our subset.
 *   6. set up the virtqueues (§4.1.5.1.3): queue_select = 0, read
 *      queue_size (the device's maximum; 0 = no such queue), write a
 *      smaller power of two (16, 256 for test=wrap, or qsize=), write the
 *      physical addresses of the three areas to queue_desc,
 *      queue_driver, queue_device (two 32-bit halves each), read
 *      queue_notify_off, then queue_enable = 1.
 *   7. DRIVER_OK: the device is live.
 * Then the configuration (§5.2.4): capacity (le64, in 512-byte sectors at
 * offset 0), read with the config_generation loop of §2.5.1 because a 64-bit
 * field takes two 32-bit reads.
 *
 * 3. Talking to it: §2.7 Split Virtqueues
 * ---------------------------------------
 * A virtqueue of size N is three areas of guest memory that the driver
 * and the device share (§2.7, alignments in §2.7.1: 16, 2 and 4 bytes;
 * we page-align all three):
 *   descriptor table (§2.7.5): N x { le64 addr; le32 len; le16 flags;
 *       le16 next; }, flags NEXT (1: the chain goes on at `next`) and
 *       WRITE (2: the device writes this buffer; otherwise it reads it)
 *   available ring (§2.7.6, "driver area"): le16 flags, le16 idx,
 *       le16 ring[N]: heads of chains the driver offers
 *   used ring (§2.7.8, "device area"): le16 flags, le16 idx,
 *       { le32 id; le32 len; } ring[N]: chains the device has finished,
 *       id = the head, len = bytes it wrote into the chain
 * §2.7.13 Supplying Buffers: put the chain in free descriptors, write its
 * head to avail.ring[avail.idx % N], a write barrier, then avail.idx += 1
 * (a free-running 16-bit counter: it wraps from 65535 to 0, and test=wrap
 * makes it), a full barrier, and notify (§4.1.5.2: write the queue index,
 * 16 bits, to the queue's notify address). avail.flags = 1
 * (VIRTQ_AVAIL_F_NO_INTERRUPT, §2.7.7): we poll, please don't interrupt.
 * The driver notifies after every batch, ignoring the device's
 * VIRTQ_USED_F_NO_NOTIFY hint (only an optimisation, §2.7.10).
 * §2.7.14 Receiving Used Buffers: when used.idx moves past our last seen
 * value, read the element at last % N, return the chain's descriptors to
 * the free list. Chains may complete in any order (test=wrap keeps
 * several in flight and matches them by id).
 * §2.7.4 Message Framing: the device must not assume how a request is split
 * into descriptors; test=rw sends some requests with the header and the
 * data in one descriptor, with the data split at odd offsets, and with the
 * data and the status byte in one descriptor.
 *
 * 4. The block device: §5.2
 * -------------------------
 * One queue, requestq (§5.2.2). A request (§5.2.6) is
 *     struct virtio_blk_req { le32 type; le32 reserved; le64 sector;  // device reads
 *                             u8 data[];                              // either way
 *                             u8 status; };                           // device writes
 * types IN 0 (read), OUT 1 (write), FLUSH 4, GET_ID 8 (20 bytes of
 * NUL-padded serial number), DISCARD 11, WRITE_ZEROES 13; the last two
 * carry segments { le64 sector; le32 num_sectors; le32 flags (bit 0 unmap) }
 * as data. status: OK 0, IOERR 1 ("device or driver error"), UNSUPP 2.
 * Sectors are always 512 bytes.
 *
 * The pattern on the disk
 * -----------------------
 * The test image (guests/tools/make-test-disk.sh) holds 32-byte text
 * lines, 16 per sector:
 *     "orig sector 0000002A line 0F   \n"
 * (tag, sector number mod 2^32 and line number in hex). The guest writes
 * the same lines with the tag "test", so every read can be checked
 * byte for byte, and the host can check the image afterwards. Sectors
 * used: rw 0-7, 100-115, the last one (writes) and 264-391 (reads);
 * discard 200-263; wrap 264-511. The image must hold at least 512 sectors.
 *
 * Output: one line per check, "virtio-blk-test: <what>: ok" or
 * "virtio-blk-test: <what>: FAIL (<why>)", a few information lines
 * (capacity, serial), and the verdict
 *     virtio-blk-test: all N checks passed     -> v = 0, exit status 1
 *     virtio-blk-test: K of N checks failed    -> v = 1, exit status 3
 * through the debug-exit port 0xF4. verbose=1 adds "virtio-blk-test:
 * [verbose] ..." lines with the layout (slot, BARs and addresses, offsets,
 * feature words, queue maximum): those differ between VMMs by design.
 * ========================================================================== */

#include "virtio.h"

#define NAME "virtio-blk-test"
const char guest_name[] = NAME;   /* guest.h: the prefix of every line */

/* ---- the command line -------------------------------------------------------- */

enum mode { M_INFO, M_RW, M_RO, M_BAD, M_DISCARD, M_RESET, M_WRAP, M_BENCH };
static const char *const mode_names[] = { "info", "rw", "ro", "bad", "discard", "reset", "wrap", "bench" };

static struct {
    enum mode mode;
    unsigned disk;
    bool have_capacity;
    uint64_t capacity;
    bool have_serial;
    char serial[21];
    unsigned qsize;                     /* 0: 16, or 256 for test=wrap */
    uint64_t requests;
    bool mmio;                          /* transport=mmio: virtio-mmio (§4.2), not PCI */
    uint64_t mmio_base;                 /* where to look for it (mmio=ADDR, hex) */
    uint64_t bench_mib;                 /* test=bench: MiB per sequential phase */
    uint64_t bench_random;              /* test=bench: 4 KiB random reads */
    unsigned qd;                        /* test=bench: requests in flight */
} opt = { M_INFO, 0, false, 0, false, "", 0, 65600, false, 0xD0000000ull, 256, 20000, 1 };

/* What a bad argument's FAIL line says after "expected ". */
#define USAGE                                                                                     \
    "test=info|rw|ro|bad|discard|reset|wrap|bench disk=N expect-capacity=SECTORS "                 \
    "expect-serial=TEXT qsize=4..256 requests=N assign-bars=0|1 transport=pci|mmio mmio=0xADDR "   \
    "bench-mib=N bench-random=N qd=1..32 verbose=0|1"

/* One KEY=VALUE argument (guest.c's parse_cmdline splits the command line
 * and handles test=MODE and verbose=0|1 itself). */
static bool option(const char *w, size_t k, const char *v, size_t vn)
{
    uint64_t num = 0;
    bool ok;
    if (word_is(w, k, "disk")) {
        ok = parse_u64(v, vn, &num) && num < 32 * 8;
        opt.disk = (unsigned)num;
    } else if (word_is(w, k, "expect-capacity")) {
        ok = parse_u64(v, vn, &opt.capacity);
        opt.have_capacity = true;
    } else if (word_is(w, k, "expect-serial")) {
        ok = vn <= 20;
        if (ok) {
            memcpy(opt.serial, v, vn);
            opt.serial[vn] = 0;
            opt.have_serial = true;
        }
    } else if (word_is(w, k, "qsize")) {
        ok = parse_u64(v, vn, &num) && num >= 4 && num <= 256 && (num & (num - 1)) == 0;
        opt.qsize = (unsigned)num;
    } else if (word_is(w, k, "requests")) {
        ok = parse_u64(v, vn, &opt.requests) && opt.requests >= 1 && opt.requests <= 10000000;
    } else if (word_is(w, k, "assign-bars")) {
        ok = parse_bool(v, vn, &assign_bars);
    } else if (word_is(w, k, "transport")) {
        ok = word_is(v, vn, "pci") || word_is(v, vn, "mmio");
        opt.mmio = word_is(v, vn, "mmio");
    } else if (word_is(w, k, "mmio")) {
        ok = parse_hex(v, vn, &opt.mmio_base) && opt.mmio_base % 0x200 == 0 && opt.mmio_base < (4ull << 30);
    } else if (word_is(w, k, "bench-mib")) {
        ok = parse_u64(v, vn, &opt.bench_mib) && opt.bench_mib >= 1 && opt.bench_mib <= 1u << 20;
    } else if (word_is(w, k, "bench-random")) {
        ok = parse_u64(v, vn, &opt.bench_random) && opt.bench_random >= 1 && opt.bench_random <= 100000000;
    } else if (word_is(w, k, "qd")) {
        ok = parse_u64(v, vn, &num) && num >= 1 && num <= 32;
        opt.qd = (unsigned)num;
    } else {
        ok = false;
    }
    return ok;
}

/* ---- the device ---------------------------------------------------------------- */

#define VIRTIO_BLK_DEVICE 0x1042        /* 0x1040 + device ID 2 (§4.1.2) */

/* feature bits (§5.2.3; virtio.h has those of §6) */
#define F_BLK_SIZE_MAX 1
#define F_BLK_SEG_MAX 2
#define F_BLK_GEOMETRY 4
#define F_BLK_RO 5
#define F_BLK_BLK_SIZE 6
#define F_BLK_FLUSH 9
#define F_BLK_TOPOLOGY 10
#define F_BLK_CONFIG_WCE 11
#define F_BLK_MQ 12
#define F_BLK_DISCARD 13
#define F_BLK_WRITE_ZEROES 14

/* struct virtio_blk_config (§5.2.4): byte offsets */
#define BC_CAPACITY 0           /* le64 */
#define BC_SEG_MAX 12           /* le32 */
#define BC_BLK_SIZE 20          /* le32 */
#define BC_NUM_QUEUES 34        /* le16 */
#define BC_MAX_DISCARD_SECTORS 36
#define BC_MAX_DISCARD_SEG 40
#define BC_DISCARD_ALIGNMENT 44
#define BC_MAX_WZ_SECTORS 48
#define BC_MAX_WZ_SEG 52
#define BC_WZ_MAY_UNMAP 56

/* This driver's part of the device's state (virtio.h's dev holds the rest). */
static struct {
    uint16_t qsize, notify_off;
    uint64_t notify;                    /* where queue 0 is notified */
    uint64_t capacity;
} blk;

/* ---- the virtqueue ----------------------------------------------------------- */

static struct virtq_desc vq_desc[QMAX] __attribute__((aligned(4096)));
static struct virtq_avail vq_avail __attribute__((aligned(4096)));
static volatile struct virtq_used vq_used __attribute__((aligned(4096)));

static struct {
    uint16_t size, free_head, num_free;
    uint16_t avail_idx;                 /* the driver's copy of avail.idx */
    uint16_t last_used;                 /* the next used.idx we will consume */
} vq;

static void vq_reset_memory(uint16_t size)
{
    memset(vq_desc, 0, sizeof vq_desc);
    memset(&vq_avail, 0, sizeof vq_avail);
    memset((void *)&vq_used, 0, sizeof vq_used);
    vq.size = size;
    for (uint16_t i = 0; i < size; i++)
        vq_desc[i].next = (uint16_t)(i + 1);
    vq.free_head = 0;
    vq.num_free = size;
    vq.avail_idx = 0;
    vq.last_used = 0;
    vq_avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
}

/* One buffer of a chain. `write`: the device writes it. */
struct seg { const void *addr; uint32_t len; bool write; };

/* Put a chain in free descriptors and offer it (no notification yet).
 * Returns the head, or -1 if the table is full. */
static int vq_add(const struct seg *s, int n)
{
    if (n < 1 || n > vq.num_free)
        return -1;
    uint16_t head = vq.free_head, i = head;
    for (int k = 0; k < n; k++) {
        struct virtq_desc *d = &vq_desc[i];
        d->addr = (uint64_t)(uintptr_t)s[k].addr;
        d->len = s[k].len;
        d->flags = (uint16_t)((s[k].write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        if (k + 1 < n)
            i = d->next;                /* the next free descriptor */
        else
            vq.free_head = d->next;
    }
    vq.num_free = (uint16_t)(vq.num_free - n);
    vq_avail.ring[vq.avail_idx % vq.size] = head;
    barrier();                          /* the ring entry before the index */
    vq.avail_idx++;
    *(volatile uint16_t *)&vq_avail.idx = vq.avail_idx;
    return head;
}

static void vq_kick(void)
{
    mb();                               /* avail.idx visible before the notify */
    if (dev.mmio)
        mmio_w32(blk.notify, 0);        /* QueueNotify = queue index 0 (§4.2.3.3) */
    else
        mmio_w16(blk.notify, 0);        /* queue index 0 (§4.1.5.2) */
}

static void vq_free(uint16_t head)
{
    uint16_t i = head, n = 1;
    while (vq_desc[i].flags & VIRTQ_DESC_F_NEXT) {
        i = vq_desc[i].next;
        n++;
    }
    vq_desc[i].next = vq.free_head;
    vq.free_head = head;
    vq.num_free = (uint16_t)(vq.num_free + n);
}

/* Wait for the next used element. false: timed out. */
static bool vq_get(uint32_t *id, uint32_t *len)
{
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    while (vq_used.idx == vq.last_used) {
        if (rdtsc() > deadline)
            return false;
        cpu_relax();
    }
    barrier();                          /* the index before the element */
    volatile struct virtq_used_elem *e = &vq_used.ring[vq.last_used % vq.size];
    *id = e->id;
    *len = e->len;
    vq.last_used++;
    return true;
}

static void __attribute__((noreturn)) timeout_fatal(const char *what)
{
    set_why("no used buffer within 10^10 TSC cycles; used.idx %u, avail.idx %u, device_status 0x%02X",
            vq_used.idx, vq.avail_idx, status_read());
    fatal(what);
}

/* Offer one chain, notify, wait for it. A timeout, or a used element
 * naming another chain (the queue state is then unknown), ends the run. */
static bool vq_run(const struct seg *s, int n, uint32_t *len, const char *what)
{
    int head = vq_add(s, n);
    if (head < 0) {
        set_why("descriptor table full");
        return false;
    }
    vq_kick();
    uint32_t id;
    if (!vq_get(&id, len))
        timeout_fatal(what);
    if (id != (uint32_t)head) {
        set_why("used element id %u, expected the chain's head %d", id, head);
        fatal(what);
    }
    vq_free((uint16_t)head);
    return true;
}

/* ---- initialisation (§3.1.1) ---------------------------------------------------- */

static uint64_t wanted_features(uint64_t offered)
{
    uint64_t w = BIT(F_VERSION_1) | BIT(F_BLK_RO) | BIT(F_BLK_FLUSH);
    if (opt.mode == M_DISCARD)
        w |= BIT(F_BLK_DISCARD) | BIT(F_BLK_WRITE_ZEROES);
    return w & offered;
}

const char *device_feature_name(unsigned bit)
{
    switch (bit) {
    case F_BLK_SIZE_MAX: return "SIZE_MAX";
    case F_BLK_SEG_MAX: return "SEG_MAX";
    case F_BLK_GEOMETRY: return "GEOMETRY";
    case F_BLK_RO: return "RO";
    case F_BLK_BLK_SIZE: return "BLK_SIZE";
    case F_BLK_FLUSH: return "FLUSH";
    case F_BLK_TOPOLOGY: return "TOPOLOGY";
    case F_BLK_CONFIG_WCE: return "CONFIG_WCE";
    case F_BLK_MQ: return "MQ";
    case F_BLK_DISCARD: return "DISCARD";
    case F_BLK_WRITE_ZEROES: return "WRITE_ZEROES";
    default: return NULL;
    }
}

/* Step 6 of §3.1.1 for queue 0, through the PCI common configuration
 * (§4.1.5.1.3). *size_out: the size chosen. */
static bool queue0_setup_pci(unsigned want, uint16_t *size_out)
{
    uint16_t numq = mmio_r16(dev.common + CC_NUMQ);
    mmio_w16(dev.common + CC_Q_SELECT, 0);
    uint16_t max = mmio_r16(dev.common + CC_Q_SIZE);
    blk.notify_off = mmio_r16(dev.common + CC_Q_NOFF);
    if (verbose)
        print(NAME ": [verbose] num_queues %u, queue 0: maximum size %u, queue_notify_off %u, queue_enable %u\n",
              numq, max, blk.notify_off, mmio_r16(dev.common + CC_Q_ENABLE));
    bool qok = false;
    uint16_t size = (uint16_t)(max < want ? max : want);
    *size_out = size;
    uint64_t noff = (uint64_t)blk.notify_off * dev.notify_mult;
    if (numq < 1)
        set_why("num_queues is 0");
    else if (max == 0)
        set_why("queue_size reads 0: queue 0 is unavailable");
    else if (max & (max - 1))
        set_why("queue_size %u is not a power of 2", max);
    else if (size < 4)
        set_why("queue_size %u: this driver needs at least 4 entries", max);
    else if (noff + 2 > dev.caps[CAP_NOTIFY].length)
        set_why("notify offset %llu (queue_notify_off %u x multiplier %u) + 2 exceeds the notify structure's %u bytes",
                (unsigned long long)noff, blk.notify_off, dev.notify_mult, dev.caps[CAP_NOTIFY].length);
    else
        qok = true;
    if (qok) {
        blk.qsize = size;
        vq_reset_memory(size);
        mmio_w16(dev.common + CC_Q_SIZE, size);
        write64(dev.common + CC_Q_DESC, (uint64_t)(uintptr_t)vq_desc);
        write64(dev.common + CC_Q_DRIVER, (uint64_t)(uintptr_t)&vq_avail);
        write64(dev.common + CC_Q_DEVICE, (uint64_t)(uintptr_t)&vq_used);
        mmio_w16(dev.common + CC_Q_ENABLE, 1);
        blk.notify = dev.bar_base[dev.caps[CAP_NOTIFY].bar] + dev.caps[CAP_NOTIFY].offset + noff;
        uint16_t en = mmio_r16(dev.common + CC_Q_ENABLE);
        if (en != 1) {
            set_why("queue_enable reads %u after writing 1", en);
            qok = false;
        }
    }
    return qok;
}

/* The same through virtio-mmio's registers (§4.2.3.2): select the queue,
 * read QueueNumMax, write QueueNum and the three ring addresses, then
 * QueueReady = 1. There is no queue count: a queue exists when its
 * QueueNumMax is not 0. */
static bool queue0_setup_mmio(unsigned want, uint16_t *size_out)
{
    mmio_w32(dev.mmio + MM_Q_SEL, 0);
    uint32_t ready = mmio_r32(dev.mmio + MM_Q_READY);
    uint32_t max = mmio_r32(dev.mmio + MM_Q_NUM_MAX);
    if (verbose)
        print(NAME ": [verbose] queue 0: QueueNumMax %u, QueueReady %u\n", max, ready);
    uint16_t size = (uint16_t)(max < want ? max : want);
    *size_out = size;
    if (ready != 0) {
        set_why("QueueReady reads %u before the queue is set up", ready);
        return false;
    }
    if (max == 0) {
        set_why("QueueNumMax reads 0: queue 0 is unavailable");
        return false;
    }
    if (max > 32768 || (max & (max - 1))) {
        set_why("QueueNumMax %u is not a power of 2 up to 32768", max);
        return false;
    }
    if (size < 4) {
        set_why("QueueNumMax %u: this driver needs at least 4 entries", max);
        return false;
    }
    blk.qsize = size;
    vq_reset_memory(size);
    mmio_w32(dev.mmio + MM_Q_NUM, size);
    write64(dev.mmio + MM_Q_DESC, (uint64_t)(uintptr_t)vq_desc);
    write64(dev.mmio + MM_Q_DRIVER, (uint64_t)(uintptr_t)&vq_avail);
    write64(dev.mmio + MM_Q_DEVICE, (uint64_t)(uintptr_t)&vq_used);
    mmio_w32(dev.mmio + MM_Q_READY, 1);
    blk.notify = dev.mmio + MM_Q_NOTIFY;
    ready = mmio_r32(dev.mmio + MM_Q_READY);
    if (ready != 1) {
        set_why("QueueReady reads %u after writing 1", ready);
        return false;
    }
    return true;
}

/* Steps 1-7 of §3.1.1 (the PCI discovery is done). Each step is a check;
 * `label` prefixes the lines ("" for the first time, "reset: ..." later).
 * false: the device is unusable, stop. */
static bool device_init(const char *label)
{
    /* 1. reset */
    if (!result(device_reset(), "%sreset: device_status reads 0", label))
        return false;
    /* 2, 3 */
    status_write(S_ACKNOWLEDGE);
    status_write(S_ACKNOWLEDGE | S_DRIVER);
    /* 4. features */
    dev.offered = read_features();
    if (verbose) {
        char names[256];
        feature_list(names, sizeof names, dev.offered, "");
        print(NAME ": [verbose] device features 0x%016llx: %s\n", (unsigned long long)dev.offered, names);
    }
    if (!(dev.offered & BIT(F_VERSION_1)))
        set_why("device_feature 0x%016llx lacks bit 32", (unsigned long long)dev.offered);
    if (!result(dev.offered & BIT(F_VERSION_1), "%sfeatures: the device offers VERSION_1", label))
        return false;
    dev.features = wanted_features(dev.offered);
    write_features(dev.features);
    /* 5. FEATURES_OK, and it must stick */
    status_write(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    uint8_t s = status_read();
    char names[128];
    feature_list(names, sizeof names, dev.features, "");
    if (!(s & S_FEATURES_OK))
        set_why("device_status reads 0x%02X: the device refused the features", s);
    if (!result(s & S_FEATURES_OK, "%sfeatures: the driver accepts %s; FEATURES_OK stays set", label, names)) {
        status_write(s | S_FAILED);
        return false;
    }
    /* 6. queue 0 */
    unsigned want = opt.qsize ? opt.qsize : opt.mode == M_WRAP || opt.mode == M_BENCH ? 256 : 16;
    uint16_t size = 0;
    bool qok = dev.mmio ? queue0_setup_mmio(want, &size) : queue0_setup_pci(want, &size);
    char sz[64];
    if (size >= want || !qok)
        fmt(sz, sizeof sz, "%u entries", want);
    else
        fmt(sz, sizeof sz, "%u entries (the device's maximum)", size);
    if (!result(qok, "%squeue 0: %s, enabled", label, sz)) {
        status_write(status_read() | S_FAILED);
        return false;
    }
    /* 7. DRIVER_OK */
    status_write(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    s = status_read();
    if (s != 0x0F)
        set_why("device_status reads 0x%02X", s);
    return result(s == 0x0F, "%sDRIVER_OK: device_status reads 0x0F", label);
}

/* ---- block requests (§5.2.6) ----------------------------------------------------- */

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define T_ZONE_REPORT 16
#define ST_OK 0
#define ST_IOERR 1
#define ST_UNSUPP 2
#define STATUS_UNSET 0xFF               /* what the status byte holds before */
#define SECTOR 512u

struct blk_hdr { uint32_t type, reserved; uint64_t sector; };
struct blk_dwz { uint64_t sector; uint32_t num_sectors, flags; };

static struct blk_hdr hdr __attribute__((aligned(16)));
static uint8_t status_byte __attribute__((aligned(16)));
static uint8_t dbuf[64 * 1024] __attribute__((aligned(4096)));  /* data to and from the device */
static uint8_t combo[2 * 4096] __attribute__((aligned(4096)));  /* header+data in one buffer */
static struct blk_dwz dwz __attribute__((aligned(16)));
static uint8_t serial[20] __attribute__((aligned(16)));

static const char *status_name(uint8_t s)
{
    static char buf[8];
    switch (s) {
    case ST_OK: return "OK";
    case ST_IOERR: return "IOERR";
    case ST_UNSUPP: return "UNSUPP";
    case STATUS_UNSET: return "not written (0xFF)";
    default:
        fmt(buf, sizeof buf, "0x%02X", s);
        return buf;
    }
}

/* Run a chain whose last byte of the last writable buffer is the status
 * (at *st). Checks the status and, for OK, that used.len counts every
 * writable byte (the data the device filled, and the status byte). */
static bool chain_expect(const struct seg *s, int n, uint8_t *st, uint8_t expect, const char *what)
{
    uint32_t writable = 0, len = 0;
    for (int i = 0; i < n; i++)
        if (s[i].write)
            writable += s[i].len;
    *st = STATUS_UNSET;
    if (!vq_run(s, n, &len, what))
        return false;
    if (*st != expect) {
        set_why("status %s, expected %s", status_name(*st), status_name(expect));
        return false;
    }
    if (expect == ST_OK && len != writable) {
        set_why("used.len %u, expected %u (the device-writable bytes)", len, writable);
        return false;
    }
    return true;
}

/* The usual layout: header, data buffers, status. */
static bool req(uint32_t type, uint64_t sector, const struct seg *data, int ndata, uint8_t expect, const char *what)
{
    struct seg s[8];
    int n = 0;
    hdr.type = type;
    hdr.reserved = 0;
    hdr.sector = sector;
    s[n++] = (struct seg){ &hdr, sizeof hdr, false };
    for (int i = 0; i < ndata; i++)
        s[n++] = data[i];
    s[n++] = (struct seg){ &status_byte, 1, true };
    return chain_expect(s, n, &status_byte, expect, what);
}

/* IN or OUT of `count` sectors with the data in dbuf, one descriptor. */
static bool rw1(uint32_t type, uint64_t sector, uint32_t count, uint8_t expect, const char *what)
{
    struct seg d = { dbuf, count * SECTOR, type == T_IN };
    if (type == T_IN)
        memset(dbuf, 0xEE, count * SECTOR);
    return req(type, sector, &d, 1, expect, what);
}

/* ---- the disk pattern ------------------------------------------------------- */

/* "orig sector 0000002A line 0F   \n": 32 bytes, 16 lines per sector. */
static void pattern_line(char *p, const char *tag, uint64_t sector, unsigned line)
{
    fmt(p, 33, "%s sector %08X line %02X   \n", tag, (unsigned)(uint32_t)sector, line);
}

static void fill_pattern(uint8_t *buf, const char *tag, uint64_t sector, uint32_t count)
{
    char tmp[40];
    for (uint32_t s = 0; s < count; s++)
        for (unsigned l = 0; l < 16; l++) {
            pattern_line(tmp, tag, sector + s, l);
            memcpy(buf + s * SECTOR + l * 32, tmp, 32);
        }
}

static bool sector_is(const uint8_t *p, const char *tag, uint64_t sector)
{
    char tmp[40];
    for (unsigned l = 0; l < 16; l++) {
        pattern_line(tmp, tag, sector, l);
        if (memcmp(p + l * 32, tmp, 32))
            return false;
    }
    return true;
}

static bool all_bytes(const uint8_t *p, uint32_t n, uint8_t v)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i] != v)
            return false;
    return true;
}

/* What a sector that failed a comparison holds, for the FAIL line. */
static void describe(const uint8_t *p, uint64_t sector, const char *expect)
{
    const char *holds = NULL;
    if (sector_is(p, "orig", sector))
        holds = "the 'orig' pattern";
    else if (sector_is(p, "test", sector))
        holds = "the 'test' pattern";
    else if (all_bytes(p, SECTOR, 0))
        holds = "zeros";
    else if (all_bytes(p, SECTOR, 0xEE))
        holds = "0xEE: the device wrote nothing there";
    if (holds) {
        bool again = holds[5] == 't' && expect[1] == 'o';   /* 'test' where 'orig' belongs */
        set_why("sector %llu holds %s, expected %s%s", (unsigned long long)sector, holds, expect,
                again ? "; was the image written by an earlier run? make a new one with make-test-disk.sh" : "");
        return;
    }
    char tmp[40];
    for (unsigned i = 0; i < SECTOR; i++) {
        uint8_t e = 0;
        if (expect[0] == '\'') {        /* "'orig' pattern" */
            char tag[5] = { expect[1], expect[2], expect[3], expect[4], 0 };
            pattern_line(tmp, tag, sector, i / 32);
            e = (uint8_t)tmp[i % 32];
        }
        if (p[i] != e) {
            set_why("sector %llu byte %u is 0x%02X, expected 0x%02X (%s)", (unsigned long long)sector, i, p[i], e,
                    expect);
            return;
        }
    }
}

/* Check `count` sectors in buf against the pattern `tag`. */
static bool verify(const uint8_t *buf, const char *tag, uint64_t sector, uint32_t count)
{
    char expect[24];
    fmt(expect, sizeof expect, "'%s' pattern", tag);
    for (uint32_t s = 0; s < count; s++)
        if (!sector_is(buf + s * SECTOR, tag, sector + s)) {
            describe(buf + s * SECTOR, sector + s, expect);
            return false;
        }
    return true;
}

static bool verify_zero(const uint8_t *buf, uint64_t sector, uint32_t count)
{
    for (uint32_t s = 0; s < count; s++)
        if (!all_bytes(buf + s * SECTOR, SECTOR, 0)) {
            describe(buf + s * SECTOR, sector + s, "zeros");
            return false;
        }
    return true;
}

/* ---- the tests ---------------------------------------------------------------- */

static char what[192];
#define WHAT(...) (fmt(what, sizeof what, __VA_ARGS__), what)

/* IN `count` sectors and compare with the pattern `tag`. */
static bool read_check(const char *label, uint64_t sector, uint32_t count, const char *tag)
{
    if (count == 1)
        WHAT("%sIN sector %llu: OK, '%s' pattern", label, (unsigned long long)sector, tag);
    else
        WHAT("%sIN sectors %llu-%llu (%u sectors, one descriptor): OK, '%s' pattern", label,
             (unsigned long long)sector, (unsigned long long)(sector + count - 1), count, tag);
    bool ok = rw1(T_IN, sector, count, ST_OK, what) && verify(dbuf, tag, sector, count);
    return result(ok, "%s", what);
}

static void get_id(const char *label)
{
    memset(serial, 0, sizeof serial);   /* QEMU writes only strlen + 1 bytes */
    struct seg d = { serial, sizeof serial, true };
    bool ok = req(T_GET_ID, 0, &d, 1, ST_OK, "GET_ID");
    result(ok, "%sGET_ID (20-byte buffer): OK", label);
    char text[100];
    size_t n = 0;
    for (unsigned i = 0; i < sizeof serial && serial[i]; i++) {
        uint8_t c = serial[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            n += fmt(text + n, sizeof text - n, "%c", c);
        else
            n += fmt(text + n, sizeof text - n, "\\x%02X", c);
    }
    text[n] = 0;
    print(NAME ": %sserial: \"%s\"\n", label, text);
    if (opt.have_serial && !label[0]) {
        if (memcmp(serial, opt.serial, 20) != 0)
            set_why("the device's serial differs");
        result(memcmp(serial, opt.serial, 20) == 0, "serial is \"%s\" (expect-serial)", opt.serial);
    }
}

static bool dwz_req(uint32_t type, uint64_t sector, uint32_t count, uint32_t flags, uint8_t expect, const char *w)
{
    dwz.sector = sector;
    dwz.num_sectors = count;
    dwz.flags = flags;
    struct seg d = { &dwz, sizeof dwz, false };
    return req(type, 0, &d, 1, expect, w);
}

/* test=rw: writes of 1 and 8 sectors, FLUSH, reads of the same sectors
 * with several framings, and the untouched neighbours. */
static void test_rw(void)
{
    uint64_t last = blk.capacity - 1;
    if (!(dev.offered & BIT(F_BLK_FLUSH)))
        set_why("VIRTIO_BLK_F_FLUSH (bit 9) not offered");
    result(dev.offered & BIT(F_BLK_FLUSH), "rw: the device offers FLUSH");
    if (dev.offered & BIT(F_BLK_RO))
        set_why("VIRTIO_BLK_F_RO (bit 5) offered: the disk is read-only");
    result(!(dev.offered & BIT(F_BLK_RO)), "rw: the device does not offer RO");

    read_check("rw: ", 0, 1, "orig");
    read_check("rw: ", 100, 16, "orig");
    read_check("rw: ", last, 1, "orig");
    read_check("rw: ", 264, 128, "orig");

    for (uint64_t s = 0; s < 7; s++) {
        fill_pattern(dbuf, "test", s, 1);
        WHAT("rw: OUT sector %llu: OK", (unsigned long long)s);
        result(rw1(T_OUT, s, 1, ST_OK, what), "%s", what);
    }
    {   /* the header and the data in one device-readable buffer */
        struct blk_hdr *h = (struct blk_hdr *)combo;
        h->type = T_OUT;
        h->reserved = 0;
        h->sector = 7;
        fill_pattern(combo + sizeof *h, "test", 7, 1);
        struct seg s[2] = { { combo, sizeof *h + SECTOR, false }, { &status_byte, 1, true } };
        WHAT("rw: OUT sector 7, header and data in one descriptor: OK");
        result(chain_expect(s, 2, &status_byte, ST_OK, what), "%s", what);
    }
    fill_pattern(dbuf, "test", 100, 8);
    WHAT("rw: OUT sectors 100-107 (8 sectors, one descriptor): OK");
    result(rw1(T_OUT, 100, 8, ST_OK, what), "%s", what);
    {   /* 8 sectors split at a byte offset that is no multiple of 512 */
        fill_pattern(dbuf, "test", 108, 8);
        struct seg d[2] = { { dbuf, 1536 + 100, false }, { dbuf + 1636, 4096 - 1636, false } };
        WHAT("rw: OUT sectors 108-115, data in two descriptors (1636 + 2460 bytes): OK");
        result(req(T_OUT, 108, d, 2, ST_OK, what), "%s", what);
    }
    fill_pattern(dbuf, "test", last, 1);
    WHAT("rw: OUT sector %llu (the last one): OK", (unsigned long long)last);
    result(rw1(T_OUT, last, 1, ST_OK, what), "%s", what);
    WHAT("rw: FLUSH: OK");
    result(req(T_FLUSH, 0, NULL, 0, ST_OK, what), "%s", what);

    read_check("rw: ", 0, 8, "test");
    {   /* the data and the status byte in one device-writable buffer */
        memset(combo, 0xEE, SECTOR + 1);
        hdr.type = T_IN;
        hdr.reserved = 0;
        hdr.sector = 0;
        struct seg s[2] = { { &hdr, sizeof hdr, false }, { combo, SECTOR + 1, true } };
        WHAT("rw: IN sector 0, data and status in one descriptor: OK, 'test' pattern");
        bool ok = chain_expect(s, 2, &combo[SECTOR], ST_OK, what) && verify(combo, "test", 0, 1);
        result(ok, "%s", what);
    }
    {
        memset(dbuf, 0xEE, SECTOR);
        struct seg d[2] = { { dbuf, 200, true }, { dbuf + 200, SECTOR - 200, true } };
        WHAT("rw: IN sector 100, data in two descriptors (200 + 312 bytes): OK, 'test' pattern");
        bool ok = req(T_IN, 100, d, 2, ST_OK, what) && verify(dbuf, "test", 100, 1);
        result(ok, "%s", what);
    }
    {
        memset(dbuf, 0xEE, 16 * SECTOR);
        struct seg d[2] = { { dbuf, 4096, true }, { dbuf + 4096, 4096, true } };
        WHAT("rw: IN sectors 100-115, data in two descriptors (4096 + 4096 bytes): OK, 'test' pattern");
        bool ok = req(T_IN, 100, d, 2, ST_OK, what) && verify(dbuf, "test", 100, 16);
        result(ok, "%s", what);
    }
    read_check("rw: ", last, 1, "test");
    read_check("rw: untouched: ", 8, 1, "orig");
    read_check("rw: untouched: ", 99, 1, "orig");
    read_check("rw: untouched: ", 116, 1, "orig");
    read_check("rw: untouched: ", last - 1, 1, "orig");
}

/* test=ro: the device offers RO and refuses writes. */
static void test_ro(void)
{
    if (!(dev.offered & BIT(F_BLK_RO)))
        set_why("VIRTIO_BLK_F_RO (bit 5) not offered");
    if (!result(dev.offered & BIT(F_BLK_RO), "ro: the device offers RO"))
        return;                         /* don't write to a writable disk */
    read_check("ro: ", 0, 1, "orig");
    fill_pattern(dbuf, "test", 0, 1);
    WHAT("ro: OUT sector 0: IOERR");
    result(rw1(T_OUT, 0, 1, ST_IOERR, what), "%s", what);
    fill_pattern(dbuf, "test", 100, 8);
    WHAT("ro: OUT sectors 100-107: IOERR");
    result(rw1(T_OUT, 100, 8, ST_IOERR, what), "%s", what);
    if (dev.features & BIT(F_BLK_FLUSH)) {
        WHAT("ro: FLUSH: OK");
        result(req(T_FLUSH, 0, NULL, 0, ST_OK, what), "%s", what);
    }
    read_check("ro: after the refused writes: ", 0, 1, "orig");
    read_check("ro: after the refused writes: ", 100, 8, "orig");
}

/* test=bad: requests a device must refuse. */
static void test_bad(void)
{
    uint64_t cap = blk.capacity, last = cap - 1;
    const uint64_t wrap = 1ull << 55;   /* x 512 = 2^64: a byte offset of 0 mod 2^64 */
    WHAT("bad: IN sector %llu (the capacity: past the end): IOERR", (unsigned long long)cap);
    result(rw1(T_IN, cap, 1, ST_IOERR, what), "%s", what);
    WHAT("bad: IN sectors %llu-%llu (across the end): IOERR", (unsigned long long)last, (unsigned long long)cap);
    result(rw1(T_IN, last, 2, ST_IOERR, what), "%s", what);
    WHAT("bad: IN sector 2^55 (byte offset 2^64, 0 in 64-bit arithmetic): IOERR");
    result(rw1(T_IN, wrap, 1, ST_IOERR, what), "%s", what);
    WHAT("bad: IN sector 2^64-1: IOERR");
    result(rw1(T_IN, ~0ull, 1, ST_IOERR, what), "%s", what);
    fill_pattern(dbuf, "test", 0, 2);
    WHAT("bad: OUT sector %llu (past the end): IOERR", (unsigned long long)cap);
    result(rw1(T_OUT, cap, 1, ST_IOERR, what), "%s", what);
    WHAT("bad: OUT sectors %llu-%llu (across the end): IOERR", (unsigned long long)last, (unsigned long long)cap);
    result(rw1(T_OUT, last, 2, ST_IOERR, what), "%s", what);
    WHAT("bad: OUT sector 2^55 (byte offset 2^64, 0 in 64-bit arithmetic): IOERR");
    result(rw1(T_OUT, wrap, 1, ST_IOERR, what), "%s", what);
    {
        memset(dbuf, 0xEE, SECTOR);
        struct seg d = { dbuf, 100, true };
        WHAT("bad: IN sector 0 with 100 bytes of data (no multiple of 512): IOERR");
        result(req(T_IN, 0, &d, 1, ST_IOERR, what), "%s", what);
        fill_pattern(dbuf, "test", 0, 1);
        d.write = false;
        WHAT("bad: OUT sector 0 with 100 bytes of data: IOERR");
        result(req(T_OUT, 0, &d, 1, ST_IOERR, what), "%s", what);
    }
    WHAT("bad: request type 255 (unknown): UNSUPP");
    result(req(255, 0, NULL, 0, ST_UNSUPP, what), "%s", what);
    {
        struct seg d = { dbuf, SECTOR, true };
        WHAT("bad: request type 16 (ZONE_REPORT; VIRTIO_BLK_F_ZONED not negotiated): UNSUPP");
        result(req(T_ZONE_REPORT, 0, &d, 1, ST_UNSUPP, what), "%s", what);
    }
    read_check("bad: after the errors: ", 0, 1, "orig");
    read_check("bad: after the errors: ", last, 1, "orig");
}

/* test=discard: DISCARD and WRITE_ZEROES (single segments). */
static void test_discard(void)
{
    bool have_d = dev.offered & BIT(F_BLK_DISCARD), have_wz = dev.offered & BIT(F_BLK_WRITE_ZEROES);
    if (!have_d)
        set_why("VIRTIO_BLK_F_DISCARD (bit 13) not offered");
    result(have_d, "discard: the device offers DISCARD");
    if (!have_wz)
        set_why("VIRTIO_BLK_F_WRITE_ZEROES (bit 14) not offered");
    result(have_wz, "discard: the device offers WRITE_ZEROES");
    if (!have_d || !have_wz)
        return;
    uint32_t mds = cfg_r32(BC_MAX_DISCARD_SECTORS), mdseg = cfg_r32(BC_MAX_DISCARD_SEG);
    uint32_t mwz = cfg_r32(BC_MAX_WZ_SECTORS), mwzseg = cfg_r32(BC_MAX_WZ_SEG);
    if (verbose)
        print(NAME ": [verbose] max_discard_sectors %u, max_discard_seg %u, discard_sector_alignment %u, "
              "max_write_zeroes_sectors %u, max_write_zeroes_seg %u, write_zeroes_may_unmap %u\n",
              mds, mdseg, cfg_r32(BC_DISCARD_ALIGNMENT), mwz, mwzseg, mmio_r8(dev.devcfg + BC_WZ_MAY_UNMAP));
    if (!(mds >= 16 && mdseg >= 1))
        set_why("max_discard_sectors %u, max_discard_seg %u", mds, mdseg);
    result(mds >= 16 && mdseg >= 1, "discard: config: max_discard_sectors >= 16, max_discard_seg >= 1");
    if (!(mwz >= 16 && mwzseg >= 1))
        set_why("max_write_zeroes_sectors %u, max_write_zeroes_seg %u", mwz, mwzseg);
    result(mwz >= 16 && mwzseg >= 1, "discard: config: max_write_zeroes_sectors >= 16, max_write_zeroes_seg >= 1");

    read_check("discard: ", 200, 64, "orig");
    WHAT("discard: DISCARD sectors 200-215: OK");
    result(dwz_req(T_DISCARD, 200, 16, 0, ST_OK, what), "%s", what);
    WHAT("discard: WRITE_ZEROES sectors 216-231 (unmap 0): OK");
    result(dwz_req(T_WRITE_ZEROES, 216, 16, 0, ST_OK, what), "%s", what);
    WHAT("discard: WRITE_ZEROES sectors 232-247 (unmap 1): OK");
    result(dwz_req(T_WRITE_ZEROES, 232, 16, 1, ST_OK, what), "%s", what);
    WHAT("discard: DISCARD sectors 248-255 with the unmap flag: UNSUPP");
    result(dwz_req(T_DISCARD, 248, 8, 1, ST_UNSUPP, what), "%s", what);
    WHAT("discard: WRITE_ZEROES sectors 256-263 with flag bit 1 (unknown): UNSUPP");
    result(dwz_req(T_WRITE_ZEROES, 256, 8, 2, ST_UNSUPP, what), "%s", what);
    WHAT("discard: IN sectors 216-247: OK, zeros");
    result(rw1(T_IN, 216, 32, ST_OK, what) && verify_zero(dbuf, 216, 32), "%s", what);
    read_check("discard: untouched by the refused requests: ", 248, 16, "orig");
    WHAT("discard: IN sectors 200-215 (discarded: contents unspecified): OK");
    result(rw1(T_IN, 200, 16, ST_OK, what), "%s", what);
}

/* test=reset: malformed chains, DEVICE_NEEDS_RESET, reset, and a second
 * initialisation from scratch. */
static void test_reset(void)
{
    static const char *const kinds[] = {
        "a chain with no device-writable buffer (header only)",
        "a status buffer of length 0",
        "an 8-byte header",
    };
    read_check("reset: ", 0, 1, "orig");
    for (unsigned k = 0; k < 3; k++) {
        struct seg s[3];
        int n = 0;
        hdr.type = T_IN;
        hdr.reserved = 0;
        hdr.sector = 0;
        if (k == 0) {
            s[n++] = (struct seg){ &hdr, sizeof hdr, false };
        } else if (k == 1) {
            s[n++] = (struct seg){ &hdr, sizeof hdr, false };
            s[n++] = (struct seg){ dbuf, SECTOR, true };
            s[n++] = (struct seg){ &status_byte, 0, true };
        } else {
            s[n++] = (struct seg){ &hdr, 8, false };
            s[n++] = (struct seg){ &status_byte, 1, true };
        }
        (void)isr_read_clear();
        uint16_t used_before = vq_used.idx;
        vq_add(s, n);
        vq_kick();
        /* Wait for DEVICE_NEEDS_RESET, or for the device to use the
         * chain after all (then there is no point in waiting longer). */
        uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
        uint8_t st;
        while (!((st = status_read()) & S_NEEDS_RESET) && vq_used.idx == used_before && rdtsc() < deadline)
            cpu_relax();
        st = status_read();
        uint16_t used_after = vq_used.idx;
        bool ok = (st & S_NEEDS_RESET) && used_after == used_before;
        if (used_after != used_before)
            set_why("the device used the chain (used.idx %u -> %u, used.len %u); device_status 0x%02X", used_before,
                    used_after, vq_used.ring[used_before % vq.size].len, st);
        else if (!(st & S_NEEDS_RESET))
            set_why("device_status 0x%02X after 10^10 TSC cycles", st);
        result(ok, "reset: %s: DEVICE_NEEDS_RESET set, chain not used", kinds[k]);
        uint8_t isr = isr_read_clear();
        if (!(isr & 2))
            set_why("ISR status 0x%02X", isr);
        result(isr & 2, "reset: %s: ISR status bit 1 (configuration change) set", kinds[k]);
        if (!device_init("re-init: "))
            return;
        read_check("reset: after the re-initialisation: ", 0, 1, "orig");
    }
}

/* test=wrap: many reads, several per notification, until the 16-bit ring
 * indexes wrap; completions are matched by id, in any order. */
static struct blk_hdr wrap_hdr[QMAX / 3 + 1];
static uint8_t wrap_status[QMAX / 3 + 1];

static void test_wrap(void)
{
    unsigned k = blk.qsize / 3;         /* chains of 3 descriptors in flight */
    uint64_t total = opt.requests, submitted = 0, completed = 0, failures = 0;
    uint16_t start = vq.avail_idx;      /* the requests before (GET_ID...) */
    uint8_t slot_of[QMAX];
    uint64_t sector_of[QMAX / 3 + 1];
    bool outstanding[QMAX];
    memset(outstanding, 0, sizeof outstanding);
    while (completed < total) {
        unsigned batch = (unsigned)(total - submitted < k ? total - submitted : k);
        for (unsigned j = 0; j < batch; j++) {
            uint64_t sector = 264 + submitted % 248;
            wrap_hdr[j] = (struct blk_hdr){ T_IN, 0, sector };
            wrap_status[j] = STATUS_UNSET;
            memset(dbuf + j * SECTOR, 0xEE, SECTOR);
            struct seg s[3] = { { &wrap_hdr[j], sizeof wrap_hdr[j], false },
                                { dbuf + j * SECTOR, SECTOR, true },
                                { &wrap_status[j], 1, true } };
            int head = vq_add(s, 3);
            slot_of[head] = (uint8_t)j;
            outstanding[head] = true;
            sector_of[j] = sector;
            submitted++;
        }
        vq_kick();
        for (unsigned j = 0; j < batch; j++) {
            uint32_t id, len;
            if (!vq_get(&id, &len))
                timeout_fatal(WHAT("wrap: request %llu", (unsigned long long)completed));
            completed++;
            if (id >= blk.qsize || !outstanding[id]) {
                set_why("request %llu: used element id %u is no outstanding chain's head",
                        (unsigned long long)completed, id);
                fatal("wrap: used ring");
            }
            outstanding[id] = false;
            vq_free((uint16_t)id);
            unsigned slot = slot_of[id];
            bool ok = wrap_status[slot] == ST_OK && len == SECTOR + 1;
            if (!ok && !failures)
                set_why("request %llu (sector %llu): status %s, used.len %u", (unsigned long long)completed,
                        (unsigned long long)sector_of[slot], status_name(wrap_status[slot]), len);
            if (ok && !sector_is(dbuf + slot * SECTOR, "orig", sector_of[slot])) {
                ok = false;
                if (!failures)
                    describe(dbuf + slot * SECTOR, sector_of[slot], "'orig' pattern");
            }
            if (!ok)
                failures++;
        }
    }
    result(failures == 0, "wrap: %llu IN requests of 1 sector, up to %u per notification: all OK, 'orig' pattern",
           (unsigned long long)total, k);
    uint16_t expect = (uint16_t)(start + total);
    if (!(vq_used.idx == expect && vq.avail_idx == expect))
        set_why("used.idx %u, avail.idx %u", vq_used.idx, vq.avail_idx);
    result(vq_used.idx == expect && vq.avail_idx == expect,
           "wrap: avail.idx and used.idx are %u = (%u + %llu) mod 65536%s", expect, start, (unsigned long long)total,
           start + total > 65535 ? " (both wrapped)" : "");
}

/* test=bench: how fast the device moves data, for `make bench`
 * (scripts/bench-block.py runs it under skvm and QEMU on the same image).
 * Three phases: sequential writes of 1 MiB requests over the first
 * bench-mib MiB, a FLUSH, sequential reads of the same, then bench-random
 * 4 KiB reads at random 4 KiB-aligned offsets over the whole disk. Up to
 * `qd` requests are in flight; the driver refills every free slot, notifies
 * once, then polls for one completion. Each phase prints its cycle count
 * (rdtsc, from the first submission to the last completion); the host
 * turns cycles into time with the TSC frequency it knows. A request that
 * fails ends the run: a benchmark of errors measures nothing. */
#define BENCH_BIG (1u << 20)
#define BENCH_SMALL 4096u
#define BENCH_SLOTS 32
static uint8_t bench_buf[8][BENCH_BIG] __attribute__((aligned(4096)));  /* 8 MiB: 1 MiB slots, or 4 KiB ones */
static struct blk_hdr bench_hdr[BENCH_SLOTS];
static uint8_t bench_status[BENCH_SLOTS];

static uint64_t bench_rng = 0x9E3779B97F4A7C15ull;
static uint64_t bench_next(void)           /* xorshift64 */
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return bench_rng;
}

static void bench_phase(const char *name, uint32_t type, uint32_t bytes, uint64_t count, bool random)
{
    unsigned qd = opt.qd;
    if (bytes == BENCH_BIG && qd > 8)
        qd = 8;                         /* eight 1 MiB slots */
    uint64_t sectors = bytes / SECTOR, span = blk.capacity / sectors;
    int8_t slot_of[QMAX];
    uint8_t free_slots[BENCH_SLOTS];
    unsigned nfree = qd;
    for (unsigned j = 0; j < qd; j++)
        free_slots[j] = (uint8_t)(qd - 1 - j);
    memset(slot_of, -1, sizeof slot_of);
    uint64_t submitted = 0, completed = 0;
    uint64_t t0 = rdtsc();
    while (completed < count) {
        bool added = false;
        while (nfree && submitted < count) {
            unsigned j = free_slots[--nfree];
            uint64_t block = random ? bench_next() % span : submitted % span;
            bench_hdr[j] = (struct blk_hdr){ type, 0, block * sectors };
            bench_status[j] = STATUS_UNSET;
            uint8_t *data = bytes == BENCH_BIG ? bench_buf[j] : &bench_buf[0][0] + j * BENCH_SMALL;
            struct seg sg[3] = { { &bench_hdr[j], sizeof bench_hdr[j], false },
                                 { data, bytes, type == T_IN },
                                 { &bench_status[j], 1, true } };
            int head = vq_add(sg, 3);
            slot_of[head] = (int8_t)j;
            submitted++;
            added = true;
        }
        if (added)
            vq_kick();
        uint32_t id, len;
        if (!vq_get(&id, &len))
            timeout_fatal(WHAT("bench: %s request %llu", name, (unsigned long long)completed));
        if (id >= blk.qsize || slot_of[id] < 0) {
            set_why("used element id %u is no outstanding chain's head", id);
            fatal(WHAT("bench: %s", name));
        }
        unsigned j = (unsigned)slot_of[id];
        slot_of[id] = -1;
        vq_free((uint16_t)id);
        if (bench_status[j] != ST_OK) {
            set_why("request %llu: status %s", (unsigned long long)completed, status_name(bench_status[j]));
            fatal(WHAT("bench: %s", name));
        }
        free_slots[nfree++] = (uint8_t)j;
        completed++;
    }
    uint64_t cycles = rdtsc() - t0;
    print(NAME ": bench: %s: %llu requests of %u bytes, qd %u: %llu cycles\n", name, (unsigned long long)count, bytes,
          qd, (unsigned long long)cycles);
}

static void test_bench(void)
{
    uint64_t big = opt.bench_mib;
    if (big > blk.capacity / (BENCH_BIG / SECTOR))
        big = blk.capacity / (BENCH_BIG / SECTOR);
    if (!result(big > 0 && !(dev.offered & BIT(F_BLK_RO)), "bench: a writable disk of at least 1 MiB"))
        return;
    for (unsigned j = 0; j < 8; j++)
        memset(bench_buf[j], 0x5A + j, BENCH_BIG);
    bench_phase("seq-write", T_OUT, BENCH_BIG, big, false);
    struct blk_hdr h = { T_FLUSH, 0, 0 };
    uint8_t st = STATUS_UNSET;
    struct seg f[2] = { { &h, sizeof h, false }, { &st, 1, true } };
    uint32_t len;
    uint64_t t0 = rdtsc();
    if (!vq_run(f, 2, &len, "bench: FLUSH") || st != ST_OK) {
        set_why("status %s", status_name(st));
        fatal("bench: FLUSH");
    }
    print(NAME ": bench: flush: %llu cycles\n", (unsigned long long)(rdtsc() - t0));
    bench_phase("seq-read", T_IN, BENCH_BIG, big, false);
    bench_phase("rand-read", T_IN, BENCH_SMALL, opt.bench_random, true);
}

/* ---- main ---------------------------------------------------------------------- */

/* Finds virtio-blk #opt.disk on PCI bus 0 and maps its structures (§4.1). */
static void find_pci_device(void)
{
    /* PCI discovery (§4.1.2) */
    if (!pci_find_virtio(VIRTIO_BLK_DEVICE, opt.disk)) {
        set_why("found %u virtio-blk function%s (1AF4:1042) on bus 0", dev.count, dev.count == 1 ? "" : "s");
        fatal(WHAT("PCI bus 0: virtio-blk #%u", opt.disk));
    }
    result(true, "PCI bus 0: %u virtio-blk function%s (1AF4:1042), using #%u", dev.count, dev.count == 1 ? "" : "s",
           opt.disk);
    struct bdf b = dev.bdf;

    if (verbose) {
        uint32_t sub = pci_r32(b, 0x2C);
        print(NAME ": [verbose] %02x:%02x.%u: revision %u, subsystem %04X:%04X, command 0x%04X\n", b.bus, b.dev, b.fn,
              pci_r8(b, 0x08), sub & 0xFFFF, sub >> 16, pci_r16(b, PCI_COMMAND));
    }

    /* The virtio capabilities and their BARs (§4.1.4), then memory space
     * and bus mastering on (virtio.c) */
    bool ok = virtio_pci_map(opt.mode == M_DISCARD ? BC_WZ_MAY_UNMAP + 1 : 8);
    if (verbose)
        print(NAME ": [verbose] notify_off_multiplier %u; MSI-X capability %s\n", dev.notify_mult,
              dev.has_msix ? "present (left disabled)" : "absent");
    virtio_pci_enable(ok);
}

/* Finds the virtio-mmio block device at opt.mmio + opt.disk * 0x1000 (skvm
 * places device n's window there) and checks its identity (§4.2.2):
 * MagicValue, Version 2, DeviceID 2. A DeviceID of 0 is a placeholder
 * window with no device behind it. */
static void find_mmio_device(void)
{
    uint64_t base = opt.mmio_base + (uint64_t)opt.disk * 0x1000;
    uint32_t magic = mmio_r32(base + MM_MAGIC), version = mmio_r32(base + MM_VERSION);
    uint32_t id = mmio_r32(base + MM_DEVICE_ID);
    if (verbose)
        print(NAME ": [verbose] virtio-mmio at 0x%llx: magic 0x%08x, version %u, device %u, vendor 0x%x\n",
              (unsigned long long)base, magic, version, id, mmio_r32(base + MM_VENDOR_ID));
    if (magic != MM_MAGIC_VALUE)
        set_why("MagicValue reads 0x%08x", magic);
    else if (version != 2)
        set_why("Version reads %u (1 is the legacy interface this driver does not speak)", version);
    else if (id != 2)
        set_why("DeviceID reads %u", id);
    if (magic != MM_MAGIC_VALUE || version != 2 || id != 2)
        fatal(WHAT("virtio-mmio window #%u: MagicValue \"virt\", Version 2, DeviceID 2 (block)", opt.disk));
    result(true, "virtio-mmio window #%u: MagicValue \"virt\", Version 2, DeviceID 2 (block)", opt.disk);
    dev.mmio = base;
    dev.devcfg = base + MM_CONFIG;
}

/* entry.asm calls this at CPL 3 with the Multiboot information's address. */
void guest_main(uint32_t mbi_addr);
void guest_main(uint32_t mbi_addr)
{
    opt.mode = (enum mode)parse_cmdline(guest_cmdline(mbi_addr), mode_names,
                                        sizeof mode_names / sizeof mode_names[0], option, USAGE);
    if (checks_failed)
        finish();
    print(NAME ": test=%s disk=%u\n", mode_names[opt.mode], opt.disk);

    if (opt.mmio)
        find_mmio_device();
    else
        find_pci_device();

    /* §3.1.1 */
    if (!device_init(""))
        finish();

    /* §5.2.4, §5.2.6 */
    blk.capacity = cfg_r64(BC_CAPACITY);
    print(NAME ": capacity: %llu sectors (%llu bytes)\n", (unsigned long long)blk.capacity,
          (unsigned long long)blk.capacity * SECTOR);
    if (opt.have_capacity) {
        if (blk.capacity != opt.capacity)
            set_why("the device reports %llu", (unsigned long long)blk.capacity);
        result(blk.capacity == opt.capacity, "capacity is %llu sectors (expect-capacity)",
               (unsigned long long)opt.capacity);
    }
    print(NAME ": read-only (VIRTIO_BLK_F_RO): %s\n", (dev.offered & BIT(F_BLK_RO)) ? "yes" : "no");
    if (verbose) {
        print(NAME ": [verbose] config: seg_max %u, blk_size %u, num_queues %u\n", cfg_r32(BC_SEG_MAX),
              cfg_r32(BC_BLK_SIZE), mmio_r16(dev.devcfg + BC_NUM_QUEUES));
    }
    get_id("");

    if (opt.mode != M_INFO) {
        if (blk.capacity < 512)
            set_why("the disk has %llu sectors; make it with guests/tools/make-test-disk.sh", (unsigned long long)blk.capacity);
        if (!result(blk.capacity >= 512, "capacity >= 512 sectors (the sectors the tests use)"))
            finish();
    }
    switch (opt.mode) {
    case M_INFO: break;
    case M_RW: test_rw(); break;
    case M_RO: test_ro(); break;
    case M_BAD: test_bad(); break;
    case M_DISCARD: test_discard(); break;
    case M_RESET: test_reset(); break;
    case M_WRAP: test_wrap(); break;
    case M_BENCH: test_bench(); break;
    }
    result(device_reset(), "reset at the end: device_status reads 0");
    finish();
}
