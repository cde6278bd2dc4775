/* =============================================================================
 * guests/tools/net-peer.c -- the host end of virtio-net-test's frame tests
 * =============================================================================
 *
 *   net-peer IFNAME [--idle SECONDS]
 *   net-peer --ping ADDRESS COUNT
 *
 * (The second form is a minimal ping(8), for hosts without iputils-ping:
 * COUNT ICMP echo requests to ADDRESS, 0.2 s apart, each waiting up to
 * 2 s for its reply; it prints "peer: ping ADDRESS: N echo requests, N
 * replies" and exits 0 if every one was answered with the data sent.)
 *
 * Run inside the network namespace that holds the tap (guests/tools/
 * net-test.sh does). It opens an AF_PACKET socket on IFNAME with
 * PACKET_VNET_HDR, so every frame it reads or writes is preceded by the
 * 10-byte struct virtio_net_hdr (the kernel's <linux/virtio_net.h>: flags,
 * gso_type, hdr_len, gso_size, csum_start, csum_offset, in host byte
 * order), prints "peer: ready", and then follows the guest: it checks every
 * frame the guest sends, answers END with REPORT, sends frames when asked
 * (START), and on BYE prints its summary and exits: 0 if every phase was
 * perfect, 1 if not. The protocol, the frame layouts and the pattern are
 * described in guests/virtio-net-test/virtio-net-test.c ("The frame
 * protocol with net-peer"); this file implements the other side of it, and
 * both must change together.
 *
 * It answers nothing else: ARP and ICMP for 10.0.2.2 are the kernel's job.
 * It ignores frames it sent itself (PACKET_OUTGOING) and frames that are
 * not test frames. It gives up, with exit status 1, after --idle seconds
 * (default 30) without a test frame.
 *
 * Output, one line per phase and one verdict, for example (test=frames
 * offload=1):
 *   peer: ready on tap0 (vnet header on)
 *   peer: phase 1 guest->host raw: received 1455 of 1455 frames, 60..1514 bytes, every byte ok
 *   peer: phase 2 host->guest raw: sent 1455 frames, 60..1514 bytes, 46 windows acknowledged
 *   peer: phase 3 guest->host GSO TCPv4: received 66 of 66 frames, 1503..65535 bytes, every byte ok
 *   peer: phase 4 host->guest GSO TCPv4: sent 66 frames, 1503..65535 bytes, 3 windows acknowledged
 *   peer: PASS
 * ========================================================================== */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the protocol (must match virtio-net-test.c) ---- */
enum { K_DATA = 1, K_END, K_REPORT, K_ACK, K_START, K_BYE };
#define ETH_TEST 0x88B5
#define MY_IP 0x0A000202u               /* 10.0.2.2: the host end */
#define GUEST_IP 0x0A00020Fu            /* 10.0.2.15 */
#define NOWHERE_IP 0x0A000203u          /* guest->host GSO destination */
#define GUEST_PORT 21334
#define PEER_PORT 21320
#define MSS 1448
#define FRAME_MAX 65535
#define WINDOW 32
#define RAW_FIRST 60
#define RAW_LAST 1514
#define RAW_COUNT (RAW_LAST - RAW_FIRST + 1)
#define GSO_FIRST 1503
#define BENCH_WINDOW 160                /* bench: frames in flight before waiting for an ACK */
#define DIR_G2H 0x00
#define DIR_H2G 0x5A
#define VH 10                           /* sizeof(struct virtio_net_hdr) */

static uint8_t pattern(uint32_t i, uint32_t seq, uint32_t n, uint8_t dir)
{
    return (uint8_t)((i + (i >> 8) * 7 + seq * 13 + n * 3) ^ dir);
}

