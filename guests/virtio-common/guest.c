/* =============================================================================
 * virtio-common/guest.c -- the freestanding C guests' libc, serial output,
 * checks and command line (guest.h says what each part is for)
 * =============================================================================
 *
 * Compiled once and linked into every C guest (guests/Makefile). Nothing
 * here knows about virtio or PCI: see virtio.c for that. The guest's name,
 * guest_name, comes from the guest, so every line printed here carries it.
 * ========================================================================== */

#include "guest.h"

/* ---- libc ---------------------------------------------------------------------- */

/* gcc may emit calls to these even in freestanding code. REP STOSB and
 * REP MOVSB: one instruction each, run natively at CPL 3, and fast for the
 * big buffers (64 KiB frames, 1 MiB disk requests); DF is 0 (entry.asm
 * starts C with RFLAGS = 2, and the ABI keeps it clear). */
void *memset(void *d, int c, size_t n)
{
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}
void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return r;
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

size_t vfmt(char *out, size_t cap, const char *f, va_list ap)
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

size_t fmt(char *out, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    size_t n = vfmt(out, cap, f, ap);
    va_end(ap);
    return n;
}

void print(const char *f, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    puts_serial(buf);
}

/* ---- checks and the verdict ------------------------------------------------ */

unsigned checks_run, checks_failed;
char why[256];
bool verbose;

void set_why(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vfmt(why, sizeof why, f, ap);
    va_end(ap);
}

bool result(bool ok, const char *what, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, what);
    vfmt(buf, sizeof buf, what, ap);
    va_end(ap);
    checks_run++;
    if (ok) {
        print("%s: %s: ok\n", guest_name, buf);
    } else {
        checks_failed++;
        print("%s: %s: FAIL (%s)\n", guest_name, buf, why[0] ? why : "?");
    }
    why[0] = 0;
    return ok;
}

static void __attribute__((noreturn)) vm_exit(uint8_t v)
{
    outb(DEBUG_EXIT, v);
    print("%s: port 0xF4 did not end the VM\n", guest_name);
    for (;;)
        __asm__ volatile("ud2");
}

void __attribute__((noreturn)) finish(void)
{
    if (checks_failed == 0) {
        print("%s: all %u checks passed\n", guest_name, checks_run);
        vm_exit(0);
    }
    print("%s: %u of %u checks failed\n", guest_name, checks_failed, checks_run);
    vm_exit(1);
}

void __attribute__((noreturn)) fatal(const char *what)
{
    result(false, "%s", what);
    finish();
}

/* ---- the command line -------------------------------------------------------- */

bool word_is(const char *w, size_t n, const char *s)
{
    size_t i = 0;
    for (; i < n && s[i]; i++)
        if (w[i] != s[i])
            return false;
    return i == n && s[i] == 0;
}

bool parse_u64(const char *s, size_t n, uint64_t *out)
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

bool parse_hex(const char *s, size_t n, uint64_t *out)
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

bool parse_bool(const char *v, size_t vn, bool *out)
{
    if (!(word_is(v, vn, "0") || word_is(v, vn, "1")))
        return false;
    *out = v[0] == '1';
    return true;
}

bool parse_choice(const char *v, size_t vn, const char *const *names, unsigned n, unsigned *out)
{
    for (unsigned i = 0; i < n; i++)
        if (word_is(v, vn, names[i])) {
            *out = i;
            return true;
        }
    return false;
}

unsigned parse_cmdline(const char *c, const char *const *modes, unsigned nmodes, option_fn *option,
                       const char *usage)
{
    unsigned mode = 0;
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
        bool ok;
        if (k == n)                     /* no '=' */
            ok = false;
        else if (word_is(w, k, "test"))
            ok = parse_choice(v, vn, modes, nmodes, &mode);
        else if (word_is(w, k, "verbose"))
            ok = parse_bool(v, vn, &verbose);
        else
            ok = option(w, k, v, vn);
        if (!ok) {
            char word[64];
            size_t m = n < sizeof word - 1 ? n : sizeof word - 1;
            memcpy(word, w, m);
            word[m] = 0;
            set_why("expected %s", usage);
            result(false, "argument \"%s\"", word);
        }
    }
    return mode;
}

const char *guest_cmdline(uint32_t mbi_addr)
{
    const volatile uint32_t *mbi = (const volatile uint32_t *)(uintptr_t)mbi_addr;
    const char *cmdline = (mbi[0] & (1u << 2)) ? (const char *)(uintptr_t)mbi[4] : "";
    /* the arguments: the command line after the kernel's path */
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
    print("%s: arguments: \"%s\"\n", guest_name, text);
    return cmdline;
}
