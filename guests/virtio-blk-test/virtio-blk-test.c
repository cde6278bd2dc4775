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
 * where CPL 0 is emulated (PVM); entry.asm gets there and grants the ports.
 * The driver never takes an interrupt: it polls the used ring.
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

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NAME "virtio-blk-test"

/* ---- the machine: ports, MMIO, barriers, time ------------------------------ */

static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

/* MMIO: one access of exactly the field's width (a volatile access of a
 * naturally aligned scalar compiles to a single MOV). */
static inline uint8_t mmio_r8(uint64_t a) { return *(volatile uint8_t *)(uintptr_t)a; }
static inline uint16_t mmio_r16(uint64_t a) { return *(volatile uint16_t *)(uintptr_t)a; }
static inline uint32_t mmio_r32(uint64_t a) { return *(volatile uint32_t *)(uintptr_t)a; }
static inline void mmio_w8(uint64_t a, uint8_t v) { *(volatile uint8_t *)(uintptr_t)a = v; }
static inline void mmio_w16(uint64_t a, uint16_t v) { *(volatile uint16_t *)(uintptr_t)a = v; }
static inline void mmio_w32(uint64_t a, uint32_t v) { *(volatile uint32_t *)(uintptr_t)a = v; }

/* x86 keeps stores in order and loads in order, so the ring protocol's
 * write and read barriers only have to stop the compiler; the full barrier
 * before a notification is MFENCE. */
#define barrier() __asm__ volatile("" ::: "memory")
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

/* How long to wait for the device: 10^10 TSC cycles, a few seconds on any
 * host. A correct device answers in microseconds. */
#define TIMEOUT_CYCLES 10000000000ull

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}

/* ---- serial output and formatting ------------------------------------------ */

#define COM1 0x3F8
#define DEBUG_EXIT 0xF4

static void putc_serial(char c)
{
    while (!(inb(COM1 + 5) & 0x20))     /* LSR.THRE */
        ;
    outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
    while (*s)
        putc_serial(*s++);
}

/* A small vsnprintf: %s %c %d %u %x %X %%, flag 0, a width, and the
 * length modifiers l, ll and z (64-bit). */
static size_t vfmt(char *out, size_t cap, const char *f, va_list ap)
{
    size_t n = 0;
#define EMIT(ch) do { if (n + 1 < cap) out[n] = (ch); n++; } while (0)
    for (; *f; f++) {
        if (*f != '%') {
            EMIT(*f);
            continue;
        }
        f++;
        bool zero = false;
        int width = 0, lng = 0;
        if (*f == '0') {
            zero = true;
            f++;
        }
        while (*f >= '0' && *f <= '9')
            width = width * 10 + (*f++ - '0');
        while (*f == 'l' || *f == 'z') {
            lng = 1;
            f++;
        }
        char tmp[24];
        int len = 0;
        const char *s = tmp;
        switch (*f) {
        case 's':
            s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            while (s[len])
                len++;
            break;
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            len = 1;
            break;
        case 'd':
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v;
            bool neg = false;
            if (*f == 'd') {
                int64_t sv = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
                neg = sv < 0;
                v = neg ? -(uint64_t)sv : (uint64_t)sv;
            } else {
                v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            }
            unsigned base = (*f == 'x' || *f == 'X') ? 16 : 10;
            const char *digits = *f == 'x' ? "0123456789abcdef" : "0123456789ABCDEF";
            char rev[24];
            int r = 0;
            do {
                rev[r++] = digits[v % base];
                v /= base;
            } while (v);
            if (neg)
                tmp[len++] = '-';
            while (r)
                tmp[len++] = rev[--r];
            break;
        }
        case '%':
            tmp[0] = '%';
            len = 1;
            break;
        default:
            tmp[0] = '?';
            len = 1;
            break;
        }
        for (int pad = width - len; pad > 0; pad--)
            EMIT(zero ? '0' : ' ');
        for (int i = 0; i < len; i++)
            EMIT(s[i]);
    }
    if (cap)
        out[n < cap ? n : cap - 1] = 0;
    return n;
#undef EMIT
}

static size_t fmt(char *out, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    size_t n = vfmt(out, cap, f, ap);
    va_end(ap);
    return n;
}

static void print(const char *f, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    puts_serial(buf);
}

/* ---- checks and the verdict ------------------------------------------------ */

static unsigned checks_run, checks_failed;
static char why[256];                   /* the reason of the next FAIL */
static bool verbose;

static void set_why(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vfmt(why, sizeof why, f, ap);
    va_end(ap);
}

/* result: count one check and print its line. `what` is a format. */
static bool result(bool ok, const char *what, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, what);
    vfmt(buf, sizeof buf, what, ap);
    va_end(ap);
    checks_run++;
    if (ok) {
        print(NAME ": %s: ok\n", buf);
    } else {
        checks_failed++;
        print(NAME ": %s: FAIL (%s)\n", buf, why[0] ? why : "?");
    }
    why[0] = 0;
    return ok;
}