/* The GSO lengths: 1503, 1503 + step, ... while below 65535, then 65535. */
static uint32_t gso_count(uint32_t step)
{
    return (FRAME_MAX - GSO_FIRST + step - 1) / step + 1;
}
static uint32_t gso_len(uint32_t seq, uint32_t step)
{
    return seq + 1 < gso_count(step) ? GSO_FIRST + seq * step : FRAME_MAX;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

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
static uint16_t pseudo_sum(uint32_t src, uint32_t dst, uint32_t tcp_len)
{
    return csum_fold((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + tcp_len);
}

/* ---- state ---- */
static int fd;
static uint8_t my_mac[6], guest_mac[6];
static bool have_guest_mac;
static int idle_s = 30;
static uint8_t rbuf[VH + FRAME_MAX + 4096], sbuf[VH + FRAME_MAX + 64];

struct phase {
    bool used, reported;
    uint32_t next, ok, bad, sent, min, max, windows;
    char first_err[200];
};
#define NPHASES 9
static struct phase ph[NPHASES];
static const char *const phase_name[NPHASES] = { "", "guest->host raw", "host->guest raw", "guest->host GSO TCPv4",
                                                 "host->guest GSO TCPv4", "guest->host bench 60-byte",
                                                 "guest->host bench GSO TCPv4", "host->guest bench 60-byte",
                                                 "host->guest bench GSO TCPv4" };
static bool failed;

static void perr(struct phase *p, const char *f, ...)
{
    p->bad++;
    if (p->first_err[0])
        return;
    va_list ap;
    va_start(ap, f);
    vsnprintf(p->first_err, sizeof p->first_err, f, ap);
    va_end(ap);
    fprintf(stderr, "peer: %s\n", p->first_err);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Read one frame not sent by us; its length (after the vnet header), or -1 on timeout. */
static ssize_t rx(double timeout_s)
{
    double end = now() + timeout_s;
    for (;;) {
        double left = end - now();
        if (left <= 0)
            return -1;
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) {
            perror("peer: poll");
            exit(1);
        }
        if (r <= 0)
            continue;
        struct sockaddr_ll from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, rbuf, sizeof rbuf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            perror("peer: recvfrom");
            exit(1);
        }
        if (from.sll_pkttype == PACKET_OUTGOING || n < VH + 14)
            continue;
        return n - VH;
    }
}

static void tx(size_t len)
{
    if (send(fd, sbuf, VH + len, 0) != (ssize_t)(VH + len)) {
        fprintf(stderr, "peer: send of a %zu-byte frame: %s\n", len, strerror(errno));
        exit(1);
    }
}

static void put_ctl(uint8_t *c, uint8_t kind, uint8_t phase, uint32_t seq, uint32_t a, uint32_t b)
{
    memcpy(c, "SKVN", 4);
    c[4] = kind;
    c[5] = phase;
    put16(c + 6, 0);
    put32(c + 8, seq);
    put32(c + 12, a);
    put32(c + 16, b);
}

static void eth(uint8_t *f, uint16_t type)
{
    memcpy(f, guest_mac, 6);
    memcpy(f + 6, my_mac, 6);
    put16(f + 12, type);
}

static void send_ctl(uint8_t kind, uint8_t phase, uint32_t a, uint32_t b)
{
    memset(sbuf, 0, VH + 60);
    eth(sbuf + VH, ETH_TEST);
    put_ctl(sbuf + VH + 14, kind, phase, 0, a, b);
    tx(60);
}

/* ---- checking a guest frame ---- */
static void check_g2h(struct phase *p, uint8_t phase, const uint8_t *h, const uint8_t *f, uint32_t n, uint32_t c)
{
    const uint8_t *k = f + c;
    uint32_t seq = get32(k + 8), len = get32(k + 12), step = get32(k + 16);
    bool bench = phase >= 5, tcp = c == 54;
    if (seq != p->next) {
        if (seq > p->next)
            perr(p, "phase %u: frame %u missing (the next one was %u)", phase, p->next, seq);
        else
            perr(p, "phase %u: frame %u again or out of order (expected %u)", phase, seq, p->next);
        if (seq < p->next)
            return;
        p->bad += seq - p->next - 1;
        p->next = seq;
    }
    p->next++;
    if (len != n) {
        perr(p, "phase %u frame %u: %u bytes arrived, its length field says %u", phase, seq, n, len);
        return;
    }
    if (bench) {
        p->ok++;
        return;
    }
    if (tcp && (step < 1 || step > FRAME_MAX - GSO_FIRST)) {
        perr(p, "phase %u frame %u: GSO step %u", phase, seq, step);
        return;
    }
    uint32_t want = tcp ? gso_len(seq, step) : RAW_FIRST + seq;
    if (n != want) {
        perr(p, "phase %u frame %u: %u bytes, expected %u", phase, seq, n, want);
        return;
    }
    const struct virtio_net_hdr *vh = (const void *)h;
    if (memcmp(f, my_mac, 6)) {
        perr(p, "phase %u frame %u: not addressed to the tap's MAC", phase, seq);
        return;
    }
    if (!tcp) {
        if (vh->gso_type != VIRTIO_NET_HDR_GSO_NONE || (vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) {
            perr(p, "phase %u frame %u: vnet header flags 0x%02x gso_type %u", phase, seq, vh->flags, vh->gso_type);
            return;
        }
    } else {
        const uint8_t *ip = f + 14, *th = f + 34;
        if (!(vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) || vh->gso_type != VIRTIO_NET_HDR_GSO_TCPV4 ||
            vh->gso_size != MSS || vh->csum_start != 34 || vh->csum_offset != 16) {
            perr(p,
                 "phase %u frame %u: vnet header flags 0x%02x gso_type %u gso_size %u csum_start %u csum_offset %u "
                 "(expected NEEDS_CSUM TCPV4 %u 34 16)",
                 phase, seq, vh->flags, vh->gso_type, vh->gso_size, vh->csum_start, vh->csum_offset, MSS);
            return;
        }
        if (csum_fold(csum_add(0, ip, 20)) != 0xFFFF || get16(ip + 2) != n - 14 || get16(ip + 4) != (uint16_t)seq ||
            get32(ip + 12) != GUEST_IP || get32(ip + 16) != NOWHERE_IP || get16(th) != GUEST_PORT ||
            get16(th + 2) != PEER_PORT || get32(th + 4) != seq << 16 || th[13] != 0x18 ||
            get16(th + 16) != pseudo_sum(GUEST_IP, NOWHERE_IP, n - 34)) {
            perr(p, "phase %u frame %u: IPv4 or TCP header not as the guest builds it (TCP checksum field 0x%04x, "
                    "pseudo-header sum 0x%04x)",
                 phase, seq, get16(th + 16), pseudo_sum(GUEST_IP, NOWHERE_IP, n - 34));
            return;
        }
    }
    for (uint32_t i = c + 20; i < n; i++)
        if (f[i] != pattern(i, seq, n, DIR_G2H)) {
            perr(p, "phase %u frame %u (%u bytes): byte %u is 0x%02x, expected 0x%02x", phase, seq, n, i, f[i],
                 pattern(i, seq, n, DIR_G2H));
            return;
        }
    p->ok++;
    if (!p->min || n < p->min)
        p->min = n;
    if (n > p->max)
        p->max = n;
}

/* ---- sending to the guest ---- */
/* Frame seq of a phase, len bytes, into sbuf (after the vnet header). */
static void build_h2g(uint8_t phase, uint32_t seq, bool tcp, uint32_t len, uint32_t step)
{
    uint32_t c = 14;
    uint8_t *f = sbuf + VH;
    memset(sbuf, 0, VH);
    if (!tcp) {
        eth(f, ETH_TEST);
    } else {
        struct virtio_net_hdr *vh = (void *)sbuf;
        vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        vh->gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
        vh->hdr_len = 54;
        vh->gso_size = MSS;
        vh->csum_start = 34;
        vh->csum_offset = 16;
        eth(f, 0x0800);
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
        put32(ip + 16, GUEST_IP);
        put16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, 20)));
        put16(th, PEER_PORT);
        put16(th + 2, GUEST_PORT);
        put32(th + 4, seq << 16);
        put32(th + 8, 0);
        th[12] = 0x50;
        th[13] = 0x18;
        put16(th + 14, 0xFFFF);
        put16(th + 16, pseudo_sum(MY_IP, GUEST_IP, len - 34));
        put16(th + 18, 0);
        c = 54;
    }
    put_ctl(f + c, K_DATA, phase, seq, len, step);
    for (uint32_t i = c + 20; i < len; i++)
        f[i] = pattern(i, seq, len, DIR_H2G);
}

