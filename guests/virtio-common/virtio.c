/* =============================================================================
 * virtio-common/virtio.c -- PCI discovery, the virtio capabilities, BAR
 * sizing and assignment, the common configuration (virtio.h says what each
 * part is for; virtio-blk-test.c explains virtio in order)
 * =============================================================================
 *
 * Compiled once and linked into both virtio guests (guests/Makefile).
 *
 * The BARs: firmware (QEMU's SeaBIOS) programs them before the kernel
 * runs, and skvm has no firmware but pre-assigns them itself, so normally
 * the driver just reads the address. It still sizes every BAR it uses (PCI
 * 3.0 §6.2.5.1: with decoding off, write all ones, read back, restore) and
 * checks that each structure lies inside it. A BAR that reads 0 (nobody
 * programmed it), or lies above 4 GiB (outside entry.asm's page tables),
 * it assigns itself, naturally aligned, from 0xC000_0000 up (assign-bars=1
 * forces that, to test the path under QEMU).
 * ========================================================================== */

#include "virtio.h"

struct virtio_dev dev;
bool assign_bars;

/* ---- PCI configuration space (mechanism #1) --------------------------------- */

/* Address register 0xCF8: 0x8000_0000 | bus << 16 | device << 11 |
 * function << 8 | register (dword-aligned); then 0xCFC-0xCFF is that
 * dword of the function's configuration space. */
static void pci_select(struct bdf d, uint8_t reg)
{
    outl(PCI_ADDR, 0x80000000u | (uint32_t)d.bus << 16 | (uint32_t)d.dev << 11 | (uint32_t)d.fn << 8 | (reg & 0xFC));
}
uint32_t pci_r32(struct bdf d, uint8_t reg) { pci_select(d, reg); return inl(PCI_DATA); }
uint16_t pci_r16(struct bdf d, uint8_t reg) { pci_select(d, reg); return inw(PCI_DATA + (reg & 2)); }
uint8_t pci_r8(struct bdf d, uint8_t reg) { pci_select(d, reg); return inb(PCI_DATA + (reg & 3)); }
void pci_w32(struct bdf d, uint8_t reg, uint32_t v) { pci_select(d, reg); outl(PCI_DATA, v); }
void pci_w16(struct bdf d, uint8_t reg, uint16_t v) { pci_select(d, reg); outw(PCI_DATA + (reg & 2), v); }

const char *const cap_names[] = { "", "common cfg", "notify", "ISR", "device cfg" };

/* ---- finding the device ------------------------------------------------------ */