static void __attribute__((noreturn)) vm_exit(uint8_t v)
{
    outb(DEBUG_EXIT, v);
    print(NAME ": port 0xF4 did not end the VM\n");
    for (;;)
        __asm__ volatile("ud2");
}

static void __attribute__((noreturn)) finish(void)
{
    if (checks_failed == 0) {
        print(NAME ": all %u checks passed\n", checks_run);
        vm_exit(0);
    }
    print(NAME ": %u of %u checks failed\n", checks_failed, checks_run);
    vm_exit(1);
}

/* A failed check after which testing cannot go on. */
static void __attribute__((noreturn)) fatal(const char *what)
{
    result(false, "%s", what);
    finish();
}

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
    bool assign_bars;
    bool mmio;                          /* transport=mmio: virtio-mmio (§4.2), not PCI */
    uint64_t mmio_base;                 /* where to look for it (mmio=ADDR, hex) */
    uint64_t bench_mib;                 /* test=bench: MiB per sequential phase */
    uint64_t bench_random;              /* test=bench: 4 KiB random reads */
    unsigned qd;                        /* test=bench: requests in flight */
} opt = { M_INFO, 0, false, 0, false, "", 0, 65600, false, false, 0xD0000000ull, 256, 20000, 1 };

static bool word_is(const char *w, size_t n, const char *s)
{
    size_t i = 0;
    for (; i < n && s[i]; i++)
        if (w[i] != s[i])
            return false;
    return i == n && s[i] == 0;
}

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* "0x" and 1-16 hex digits. */
static bool parse_hex(const char *s, size_t n, uint64_t *out)
{
    if (n < 3 || n > 18 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return false;
    uint64_t v = 0;
    for (size_t i = 2; i < n; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
        if (d > 15)
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

/* Arguments are the words after the first (the kernel's path), separated
 * by bytes 1..0x20, each KEY=VALUE. A bad one is a failed check. */
static void parse_cmdline(const char *c)
{
    while (*c && (uint8_t)*c > ' ')     /* skip the kernel path */
        c++;
    for (;;) {
        while (*c && (uint8_t)*c <= ' ')
            c++;
        if (!*c)
            break;
        const char *w = c;
        while (*c && (uint8_t)*c > ' ')
            c++;
        size_t n = (size_t)(c - w), k = 0;
        while (k < n && w[k] != '=')
            k++;
        const char *v = w + k + 1;
        size_t vn = k < n ? n - k - 1 : 0;
        uint64_t num = 0;
        bool ok = k < n;
        if (!ok) {
            ok = false;
        } else if (word_is(w, k, "test")) {
            ok = false;
            for (unsigned m = 0; m < sizeof mode_names / sizeof mode_names[0]; m++)
                if (word_is(v, vn, mode_names[m])) {
                    opt.mode = (enum mode)m;
                    ok = true;
                }
        } else if (word_is(w, k, "disk")) {
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
            ok = word_is(v, vn, "0") || word_is(v, vn, "1");
            opt.assign_bars = vn && v[0] == '1';
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
        } else if (word_is(w, k, "verbose")) {
            ok = word_is(v, vn, "0") || word_is(v, vn, "1");
            verbose = vn && v[0] == '1';
        } else {
            ok = false;
        }
        if (!ok) {
            char word[64];
            size_t m = n < sizeof word - 1 ? n : sizeof word - 1;
            memcpy(word, w, m);
            word[m] = 0;
            set_why("expected test=info|rw|ro|bad|discard|reset|wrap|bench disk=N expect-capacity=SECTORS "
                    "expect-serial=TEXT qsize=4..256 requests=N assign-bars=0|1 transport=pci|mmio mmio=0xADDR "
                    "bench-mib=N bench-random=N qd=1..32 verbose=0|1");
            result(false, "argument \"%s\"", word);
        }
    }
}

/* ---- PCI configuration space (mechanism #1) --------------------------------- */

#define PCI_ADDR 0xCF8
#define PCI_DATA 0xCFC

struct bdf { uint8_t bus, dev, fn; };

static void pci_select(struct bdf d, uint8_t reg)
{
    outl(PCI_ADDR, 0x80000000u | (uint32_t)d.bus << 16 | (uint32_t)d.dev << 11 | (uint32_t)d.fn << 8 | (reg & 0xFC));
}
static uint32_t pci_r32(struct bdf d, uint8_t reg) { pci_select(d, reg); return inl(PCI_DATA); }
static uint16_t pci_r16(struct bdf d, uint8_t reg) { pci_select(d, reg); return inw(PCI_DATA + (reg & 2)); }
static uint8_t pci_r8(struct bdf d, uint8_t reg) { pci_select(d, reg); return inb(PCI_DATA + (reg & 3)); }
static void pci_w32(struct bdf d, uint8_t reg, uint32_t v) { pci_select(d, reg); outl(PCI_DATA, v); }
static void pci_w16(struct bdf d, uint8_t reg, uint16_t v) { pci_select(d, reg); outw(PCI_DATA + (reg & 2), v); }

#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CMD_MEMORY (1 << 1)
#define PCI_CMD_MASTER (1 << 2)
#define PCI_STATUS_CAPS (1 << 4)
#define PCI_CAP_PTR 0x34
#define PCI_CAP_VNDR 0x09
#define PCI_CAP_MSIX 0x11

#define VIRTIO_VENDOR 0x1AF4
#define VIRTIO_BLK_DEVICE 0x1042        /* 0x1040 + device ID 2 (§4.1.2) */

/* ---- the device ---------------------------------------------------------------- */

/* virtio_pci_cap cfg_type values (§4.1.4) */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4 };
static const char *const cap_names[] = { "", "common cfg", "notify", "ISR", "device cfg" };

/* struct virtio_pci_common_cfg (§4.1.4.3): byte offsets */
#define CC_DFSELECT 0x00        /* le32 device_feature_select */
#define CC_DF 0x04              /* le32 device_feature */
#define CC_GFSELECT 0x08        /* le32 driver_feature_select */
#define CC_GF 0x0C              /* le32 driver_feature */
#define CC_MSIX 0x10            /* le16 config_msix_vector */
#define CC_NUMQ 0x12            /* le16 num_queues */
#define CC_STATUS 0x14          /* u8 device_status */
#define CC_CFGGEN 0x15          /* u8 config_generation */
#define CC_Q_SELECT 0x16        /* le16 queue_select */
#define CC_Q_SIZE 0x18          /* le16 queue_size */
#define CC_Q_MSIX 0x1A          /* le16 queue_msix_vector */
#define CC_Q_ENABLE 0x1C        /* le16 queue_enable */
#define CC_Q_NOFF 0x1E          /* le16 queue_notify_off */
#define CC_Q_DESC 0x20          /* le64 queue_desc */
#define CC_Q_DRIVER 0x28        /* le64 queue_driver (available ring) */
#define CC_Q_DEVICE 0x30        /* le64 queue_device (used ring) */
#define CC_SIZE 0x38            /* the fields above */

/* device_status bits (§2.1) */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64
#define S_FAILED 128

/* feature bits (§6, §5.2.3) */
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
#define F_INDIRECT_DESC 28
#define F_EVENT_IDX 29
#define F_VERSION_1 32
#define F_ACCESS_PLATFORM 33
#define F_RING_PACKED 34
#define BIT(n) (1ull << (n))

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

struct cap {
    bool found;
    uint8_t bar, cap_len;
    uint32_t offset, length;
};

static struct {
    struct bdf bdf;
    unsigned count;                     /* virtio-blk functions on bus 0 */
    struct cap caps[5];
    uint32_t notify_mult;
    bool has_msix;
    uint64_t bar_base[6], bar_size[6];
    bool bar_done[6];
    uint64_t common, notify, isr, devcfg; /* MMIO addresses */
    uint64_t mmio;                      /* virtio-mmio: the window's base; 0 on PCI */
    uint64_t features;                  /* negotiated */
    uint64_t offered;
    uint16_t qsize, notify_off;
    uint64_t capacity;
} dev;

/* ---- finding the device ------------------------------------------------------ */

static bool find_device(void)
{
    bool found = false;
    for (uint8_t d = 0; d < 32; d++) {
        struct bdf f0 = { 0, d, 0 };
        if (pci_r16(f0, 0x00) == 0xFFFF)
            continue;
        unsigned nfn = (pci_r8(f0, 0x0E) & 0x80) ? 8 : 1;   /* multi-function? */
        for (uint8_t fn = 0; fn < nfn; fn++) {
            struct bdf b = { 0, d, fn };
            uint32_t id = pci_r32(b, 0x00);
            if ((id & 0xFFFF) != VIRTIO_VENDOR || (id >> 16) != VIRTIO_BLK_DEVICE)
                continue;
            if (dev.count == opt.disk) {
                dev.bdf = b;
                found = true;
            }
            dev.count++;
        }
    }
    return found;
}

/* Walk the capability list; remember the first virtio capability of each
 * type we use. */
static bool walk_caps(void)
{
    struct bdf b = dev.bdf;
    if (!(pci_r16(b, PCI_STATUS) & PCI_STATUS_CAPS)) {
        set_why("PCI status bit 4 (capabilities list) is clear");
        return false;
    }
    uint8_t p = pci_r8(b, PCI_CAP_PTR) & 0xFC;
    for (unsigned guard = 0; p && guard < 48; guard++) {
        uint8_t id = pci_r8(b, p), next = pci_r8(b, p + 1);
        if (id == PCI_CAP_MSIX)
            dev.has_msix = true;
        if (id == PCI_CAP_VNDR) {
            uint8_t len = pci_r8(b, p + 2), type = pci_r8(b, p + 3), bar = pci_r8(b, p + 4);
            if (type >= CAP_COMMON && type <= CAP_DEVICE && bar <= 5 && !dev.caps[type].found) {
                struct cap *c = &dev.caps[type];
                c->found = true;
                c->bar = bar;
                c->cap_len = len;
                c->offset = pci_r32(b, p + 8);
                c->length = pci_r32(b, p + 12);
                if (type == CAP_NOTIFY && len >= 20)
                    dev.notify_mult = pci_r32(b, p + 16);
            }
        }
        p = next & 0xFC;
    }
    for (int t = CAP_COMMON; t <= CAP_DEVICE; t++)
        if (!dev.caps[t].found) {
            set_why("no virtio %s capability (cap_vndr 0x09, cfg_type %d)", cap_names[t], t);
            return false;
        }
    if (dev.caps[CAP_NOTIFY].cap_len < 20) {
        set_why("the notify capability is %u bytes, too short for notify_off_multiplier",
                dev.caps[CAP_NOTIFY].cap_len);
        return false;
    }
    return true;
}

/* ---- BARs ------------------------------------------------------------------------ */

#define MMIO_WINDOW_START 0xC0000000ull /* where this guest assigns BARs */
#define MMIO_WINDOW_END 0xFEC00000ull   /* the IOAPIC, HPET, LAPIC... above */

struct bar {
    bool io, is64;
    uint32_t lo, hi;                    /* the registers as found */
    uint64_t addr, size;
};

/* Read and size BAR i of function b (PCI 3.0 §6.2.5.1): with the
 * function's decoding off, write all ones, read back, restore. A 64-bit
 * BAR uses register i + 1 as well. size 0: not implemented. */
static void bar_probe(struct bdf b, unsigned i, struct bar *r)
{
    uint8_t reg = (uint8_t)(0x10 + 4 * i);
    r->lo = pci_r32(b, reg);
    r->io = r->lo & 1;
    r->is64 = !r->io && ((r->lo >> 1) & 3) == 2 && i < 5;
    r->hi = r->is64 ? pci_r32(b, reg + 4) : 0;
    r->addr = (r->lo & (r->io ? ~0x3ull : ~0xFull)) | (uint64_t)r->hi << 32;
    uint16_t cmd = pci_r16(b, PCI_COMMAND);
    pci_w16(b, PCI_COMMAND, cmd & ~(PCI_CMD_MEMORY | 1));
    pci_w32(b, reg, 0xFFFFFFFF);
    uint32_t szlo = pci_r32(b, reg) & (r->io ? ~0x3u : ~0xFu);
    uint32_t szhi = 0xFFFFFFFF;
    if (r->is64) {
        pci_w32(b, reg + 4, 0xFFFFFFFF);
        szhi = pci_r32(b, reg + 4);
    }
    pci_w32(b, reg, r->lo);
    if (r->is64)
        pci_w32(b, reg + 4, r->hi);
    pci_w16(b, PCI_COMMAND, cmd);
    if (r->io)
        szhi = 0xFFFFFFFF, szlo |= 0xFFFF0000u;     /* I/O BARs decode 16 bits */
    r->size = (szlo == 0 && szhi == 0xFFFFFFFF) ? 0 : ~((uint64_t)szhi << 32 | szlo) + 1;
}

/* The memory ranges every other BAR on bus 0 decodes, so that a BAR this
 * guest assigns lands in a gap (skvm and SeaBIOS both put BARs in
 * 0xC000_0000-0xFEBF_FFFF). Collected once, before the first assignment;
 * assigned BARs are added. */
static struct { struct bdf b; uint8_t bar; uint64_t base, end; } taken[64];
static unsigned ntaken;
static bool taken_done;

static void collect_taken(void)
{
    taken_done = true;
    for (uint8_t d = 0; d < 32; d++) {
        struct bdf f0 = { 0, d, 0 };
        if (pci_r16(f0, 0x00) == 0xFFFF)
            continue;
        unsigned nfn = (pci_r8(f0, 0x0E) & 0x80) ? 8 : 1;
        for (uint8_t fn = 0; fn < nfn; fn++) {
            struct bdf b = { 0, d, fn };
            if (pci_r16(b, 0x00) == 0xFFFF)
                continue;
            unsigned htype = pci_r8(b, 0x0E) & 0x7F, nbars = htype == 0 ? 6 : htype == 1 ? 2 : 0;
            for (unsigned i = 0; i < nbars; i++) {
                struct bar r;
                bar_probe(b, i, &r);
                if (!r.io && r.addr && r.size && ntaken < 64)
                    taken[ntaken++] = (typeof(taken[0])){ b, (uint8_t)i, r.addr, r.addr + r.size };
                if (r.is64)
                    i++;
            }
        }
    }
}

/* The lowest naturally aligned address in the window where `size` bytes
 * overlap no other BAR (BAR `bar` of our own device may move). 0: none. */
static uint64_t find_gap(uint64_t size, unsigned bar)
{
    uint64_t align = size < 4096 ? 4096 : size;
    uint64_t base = MMIO_WINDOW_START;
    for (;;) {
        base = (base + align - 1) & ~(align - 1);
        if (base + size > MMIO_WINDOW_END)
            return 0;
        bool clash = false;
        for (unsigned k = 0; k < ntaken; k++) {
            bool self = taken[k].b.dev == dev.bdf.dev && taken[k].b.fn == dev.bdf.fn && taken[k].bar == bar;
            if (!self && base < taken[k].end && taken[k].base < base + size) {
                base = taken[k].end;
                clash = true;
                break;
            }
        }
        if (!clash)
            return base;
    }
}

/* Size BAR i of our device and, if it is unprogrammed or out of reach (or
 * assign-bars=1), assign it. */
static bool setup_bar(unsigned i)
{
    struct bdf b = dev.bdf;
    uint8_t reg = (uint8_t)(0x10 + 4 * i);
    if (dev.bar_done[i])
        return true;
    struct bar r;
    bar_probe(b, i, &r);
    unsigned type = (r.lo >> 1) & 3;
    if (r.io) {
        set_why("BAR %u is an I/O BAR; this driver supports memory BARs only", i);
        return false;
    }
    if (type != 0 && type != 2) {
        set_why("BAR %u has the reserved memory type %u", i, type);
        return false;
    }
    if (type == 2 && i == 5) {
        set_why("BAR 5 claims to be 64-bit");
        return false;
    }
    if (r.size == 0) {
        set_why("BAR %u reads 0 after writing all ones: not implemented", i);
        return false;
    }
    uint64_t addr = r.addr;
    bool assign = opt.assign_bars || addr == 0 || addr + r.size > 0x100000000ull;
    if (assign) {
        if (!taken_done)
            collect_taken();
        uint64_t base = find_gap(r.size, i);
        if (!base) {
            set_why("no room for BAR %u (0x%llx bytes) in 0x%llx-0x%llx", i, (unsigned long long)r.size,
                    MMIO_WINDOW_START, MMIO_WINDOW_END);
            return false;
        }
        uint16_t cmd = pci_r16(b, PCI_COMMAND);
        pci_w16(b, PCI_COMMAND, cmd & ~(PCI_CMD_MEMORY | 1));
        pci_w32(b, reg, (uint32_t)base);
        if (r.is64)
            pci_w32(b, reg + 4, (uint32_t)(base >> 32));
        uint64_t check = pci_r32(b, reg) & ~0xFull;
        if (r.is64)
            check |= (uint64_t)pci_r32(b, reg + 4) << 32;
        pci_w16(b, PCI_COMMAND, cmd);
        if (check != base) {
            set_why("BAR %u reads 0x%llx after writing 0x%llx", i, (unsigned long long)check,
                    (unsigned long long)base);
            return false;
        }
        if (ntaken < 64)
            taken[ntaken++] = (typeof(taken[0])){ b, (uint8_t)i, base, base + r.size };
        if (verbose)
            print(NAME ": [verbose] BAR %u: %s memory%s, 0x%llx bytes, was 0x%llx, assigned 0x%llx\n", i,
                  r.is64 ? "64-bit" : "32-bit", (r.lo & 8) ? " prefetchable" : "", (unsigned long long)r.size,
                  (unsigned long long)addr, (unsigned long long)base);
        addr = base;
    } else if (verbose) {
        print(NAME ": [verbose] BAR %u: %s memory%s, 0x%llx bytes at 0x%llx (programmed before boot)\n", i,
              r.is64 ? "64-bit" : "32-bit", (r.lo & 8) ? " prefetchable" : "", (unsigned long long)r.size,
              (unsigned long long)addr);
    }
    dev.bar_base[i] = addr;
    dev.bar_size[i] = r.size;
    dev.bar_done[i] = true;
    return true;
}

/* Every structure inside its BAR, at least `need` bytes long. */
static bool map_cap(int type, uint32_t need, uint64_t *addr)
{
    struct cap *c = &dev.caps[type];
    if (!setup_bar(c->bar))
        return false;
    if (c->length < need) {
        set_why("the %s structure is %u bytes, fewer than the %u this driver reads", cap_names[type], c->length,
                need);
        return false;
    }
    if ((uint64_t)c->offset + need > dev.bar_size[c->bar]) {
        set_why("the %s structure (offset 0x%x) does not fit in BAR %u (0x%llx bytes)", cap_names[type], c->offset,
                c->bar, (unsigned long long)dev.bar_size[c->bar]);
        return false;
    }
    *addr = dev.bar_base[c->bar] + c->offset;
    return true;
}

/* ---- the virtio-mmio transport (§4.2) ------------------------------------------
 *
 * The other way to find a virtio device: no PCI at all, just a 0x200-byte
 * window of 32-bit registers at an address the platform tells the driver
 * (a device tree, ACPI, or Linux's virtio_mmio.device=4K@ADDR:IRQ), with
 * the device's configuration space at 0x100 (§4.2.2). Every register is
 * accessed 32 bits wide and aligned (§4.2.2.2). The same steps of §3.1.1
 * bring the device up; only where the fields live differs, so the helpers
 * below take one path or the other. */
#define MM_MAGIC 0x000          /* R  0x74726976, "virt" */
#define MM_VERSION 0x004        /* R  2 for a modern (non-legacy) device */
#define MM_DEVICE_ID 0x008      /* R  2: block (§5.2.1) */
#define MM_VENDOR_ID 0x00C
#define MM_DF 0x010             /* R  DeviceFeatures, 32 bits chosen by... */
#define MM_DFSEL 0x014          /* W  ...DeviceFeaturesSel */
#define MM_GF 0x020             /* W  DriverFeatures */
#define MM_GFSEL 0x024          /* W  DriverFeaturesSel */
#define MM_Q_SEL 0x030          /* W  QueueSel */
#define MM_Q_NUM_MAX 0x034      /* R  QueueNumMax (0: no such queue) */
#define MM_Q_NUM 0x038          /* W  QueueNum */
#define MM_Q_READY 0x044        /* RW QueueReady */
#define MM_Q_NOTIFY 0x050       /* W  QueueNotify: the queue's index */
#define MM_INT_STATUS 0x060     /* R  InterruptStatus: bit 0 used buffer, bit 1 config change */
#define MM_INT_ACK 0x064        /* W  InterruptACK */
#define MM_STATUS 0x070         /* RW Status (device_status) */
#define MM_Q_DESC 0x080         /* W  QueueDescLow/High */
#define MM_Q_DRIVER 0x090       /* W  QueueDriverLow/High */
#define MM_Q_DEVICE 0x0A0       /* W  QueueDeviceLow/High */
#define MM_CFGGEN 0x0FC         /* R  ConfigGeneration */
#define MM_CONFIG 0x100         /* the device-specific configuration */
#define MM_MAGIC_VALUE 0x74726976u

/* ---- common configuration helpers ---------------------------------------------- */

static uint8_t status_read(void)
{
    return dev.mmio ? (uint8_t)mmio_r32(dev.mmio + MM_STATUS) : mmio_r8(dev.common + CC_STATUS);
}
static void status_write(uint8_t s)
{
    if (dev.mmio)
        mmio_w32(dev.mmio + MM_STATUS, s);
    else
        mmio_w8(dev.common + CC_STATUS, s);
}

static uint64_t read_features(void)
{
    uint64_t sel = dev.mmio ? dev.mmio + MM_DFSEL : dev.common + CC_DFSELECT;
    uint64_t val = dev.mmio ? dev.mmio + MM_DF : dev.common + CC_DF;
    mmio_w32(sel, 0);
    uint64_t lo = mmio_r32(val);
    mmio_w32(sel, 1);
    uint64_t hi = mmio_r32(val);
    return hi << 32 | lo;
}

static void write_features(uint64_t f)
{
    uint64_t sel = dev.mmio ? dev.mmio + MM_GFSEL : dev.common + CC_GFSELECT;
    uint64_t val = dev.mmio ? dev.mmio + MM_GF : dev.common + CC_GF;
    mmio_w32(sel, 0);
    mmio_w32(val, (uint32_t)f);
    mmio_w32(sel, 1);
    mmio_w32(val, (uint32_t)(f >> 32));
}

static uint8_t config_generation(void)
{
    return dev.mmio ? (uint8_t)mmio_r32(dev.mmio + MM_CFGGEN) : mmio_r8(dev.common + CC_CFGGEN);
}

/* The interrupt causes, cleared: PCI's ISR status clears itself when read
 * (§4.1.4.5); virtio-mmio's InterruptStatus is acknowledged by writing its
 * bits to InterruptACK (§4.2.2). */
static uint8_t isr_read_clear(void)
{
    if (!dev.mmio)
        return mmio_r8(dev.isr);
    uint32_t v = mmio_r32(dev.mmio + MM_INT_STATUS);
    mmio_w32(dev.mmio + MM_INT_ACK, v);
    return (uint8_t)v;
}

static void write64(uint64_t reg, uint64_t v)
{
    mmio_w32(reg, (uint32_t)v);
    mmio_w32(reg + 4, (uint32_t)(v >> 32));
}

/* §2.5.1: read a config field wider than 32 bits consistently. */
static uint64_t cfg_r64(uint32_t off)
{
    uint8_t before, after;
    uint64_t v;
    do {
        before = config_generation();
        v = mmio_r32(dev.devcfg + off) | (uint64_t)mmio_r32(dev.devcfg + off + 4) << 32;
        after = config_generation();
    } while (before != after);
    return v;
}
static uint32_t cfg_r32(uint32_t off) { return mmio_r32(dev.devcfg + off); }

/* Reset and wait for device_status to read 0 (§4.1.4.3.2). */
static bool device_reset(void)
{
    status_write(0);
    uint64_t deadline = rdtsc() + TIMEOUT_CYCLES;
    uint8_t s;
    while ((s = status_read()) != 0) {
        if (rdtsc() > deadline) {
            set_why("device_status still reads 0x%02X", s);
            return false;
        }
        cpu_relax();
    }
    return true;
}

/* ---- the virtqueue ----------------------------------------------------------- */

#define QMAX 256
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct virtq_avail { uint16_t flags, idx, ring[QMAX], used_event; };
struct virtq_used_elem { uint32_t id, len; };
struct virtq_used { uint16_t flags, idx; struct virtq_used_elem ring[QMAX]; uint16_t avail_event; };

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
        mmio_w32(dev.notify, 0);        /* QueueNotify = queue index 0 (§4.2.3.3) */
    else
        mmio_w16(dev.notify, 0);        /* queue index 0 (§4.1.5.2) */
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

static const char *feature_name(unsigned bit)
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
    case 24: return "NOTIFY_ON_EMPTY";
    case 27: return "ANY_LAYOUT";
    case F_INDIRECT_DESC: return "RING_INDIRECT_DESC";
    case F_EVENT_IDX: return "RING_EVENT_IDX";
    case F_VERSION_1: return "VERSION_1";
    case F_ACCESS_PLATFORM: return "ACCESS_PLATFORM";
    case F_RING_PACKED: return "RING_PACKED";
    case 35: return "IN_ORDER";
    case 36: return "ORDER_PLATFORM";
    case 37: return "SR_IOV";
    case 38: return "NOTIFICATION_DATA";
    case 39: return "NOTIF_CONFIG_DATA";
    case 40: return "RING_RESET";
    default: return NULL;
    }
}

