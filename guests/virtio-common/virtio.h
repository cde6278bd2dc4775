/* =============================================================================
 * virtio-common/virtio.h -- the part of a virtio driver that does not depend
 * on the device type: PCI discovery, the virtio capabilities, BARs, the
 * common configuration, virtio-mmio's registers, split-virtqueue layout
 * =============================================================================
 *
 * What this file is
 * -----------------
 * Every virtio device, block or network or anything else, is found and
 * brought up the same way; only its device ID, its feature bits, its
 * configuration space and its queues differ. This header (and virtio.c)
 * is that common part, shared by virtio-blk-test and virtio-net-test.
 * virtio-blk-test.c tells the whole story in order (§4.1 finding the
 * device, §3.1 bringing it up, §2.7 talking to it); read it first. Here,
 * briefly:
 *
 *   - PCI configuration mechanism #1 (ports 0xCF8/0xCFC): pci_r8..pci_w32;
 *   - §4.1.2 discovery: pci_find_virtio finds function #index with vendor
 *     0x1AF4 and a given device ID (0x1040 + the virtio device ID) on bus 0;
 *   - §4.1.4 the vendor capabilities that say where the common, notify,
 *     ISR and device structures live, and the BARs they live in, sized
 *     and if need be assigned (PCI 3.0 §6.2.5.1): virtio_pci_map;
 *   - the common configuration (§4.1.4.3) and its virtio-mmio counterpart
 *     (§4.2.2): device_status, the 64 feature bits, config_generation,
 *     reset; every helper takes the virtio-mmio path when dev.mmio is set;
 *   - §2.7 the split virtqueue's three areas (the structures only: each
 *     driver manages its own queues);
 *   - the names of the feature bits that belong to no device type (§6).
 *
 * The specification: Virtual I/O Device (VIRTIO) Version 1.2. Section
 * numbers are that version's.
 * ========================================================================== */

#ifndef VIRTIO_H
#define VIRTIO_H

#include "guest.h"

/* ---- PCI configuration space (mechanism #1) --------------------------------- */

#define PCI_ADDR 0xCF8
#define PCI_DATA 0xCFC

struct bdf { uint8_t bus, dev, fn; };

uint32_t pci_r32(struct bdf d, uint8_t reg);
uint16_t pci_r16(struct bdf d, uint8_t reg);
uint8_t pci_r8(struct bdf d, uint8_t reg);
void pci_w32(struct bdf d, uint8_t reg, uint32_t v);
void pci_w16(struct bdf d, uint8_t reg, uint16_t v);

#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CMD_MEMORY (1 << 1)
#define PCI_CMD_MASTER (1 << 2)
#define PCI_STATUS_CAPS (1 << 4)
#define PCI_CAP_PTR 0x34
#define PCI_CAP_VNDR 0x09
#define PCI_CAP_MSIX 0x11

#define VIRTIO_VENDOR 0x1AF4

/* ---- the device's structures ---------------------------------------------------- */

/* virtio_pci_cap cfg_type values (§4.1.4) */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4 };
extern const char *const cap_names[];   /* "common cfg", ... by cfg_type */

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

/* feature bits of no particular device type (§6) */
#define F_INDIRECT_DESC 28
#define F_EVENT_IDX 29
#define F_VERSION_1 32
#define F_ACCESS_PLATFORM 33
#define F_RING_PACKED 34
#define BIT(n) (1ull << (n))

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
#define MM_DEVICE_ID 0x008      /* R  the virtio device ID (§5): 1 network, 2 block */
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

/* ---- the device as found ----------------------------------------------------------- */

struct cap {
    bool found;
    uint8_t bar, cap_len;
    uint32_t offset, length;
};

extern struct virtio_dev {
    struct bdf bdf;
    unsigned count;                     /* functions with the device ID on bus 0 */
    struct cap caps[5];
    uint32_t notify_mult;
    bool has_msix;
    uint64_t bar_base[6], bar_size[6];
    bool bar_done[6];
    uint64_t common, isr, devcfg;       /* MMIO addresses */
    uint64_t mmio;                      /* virtio-mmio: the window's base; 0 on PCI */
    uint64_t features;                  /* negotiated */
    uint64_t offered;
} dev;

/* assign-bars=1: assign every BAR this driver uses itself, even when it
 * was programmed before boot (to test that path under QEMU). */
extern bool assign_bars;

/* ---- finding the device on PCI (virtio.c) ---------------------------------------- */

/* §4.1.2: the index-th function (counting from 0) on bus 0 with vendor
 * 0x1AF4 and this device ID, into dev.bdf; dev.count = how many there are.
 * false: fewer than index + 1. */
bool pci_find_virtio(uint16_t device_id, unsigned index);

/* §4.1.4: walk dev.bdf's capability list and map the common, notify, ISR
 * and device structures (the device's at least devcfg_need bytes) into
 * dev.common, dev.isr and dev.devcfg, sizing (and if need be assigning)
 * their BARs. verbose=1 prints where each lies. false: a reason is in
 * why, and the device is unusable. */
bool virtio_pci_map(uint32_t devcfg_need);

/* The check that virtio_pci_map succeeded (fatal if not), then memory
 * space and bus master on in the command register, a check too. */
void virtio_pci_enable(bool mapped);

/* ---- the common configuration (either transport) -------------------------------- */

uint8_t status_read(void);
void status_write(uint8_t s);
uint64_t read_features(void);           /* the 64 device feature bits */
void write_features(uint64_t f);        /* the 64 driver feature bits */
uint8_t config_generation(void);
/* The interrupt causes, cleared: PCI's ISR status clears itself when read
 * (§4.1.4.5); virtio-mmio's InterruptStatus is acknowledged by writing its
 * bits to InterruptACK (§4.2.2). */
uint8_t isr_read_clear(void);
/* A 64-bit register as two 32-bit halves, low first (§4.1.3.1). */
void write64(uint64_t reg, uint64_t v);
/* §2.5.1: read a config field wider than 32 bits consistently. */
uint64_t cfg_r64(uint32_t off);
uint32_t cfg_r32(uint32_t off);
/* Reset and wait for device_status to read 0 (§4.1.4.3.2). */
bool device_reset(void);

/* ---- feature names ------------------------------------------------------------------ */

/* The name of a device-type feature bit, or NULL. Defined by the guest. */
const char *device_feature_name(unsigned bit);
/* The names of the bits set in f, in bit order ("RO FLUSH VERSION_1"):
 * device_feature_name's, those of §6, or "bitN". `none` if f is 0. */
void feature_list(char *out, size_t cap, uint64_t f, const char *none);

/* ---- split virtqueues: the layout (§2.7) -------------------------------------------- */

#define QMAX 256                        /* the largest queue these drivers use */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct virtq_avail { uint16_t flags, idx, ring[QMAX], used_event; };
struct virtq_used_elem { uint32_t id, len; };
struct virtq_used { uint16_t flags, idx; struct virtq_used_elem ring[QMAX]; uint16_t avail_event; };

#endif