bool pci_find_virtio(uint16_t device_id, unsigned index)
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
            if ((id & 0xFFFF) != VIRTIO_VENDOR || (id >> 16) != device_id)
                continue;
            if (dev.count == index) {
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
    bool assign = assign_bars || addr == 0 || addr + r.size > 0x100000000ull;
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
            print("%s: [verbose] BAR %u: %s memory%s, 0x%llx bytes, was 0x%llx, assigned 0x%llx\n", guest_name, i,
                  r.is64 ? "64-bit" : "32-bit", (r.lo & 8) ? " prefetchable" : "", (unsigned long long)r.size,
                  (unsigned long long)addr, (unsigned long long)base);
        addr = base;
    } else if (verbose) {
        print("%s: [verbose] BAR %u: %s memory%s, 0x%llx bytes at 0x%llx (programmed before boot)\n", guest_name, i,
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


bool virtio_pci_map(uint32_t devcfg_need)
{
    uint64_t notify_base = 0;           /* each queue's notify address is computed when it is set up */
    bool ok = walk_caps() && map_cap(CAP_COMMON, CC_SIZE, &dev.common) && map_cap(CAP_NOTIFY, 2, &notify_base) &&
              map_cap(CAP_ISR, 1, &dev.isr) && map_cap(CAP_DEVICE, devcfg_need, &dev.devcfg);
    if (verbose)
        for (int t = CAP_COMMON; t <= CAP_DEVICE; t++) {
            struct cap *c = &dev.caps[t];
            if (c->found)
                print("%s: [verbose] %s: BAR %u, offset 0x%x, length 0x%x\n", guest_name, cap_names[t], c->bar,
                      c->offset, c->length);
        }
    return ok;
}

/* The command register's Memory Space (bit 1) and Bus Master (bit 2)
 * bits: a PCI device may only reach guest memory (the virtqueues, the
 * buffers) with bus mastering on. (QEMU 7.2's virtio-blk-pci happens to
 * work without it; a VMM may do the same, but the driver asks properly.) */
void virtio_pci_enable(bool mapped)
{
    struct bdf b = dev.bdf;
    if (!mapped)
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

/* ---- common configuration helpers ---------------------------------------------- */

uint8_t status_read(void)
{
    return dev.mmio ? (uint8_t)mmio_r32(dev.mmio + MM_STATUS) : mmio_r8(dev.common + CC_STATUS);
}
void status_write(uint8_t s)
{
    if (dev.mmio)
        mmio_w32(dev.mmio + MM_STATUS, s);
    else
        mmio_w8(dev.common + CC_STATUS, s);
}

uint64_t read_features(void)
{
    uint64_t sel = dev.mmio ? dev.mmio + MM_DFSEL : dev.common + CC_DFSELECT;
    uint64_t val = dev.mmio ? dev.mmio + MM_DF : dev.common + CC_DF;
    mmio_w32(sel, 0);
    uint64_t lo = mmio_r32(val);
    mmio_w32(sel, 1);
    uint64_t hi = mmio_r32(val);
    return hi << 32 | lo;
}

void write_features(uint64_t f)
{
    uint64_t sel = dev.mmio ? dev.mmio + MM_GFSEL : dev.common + CC_GFSELECT;
    uint64_t val = dev.mmio ? dev.mmio + MM_GF : dev.common + CC_GF;
    mmio_w32(sel, 0);
    mmio_w32(val, (uint32_t)f);
    mmio_w32(sel, 1);
    mmio_w32(val, (uint32_t)(f >> 32));
}

uint8_t config_generation(void)
{
    return dev.mmio ? (uint8_t)mmio_r32(dev.mmio + MM_CFGGEN) : mmio_r8(dev.common + CC_CFGGEN);
}

uint8_t isr_read_clear(void)
{
    if (!dev.mmio)
        return mmio_r8(dev.isr);
    uint32_t v = mmio_r32(dev.mmio + MM_INT_STATUS);
    mmio_w32(dev.mmio + MM_INT_ACK, v);
    return (uint8_t)v;
}

void write64(uint64_t reg, uint64_t v)
{
    mmio_w32(reg, (uint32_t)v);
    mmio_w32(reg + 4, (uint32_t)(v >> 32));
}

uint64_t cfg_r64(uint32_t off)
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
uint32_t cfg_r32(uint32_t off) { return mmio_r32(dev.devcfg + off); }

bool device_reset(void)
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

/* ---- feature names -------------------------------------------------------------- */

/* The bits of §6, which every device type shares. */
static const char *virtio_feature_name(unsigned bit)
{
    switch (bit) {
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

void feature_list(char *out, size_t cap, uint64_t f, const char *none)
{
    size_t n = 0;
    out[0] = 0;
    for (int bit = 0; bit < 64; bit++) {
        if (!(f & BIT(bit)))
            continue;
        const char *nm = device_feature_name((unsigned)bit);
        if (!nm)
            nm = virtio_feature_name((unsigned)bit);
        char one[24];
        if (nm)
            fmt(one, sizeof one, "%s", nm);
        else
            fmt(one, sizeof one, "bit%d", bit);
        n += fmt(out + n, n < cap ? cap - n : 0, "%s%s", n ? " " : "", one);
    }
    if (!n)
        fmt(out, cap, "%s", none);
}