/* Feature names, in bit order ("RO FLUSH VERSION_1"). */
static void feature_list(char *out, size_t cap, uint64_t f)
{
    size_t n = 0;
    out[0] = 0;
    for (int bit = 0; bit < 64; bit++) {
        if (!(f & BIT(bit)))
            continue;
        const char *nm = feature_name((unsigned)bit);
        char one[24];
        if (nm)
            fmt(one, sizeof one, "%s", nm);
        else
            fmt(one, sizeof one, "bit%d", bit);
        n += fmt(out + n, n < cap ? cap - n : 0, "%s%s", n ? " " : "", one);
    }
}

/* Step 6 of §3.1.1 for queue 0, through the PCI common configuration
 * (§4.1.5.1.3). *size_out: the size chosen. */
static bool queue0_setup_pci(unsigned want, uint16_t *size_out)
{
    uint16_t numq = mmio_r16(dev.common + CC_NUMQ);
    mmio_w16(dev.common + CC_Q_SELECT, 0);
    uint16_t max = mmio_r16(dev.common + CC_Q_SIZE);
    dev.notify_off = mmio_r16(dev.common + CC_Q_NOFF);
    if (verbose)
        print(NAME ": [verbose] num_queues %u, queue 0: maximum size %u, queue_notify_off %u, queue_enable %u\n",
              numq, max, dev.notify_off, mmio_r16(dev.common + CC_Q_ENABLE));
    bool qok = false;
    uint16_t size = (uint16_t)(max < want ? max : want);
    *size_out = size;
    uint64_t noff = (uint64_t)dev.notify_off * dev.notify_mult;
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
                (unsigned long long)noff, dev.notify_off, dev.notify_mult, dev.caps[CAP_NOTIFY].length);
    else
        qok = true;
    if (qok) {
        dev.qsize = size;
        vq_reset_memory(size);
        mmio_w16(dev.common + CC_Q_SIZE, size);
        write64(dev.common + CC_Q_DESC, (uint64_t)(uintptr_t)vq_desc);
        write64(dev.common + CC_Q_DRIVER, (uint64_t)(uintptr_t)&vq_avail);
        write64(dev.common + CC_Q_DEVICE, (uint64_t)(uintptr_t)&vq_used);
        mmio_w16(dev.common + CC_Q_ENABLE, 1);
        dev.notify = dev.bar_base[dev.caps[CAP_NOTIFY].bar] + dev.caps[CAP_NOTIFY].offset + noff;
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
    dev.qsize = size;
    vq_reset_memory(size);
    mmio_w32(dev.mmio + MM_Q_NUM, size);
    write64(dev.mmio + MM_Q_DESC, (uint64_t)(uintptr_t)vq_desc);
    write64(dev.mmio + MM_Q_DRIVER, (uint64_t)(uintptr_t)&vq_avail);
    write64(dev.mmio + MM_Q_DEVICE, (uint64_t)(uintptr_t)&vq_used);
    mmio_w32(dev.mmio + MM_Q_READY, 1);
    dev.notify = dev.mmio + MM_Q_NOTIFY;
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
        feature_list(names, sizeof names, dev.offered);
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
    feature_list(names, sizeof names, dev.features);
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
    uint64_t last = dev.capacity - 1;
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
    uint64_t cap = dev.capacity, last = cap - 1;
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
    unsigned k = dev.qsize / 3;         /* chains of 3 descriptors in flight */
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
            if (id >= dev.qsize || !outstanding[id]) {
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
    uint64_t sectors = bytes / SECTOR, span = dev.capacity / sectors;
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
        if (id >= dev.qsize || slot_of[id] < 0) {
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
    if (big > dev.capacity / (BENCH_BIG / SECTOR))
        big = dev.capacity / (BENCH_BIG / SECTOR);
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
    if (!find_device()) {
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

    /* The virtio capabilities and their BARs (§4.1.4) */
    uint64_t notify_base = 0;
    uint32_t devcfg_need = opt.mode == M_DISCARD ? BC_WZ_MAY_UNMAP + 1 : 8;
    bool ok = walk_caps() && map_cap(CAP_COMMON, CC_SIZE, &dev.common) && map_cap(CAP_NOTIFY, 2, &notify_base) &&
              map_cap(CAP_ISR, 1, &dev.isr) && map_cap(CAP_DEVICE, devcfg_need, &dev.devcfg);
    if (verbose)
        for (int t = CAP_COMMON; t <= CAP_DEVICE; t++) {
            struct cap *c = &dev.caps[t];
            if (c->found)
                print(NAME ": [verbose] %s: BAR %u, offset 0x%x, length 0x%x%s\n", cap_names[t], c->bar, c->offset,
                      c->length, t == CAP_NOTIFY ? "" : "");
        }
    if (verbose)
        print(NAME ": [verbose] notify_off_multiplier %u; MSI-X capability %s\n", dev.notify_mult,
              dev.has_msix ? "present (left disabled)" : "absent");
    if (!ok)
        fatal("PCI: virtio capabilities common cfg, notify, ISR and device cfg, each inside a memory BAR");
    result(true, "PCI: virtio capabilities common cfg, notify, ISR and device cfg, each inside a memory BAR");
    uint16_t cmd = pci_r16(b, PCI_COMMAND);
    pci_w16(b, PCI_COMMAND, cmd | PCI_CMD_MEMORY | PCI_CMD_MASTER);
    cmd = pci_r16(b, PCI_COMMAND);
    if ((cmd & (PCI_CMD_MEMORY | PCI_CMD_MASTER)) != (PCI_CMD_MEMORY | PCI_CMD_MASTER)) {
        set_why("the command register reads 0x%04X", cmd);
        fatal("PCI: command register: memory space and bus master enabled");
    }
    result(true, "PCI: command register: memory space and bus master enabled");
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

void vbt_main(uint32_t mbi_addr);
void vbt_main(uint32_t mbi_addr)
{
    const volatile uint32_t *mbi = (const volatile uint32_t *)(uintptr_t)mbi_addr;
    const char *cmdline = (mbi[0] & (1u << 2)) ? (const char *)(uintptr_t)mbi[4] : "";
    {   /* the arguments: the command line after the kernel's path */
        const char *a = cmdline;
        while (*a && (uint8_t)*a > ' ')
            a++;
        while (*a && (uint8_t)*a <= ' ')
            a++;
        size_t n = 0;
        while (a[n])
            n++;
        while (n && (uint8_t)a[n - 1] <= ' ')
            n--;
        char text[200];
        if (n > sizeof text - 1)
            n = sizeof text - 1;
        memcpy(text, a, n);
        text[n] = 0;
        print(NAME ": arguments: \"%s\"\n", text);
    }
    parse_cmdline(cmdline);
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
    dev.capacity = cfg_r64(BC_CAPACITY);
    print(NAME ": capacity: %llu sectors (%llu bytes)\n", (unsigned long long)dev.capacity,
          (unsigned long long)dev.capacity * SECTOR);
    if (opt.have_capacity) {
        if (dev.capacity != opt.capacity)
            set_why("the device reports %llu", (unsigned long long)dev.capacity);
        result(dev.capacity == opt.capacity, "capacity is %llu sectors (expect-capacity)",
               (unsigned long long)opt.capacity);
    }
    print(NAME ": read-only (VIRTIO_BLK_F_RO): %s\n", (dev.offered & BIT(F_BLK_RO)) ? "yes" : "no");
    if (verbose) {
        print(NAME ": [verbose] config: seg_max %u, blk_size %u, num_queues %u\n", cfg_r32(BC_SEG_MAX),
              cfg_r32(BC_BLK_SIZE), mmio_r16(dev.devcfg + BC_NUM_QUEUES));
    }
    get_id("");

    if (opt.mode != M_INFO) {
        if (dev.capacity < 512)
            set_why("the disk has %llu sectors; make it with guests/tools/make-test-disk.sh", (unsigned long long)dev.capacity);
        if (!result(dev.capacity >= 512, "capacity >= 512 sectors (the sectors the tests use)"))
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
