/*
 * doe_requester: drive a PCIe function's DOE mailbox from inside a guest, through the kernel's sysfs
 * config file (/sys/bus/pci/devices/BDF/config), the way a user-space requester would.
 *
 *   doe_requester find DEVDIR           print the DOE capability offset (or exit 2 when there is none)
 *   doe_requester discover DEVDIR       walk DOE Discovery through the registers and print each entry
 *   doe_requester bridge DEVDIR TTY     relay objects: read [u32 LE length][object] from TTY, exchange it
 *                                       through the mailbox, write [u32 LE length][response] back
 *                                       (length 0 = no response); a length of 0xFFFFFFFF ends the loop
 *
 * Written for tiosim's opt-in QEMU test (tests/interop/test_qemu_guest.py): the host side runs the whole
 * attest procedure and every DOE object crosses the guest kernel's config-space path, register by register.
 * Register offsets and bits: PCIe DOE extended capability (ID 0x2E): Control +0x08 (Abort bit 0, Go bit 31),
 * Status +0x0C (Busy bit 0, Error bit 2, Data Object Ready bit 31), Write Mailbox +0x10, Read Mailbox +0x14.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define DOE_CAP_ID 0x2E
#define DOE_CONTROL 0x08
#define DOE_STATUS 0x0C
#define DOE_WRITE 0x10
#define DOE_READ 0x14
#define CTRL_ABORT 0x1u
#define CTRL_GO 0x80000000u
#define STATUS_BUSY 0x1u
#define STATUS_ERROR 0x4u
#define STATUS_READY 0x80000000u
#define MAX_OBJECT_DW 4096 /* 16 KiB: far above what the SPDM flow needs */
#define POLLS 2000         /* 2000 x 1 ms */

static int cfg = -1;
static unsigned doe;

static uint32_t rd(unsigned off)
{
    uint32_t v = 0xFFFFFFFFu;
    if (pread(cfg, &v, 4, off) != 4) {
        fprintf(stderr, "doe_requester: config read at 0x%x failed: %s\n", off, strerror(errno));
        exit(1);
    }
    return v;
}

static void wr(unsigned off, uint32_t v)
{
    if (pwrite(cfg, &v, 4, off) != 4) {
        fprintf(stderr, "doe_requester: config write at 0x%x failed: %s\n", off, strerror(errno));
        exit(1);
    }
}

static void pause_ms(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

static unsigned find_doe(void)
{
    unsigned off = 0x100;
    for (int hops = 0; off && hops < 64; hops++) {
        uint32_t h = rd(off);
        if (h == 0 || h == 0xFFFFFFFFu)
            return 0;
        if ((h & 0xFFFF) == DOE_CAP_ID)
            return off;
        off = (h >> 20) & 0xFFC;
    }
    return 0;
}

static void open_dev(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config", dir);
    cfg = open(path, O_RDWR);
    if (cfg < 0) {
        fprintf(stderr, "doe_requester: cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    doe = find_doe();
    if (!doe) {
        fprintf(stderr, "doe_requester: %s has no DOE capability\n", dir);
        exit(2);
    }
}

/* One object out, the response in; returns its length in DW (0: none, after an abort). */
static unsigned exchange(const uint32_t *req, unsigned req_dw, uint32_t *rsp)
{
    uint32_t st = rd(doe + DOE_STATUS);
    if (st & (STATUS_BUSY | STATUS_ERROR | STATUS_READY)) {
        wr(doe + DOE_CONTROL, CTRL_ABORT);
        for (int i = 0; i < POLLS && (rd(doe + DOE_STATUS) & STATUS_BUSY); i++)
            pause_ms();
    }
    for (unsigned i = 0; i < req_dw; i++)
        wr(doe + DOE_WRITE, req[i]);
    wr(doe + DOE_CONTROL, CTRL_GO);
    for (int i = 0; i < POLLS; i++) {
        st = rd(doe + DOE_STATUS);
        if (st & STATUS_ERROR) {
            wr(doe + DOE_CONTROL, CTRL_ABORT);
            return 0;
        }
        if (st & STATUS_READY)
            break;
        if (!(st & STATUS_BUSY) && i > 10)
            return 0;
        pause_ms();
    }
    if (!(st & STATUS_READY)) {
        wr(doe + DOE_CONTROL, CTRL_ABORT);
        return 0;
    }
    unsigned total = 2, got = 0;
    while (got < total) {
        if (!(rd(doe + DOE_STATUS) & STATUS_READY)) {
            wr(doe + DOE_CONTROL, CTRL_ABORT);
            return 0;
        }
        rsp[got++] = rd(doe + DOE_READ);
        wr(doe + DOE_READ, 0);
        if (got == 2) {
            total = rsp[1] & 0x3FFFF;
            if (total < 2 || total > MAX_OBJECT_DW) {
                wr(doe + DOE_CONTROL, CTRL_ABORT);
                return 0;
            }
        }
    }
    return total;
}

static int discover(void)
{
    static uint32_t rsp[MAX_OBJECT_DW];
    unsigned index = 0;
    printf("DOE capability at 0x%x\n", doe);
    for (int n = 0; n < 256; n++) {
        uint32_t req[3] = {0x00000001u, 3, index}; /* VID 0x0001, type 0 (discovery), 3 DW */
        unsigned len = exchange(req, 3, rsp);
        if (len < 3) {
            printf("discovery index %u: no response\n", index);
            return 1;
        }
        unsigned vid = rsp[2] & 0xFFFF, type = (rsp[2] >> 16) & 0xFF, next = (rsp[2] >> 24) & 0xFF;
        printf("discovery index %u: vid 0x%04x type %u next %u\n", index, vid, type, next);
        if (!next)
            return 0;
        index = next;
    }
    return 1;
}

static int read_all(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

static int bridge(const char *tty)
{
    static uint32_t req[MAX_OBJECT_DW], rsp[MAX_OBJECT_DW];
    int fd = open(tty, O_RDWR | O_NOCTTY);
    if (fd < 0) {
        fprintf(stderr, "doe_requester: cannot open %s: %s\n", tty, strerror(errno));
        return 1;
    }
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        cfsetispeed(&t, B115200);
        cfsetospeed(&t, B115200);
        tcsetattr(fd, TCSANOW, &t);
    }
    const uint32_t ready = 0x59444552u; /* "REDY": the host starts sending after this */
    write_all(fd, &ready, 4);
    unsigned count = 0;
    for (;;) {
        uint32_t len;
        if (read_all(fd, &len, 4))
            return 1;
        if (len == 0xFFFFFFFFu)
            break;
        if (len % 4 || len / 4 > MAX_OBJECT_DW || len < 8) {
            fprintf(stderr, "doe_requester: bad object length %u from the host\n", len);
            return 1;
        }
        if (read_all(fd, req, len))
            return 1;
        unsigned dw = exchange(req, len / 4, rsp);
        uint32_t out = dw * 4;
        if (write_all(fd, &out, 4) || (out && write_all(fd, rsp, out)))
            return 1;
        count++;
    }
    printf("bridge: %u exchanges through the DOE registers\n", count);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: doe_requester find|discover DEVDIR | bridge DEVDIR TTY\n");
        return 64;
    }
    open_dev(argv[2]);
    if (!strcmp(argv[1], "find")) {
        printf("0x%x\n", doe);
        return 0;
    }
    if (!strcmp(argv[1], "discover"))
        return discover();
    if (!strcmp(argv[1], "bridge") && argc > 3)
        return bridge(argv[3]);
    fprintf(stderr, "doe_requester: unknown mode %s\n", argv[1]);
    return 64;
}