/* Wait for an ACK of the phase from the guest; its count, or -1 after 10 s. */
static int64_t wait_ack(uint8_t phase)
{
    double deadline = now() + 10;
    for (;;) {
        ssize_t n = rx(deadline - now());
        if (n < 0)
            return -1;
        const uint8_t *f = rbuf + VH;
        if (n >= 34 && get16(f + 12) == ETH_TEST && !memcmp(f + 14, "SKVN", 4) && f[18] == K_ACK && f[19] == phase)
            return get32(f + 26);
    }
}

/* Benchmark phases 7 and 8: count frames of len bytes, at most
 * BENCH_WINDOW unacknowledged, then END. */
static void send_bench(uint8_t phase, uint32_t count, uint32_t len)
{
    struct phase *p = &ph[phase];
    bool tcp = phase == 8;
    p->used = true;
    if (len < 60 || len > (tcp ? FRAME_MAX : RAW_LAST) || (tcp && len < 74)) {
        perr(p, "phase %u: START asks for %u-byte frames", phase, len);
        return;
    }
    build_h2g(phase, 0, tcp, len, 0);
    uint32_t acked = 0;
    for (uint32_t seq = 0; seq < count; seq++) {
        while (seq - acked >= BENCH_WINDOW) {
            int64_t a = wait_ack(phase);
            if (a < 0) {
                perr(p, "phase %u: no ACK from the guest within 10 s (%u sent, %u acknowledged)", phase, seq, acked);
                return;
            }
            if ((uint32_t)a > acked)
                acked = (uint32_t)a;
        }
        put32(sbuf + VH + (tcp ? 54 : 14) + 8, seq);
        tx(len);
        p->sent++;
    }
    send_ctl(K_END, phase, count, 0);
}

