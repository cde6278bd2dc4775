/* =============================================================================
 * virtio-common/guest.h -- what a freestanding C test guest needs underneath
 * it: the machine, a little libc, serial output, checks and the verdict, and
 * the command line
 * =============================================================================
 *
 * What this file is
 * -----------------
 * virtio-blk-test and virtio-net-test are C programs that run with nothing
 * below them but entry.asm (which gets them to 64-bit user mode) and the
 * virtual machine. No libc, no kernel: this header and guest.c are the
 * small part of both that has nothing to do with virtio:
 *
 *   - the machine: port I/O (IN/OUT, allowed at CPL 3 by entry.asm's I/O
 *     permission bitmap), MMIO of exactly a field's width, the barriers
 *     the virtqueue protocol needs on x86, and the time stamp counter;
 *   - memset, memcpy, memcmp: gcc may emit calls to them even in
 *     freestanding code (-ffreestanding -fno-builtin only stops it from
 *     assuming what they do);
 *   - polled COM1 output and fmt/print, a small printf;
 *   - checks: result() prints one "<guest>: <what>: ok" or
 *     "<guest>: <what>: FAIL (<why>)" line and counts it; finish() prints
 *     the verdict and ends the VM through the debug-exit port 0xF4
 *     (v = 0: all passed, exit status 1; v = 1: some failed, exit status 3);
 *   - the command line: the Multiboot command line (Multiboot 1 spec,
 *     "Boot information format": flags bit 2, cmdline at offset 16), split
 *     into KEY=VALUE words.
 *
 * Every line a guest prints starts with its name, guest_name, which each
 * guest defines ("virtio-blk-test", "virtio-net-test"); entry.asm's
 * exception report prints it too. virtio.h builds on this header.
 * ========================================================================== */

#ifndef GUEST_H
#define GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The guest's name: the prefix of every line it prints. Defined by the guest. */
extern const char guest_name[];

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

#define COM1 0x3F8
#define DEBUG_EXIT 0xF4

/* ---- libc (guest.c) ---------------------------------------------------------- */

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- serial output and formatting --------------------------------------------- */

/* A small vsnprintf: %s %c %d %u %x %X %%, flag 0, a width, and the
 * length modifiers l, ll and z (64-bit). Returns the length the whole
 * text would have; out holds at most cap - 1 bytes of it and a NUL. */
size_t vfmt(char *out, size_t cap, const char *f, va_list ap);
size_t fmt(char *out, size_t cap, const char *f, ...);
/* Formats (at most 511 bytes) and writes to COM1. */
void print(const char *f, ...);

/* ---- checks and the verdict ---------------------------------------------------- */

extern unsigned checks_run, checks_failed;
extern char why[256];                   /* the reason of the next FAIL */
extern bool verbose;                    /* verbose=1: the [verbose] lines */

/* The reason the next failed check prints (a format). */
void set_why(const char *f, ...);
/* Count one check and print its line; `what` is a format. Returns ok. */
bool result(bool ok, const char *what, ...);
/* The verdict line, then the end of the VM (v = 0 or 1). */
void __attribute__((noreturn)) finish(void);
/* A failed check after which testing cannot go on. */
void __attribute__((noreturn)) fatal(const char *what);

/* ---- the command line ------------------------------------------------------------ */

/* The word w[0..n) is exactly s. */
bool word_is(const char *w, size_t n, const char *s);
/* Decimal, at most UINT64_MAX. */
bool parse_u64(const char *s, size_t n, uint64_t *out);
/* "0x" and 1-16 hex digits. */
bool parse_hex(const char *s, size_t n, uint64_t *out);
/* "0" or "1". */
bool parse_bool(const char *v, size_t vn, bool *out);
/* One of names[0..n): *out = its index. */
bool parse_choice(const char *v, size_t vn, const char *const *names, unsigned n, unsigned *out);

/* The Multiboot command line (mbi_addr: the info structure), after
 * printing its arguments (the words after the kernel's path) as
 *     <guest>: arguments: "..." */
const char *guest_cmdline(uint32_t mbi_addr);

/* One KEY=VALUE word: k[0..kn) the key, v[0..vn) the value. Returns false
 * for a key it does not know or a bad value. */
typedef bool option_fn(const char *k, size_t kn, const char *v, size_t vn);

/* Arguments are the words after the first (the kernel's path), separated
 * by bytes 1..0x20, each KEY=VALUE. test=MODE (MODE one of modes[0..n))
 * and verbose=0|1 are handled here, every other key by `option`. A bad
 * word is a failed check whose reason is "expected " and `usage`.
 * Returns the index of the last test=MODE, 0 without one. */
unsigned parse_cmdline(const char *c, const char *const *modes, unsigned nmodes, option_fn *option,
                       const char *usage);

#endif