static void send_phase(uint8_t phase, uint32_t step)
{
    struct phase *p = &ph[phase];
    bool tcp = phase == 4;
    p->used = true;
    if (tcp && (step < 1 || step > FRAME_MAX - GSO_FIRST)) {
        perr(p, "phase %u: START with GSO step %u", phase, step);
        return;
    }
    uint32_t count = tcp ? gso_count(step) : RAW_COUNT;
    for (uint32_t seq = 0; seq < count;) {
        uint32_t end = seq + WINDOW < count ? seq + WINDOW : count;
        for (; seq < end; seq++) {
            uint32_t len = tcp ? gso_len(seq, step) : RAW_FIRST + seq;
            build_h2g(phase, seq, tcp, len, tcp ? step : 0);
            tx(len);
            p->sent++;
            if (!p->min || len < p->min)
                p->min = len;
            if (len > p->max)
                p->max = len;
        }
        /* wait for the guest's ACK(end) */
        int64_t a;
        while ((a = wait_ack(phase)) >= 0 && (uint32_t)a != end)
            ;
        if (a < 0) {
            perr(p, "phase %u: no ACK(%u) from the guest within 10 s", phase, end);
            return;
        }
        p->windows++;
    }
    send_ctl(K_END, phase, count, 0);
}

static void summary(void)
{
    for (int i = 1; i < NPHASES; i++) {
        struct phase *p = &ph[i];
        if (!p->used)
            continue;
        if (i == 2 || i == 4) {
            printf("peer: phase %d %s: sent %u frames, %u..%u bytes, %u windows acknowledged%s%s\n", i, phase_name[i],
                   p->sent, p->min, p->max, p->windows, p->bad ? "; FAIL: " : "", p->bad ? p->first_err : "");
        } else if (i == 5 || i == 6) {
            printf("peer: phase %d %s: received %u of %u frames%s\n", i, phase_name[i], p->ok, p->sent,
                   p->reported ? "" : " (no END)");
        } else if (i == 7 || i == 8) {
            printf("peer: phase %d %s: sent %u frames%s%s\n", i, phase_name[i], p->sent, p->bad ? "; FAIL: " : "",
                   p->bad ? p->first_err : "");
        } else {
            printf("peer: phase %d %s: received %u of %u frames, %u..%u bytes, %s%s\n", i, phase_name[i], p->ok,
                   p->sent, p->min, p->max, p->bad || !p->reported || p->ok != p->sent ? "FAIL: " : "every byte ok",
                   p->bad ? p->first_err : !p->reported ? "no END" : p->ok != p->sent ? "frames missing" : "");
        }
        if (p->bad || !p->reported || ((i == 1 || i == 3) && p->ok != p->sent))
            failed = true;
    }
}

#include <netinet/in.h>
static int ping_main(const char *addr, int count)
{
    struct sockaddr_in to = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, addr, &to.sin_addr) != 1) {
        fprintf(stderr, "peer: bad address %s\n", addr);
        return 2;
    }
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (s < 0) {
        perror("peer: socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)");
        return 1;
    }
    uint16_t id = (uint16_t)getpid();
    int replies = 0;
    for (int seq = 1; seq <= count; seq++) {
        uint8_t req[64], buf[1500];
        memset(req, 0, sizeof req);
        req[0] = 8;
        put16(req + 4, id);
        put16(req + 6, (uint16_t)seq);
        for (int i = 8; i < 64; i++)
            req[i] = (uint8_t)(i + seq);
        put16(req + 2, (uint16_t)~csum_fold(csum_add(0, req, sizeof req)));
        if (sendto(s, req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("peer: sendto");
            return 1;
        }
        double end = now() + 2;
        for (;;) {
            double left = end - now();
            struct pollfd p = { s, POLLIN, 0 };
            if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
                break;
            ssize_t n = recv(s, buf, sizeof buf, 0);
            if (n < 20)
                continue;
            size_t ihl = (size_t)(buf[0] & 15) * 4;
            const uint8_t *ic = buf + ihl;
            if ((size_t)n != ihl + sizeof req || ic[0] != 0 || get16(ic + 4) != id || get16(ic + 6) != seq)
                continue;
            if (!memcmp(ic + 8, req + 8, sizeof req - 8) && csum_fold(csum_add(0, ic, sizeof req)) == 0xFFFF)
                replies++;
            break;
        }
        if (seq < count)
            usleep(200000);
    }
    printf("peer: ping %s: %d echo requests, %d replies\n", addr, count, replies);
    return replies == count ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--ping"))
        return ping_main(argv[2], atoi(argv[3]));
    if (argc < 2) {
        fprintf(stderr, "usage: net-peer IFNAME [--idle SECONDS]\n");
        return 2;
    }
    const char *ifname = argv[1];
    if (argc >= 4 && !strcmp(argv[2], "--idle"))
        idle_s = atoi(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) {
        perror("peer: socket(AF_PACKET)");
        return 1;
    }
    int one = 1, big = 64 << 20;
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) {
        perror("peer: PACKET_VNET_HDR");
        return 1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
        fprintf(stderr, "peer: %s: %s\n", ifname, strerror(errno));
        return 1;
    }
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifr.ifr_ifindex };
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        perror("peer: bind");
        return 1;
    }
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
        perror("peer: SIOCGIFHWADDR");
        return 1;
    }
    memcpy(my_mac, ifr.ifr_hwaddr.sa_data, 6);
    printf("peer: ready on %s (vnet header on)\n", ifname);

    for (;;) {
        ssize_t sn = rx(idle_s);
        if (sn < 0) {
            summary();
            printf("peer: FAIL: no BYE from the guest (nothing for %d s)\n", idle_s);
            return 1;
        }
        uint32_t n = (uint32_t)sn;
        const uint8_t *h = rbuf, *f = rbuf + VH;
        uint32_t c = 0;
        if (n >= 34 && get16(f + 12) == ETH_TEST && !memcmp(f + 14, "SKVN", 4))
            c = 14;
        else if (n >= 74 && get16(f + 12) == 0x0800 && f[14] == 0x45 && f[23] == 6 && get32(f + 26) == GUEST_IP &&
                 get16(f + 34) == GUEST_PORT && !memcmp(f + 54, "SKVN", 4))
            c = 54;
        if (!c)
            continue;
        if (!have_guest_mac) {
            memcpy(guest_mac, f + 6, 6);
            have_guest_mac = true;
        }
        const uint8_t *k = f + c;
        uint8_t kind = k[4], phase = k[5];
        if (phase >= NPHASES)
            continue;
        struct phase *p = &ph[phase];
        switch (kind) {
        case K_DATA:
            p->used = true;
            check_g2h(p, phase, h, f, n, c);
            if ((phase == 1 || phase == 3) && p->next % WINDOW == 0)
                send_ctl(K_ACK, phase, p->next, 0);     /* the guest waits for these */
            break;
        case K_END:
            p->used = true;
            p->reported = true;
            p->sent = get32(k + 12);
            if (p->next < p->sent)
                perr(p, "phase %u: %u frames missing at the end", phase, p->sent - p->next);
            send_ctl(K_REPORT, phase, p->ok, p->sent - (p->ok < p->sent ? p->ok : p->sent));
            break;
        case K_START:
            if (phase == 2 || phase == 4) {
                send_phase(phase, get32(k + 16));
                p->reported = true;
            } else if (phase == 7 || phase == 8) {
                send_bench(phase, get32(k + 12), get32(k + 16));
                p->reported = true;
            }
            break;
        case K_BYE:
            summary();
            printf(failed ? "peer: FAIL\n" : "peer: PASS\n");
            return failed ? 1 : 0;
        default:
            break;
        }
    }
}
