/* vcuda VMM test guest: freestanding 64-bit C (no SSE, no int3), entered by entry.S with the
 * Linux 64-bit boot protocol. The mode is the first word after " -- " on the kernel command
 * line (`vcuda run --kernel guest.elf -- MODE [ARG]`):
 *
 *   hello         print a greeting, exit 0
 *   exit N        exit with status N through the debug-exit port (0xf4)
 *   reset         i8042 reset (port 0x64 <- 0xfe)
 *   triple-fault  page fault with no IDT -> double fault -> triple fault
 *   spin          loop forever (for --timeout)
 *   calibrate N   run N million iterations of a 3-instruction loop, exit 0 (KVM speed check)
 *   memtest       write and read back RAM at 1 GiB, 2 GiB and just above 4 GiB (needs --mem > 4G),
 *                 right after entry, while the VMM may still be registering those memory slots
 *   smp           start vCPU 1 with INIT/SIPI/SIPI through the LAPIC (real-mode trampoline at
 *                 0x10000 that prints 'A' and sets a flag), needs --vcpus 2
 *   readline      read one line from COM1 (the host's stdin) and print "got: LINE"
 *   pthigh        build page tables for the first 16 MiB just above 4 GiB and switch CR3 to them
 *                 at once: page walks through RAM whose memory slot the VMM may still be
 *                 registering (needs --mem > 4G); print, exit 0
 *   info          print the e820 RAM total and the CPU count from the MP table, exit 0
 *   virtio        drive every virtio-mmio device from the command line (echo device 0xEC40):
 *                 probe, negotiate, set up a queue, round trip, interrupt, misuse, reset
 *   gpu           drive the virtio-gpu device (id 16, first device on the command line) like
 *                 Linux's DRM driver: GET_DISPLAY_INFO, RESOURCE_CREATE_2D (64x64 X8R8G8B8),
 *                 ATTACH_BACKING, SET_SCANOUT, draw a pattern, TRANSFER_TO_HOST_2D, RESOURCE_FLUSH
 *   cuda          drive the virtio-cuda device (0xC0DA, first device on the command line) with
 *                 real protocol frames: Hello, Init, MemAlloc, a fire-and-forget H2D copy through
 *                 a data window, D2H through a data window; check replies and data
 *
 * Results are printed as "ok NAME" / "FAIL NAME" lines; the exit status is the FAIL count. */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define barrier() __asm__ volatile("" ::: "memory")

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)a; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void mmio_write16(u64 a, u16 v) { *(volatile u16 *)a = v; }

void *memset(void *d, int c, u64 n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }
void *memcpy(void *d, const void *s, u64 n) { u8 *p = d; const u8 *q = s; while (n--) *p++ = *q++; return d; }
int memcmp(const void *a, const void *b, u64 n) {
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}

static void putc(char c) {
    while (!(inb(0x3f8 + 5) & 0x20)) {}
    outb(0x3f8, (u8)c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void putu(u64 v) {
    char b[24]; int i = 0;
    do { b[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) putc(b[--i]);
}
static void puthex(u64 v) {
    puts("0x");
    for (int s = 60; s >= 0; s -= 4) { u64 d = (v >> s) & 0xf; if (d || s == 0 || v >> s) putc("0123456789abcdef"[d]); }
}

static void exit_with(u8 status) { outb(0xf4, status); for (;;) __asm__ volatile("hlt"); }

static int failures;
static void check(int ok, const char *name) {
    puts(ok ? "ok " : "FAIL ");
    puts(name);
    putc('\n');
    if (!ok) failures++;
}

/* ---- command line ---- */
static const char *find(const char *s, const char *pat) {
    for (; *s; s++) {
        const char *a = s, *b = pat;
        while (*a && *b && *a == *b) { a++; b++; }
        if (!*b) return s;
    }
    return 0;
}
static int word_is(const char *s, const char *w) {
    while (*w && *s == *w) { s++; w++; }
    return !*w && (*s == 0 || *s == ' ');
}
static u64 parse_num(const char **sp) {
    const char *s = *sp; u64 v = 0; int base = 10;
    if (s[0] == '0' && s[1] == 'x') { base = 16; s += 2; }
    for (;; s++) {
        int d;
        if (*s >= '0' && *s <= '9') d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
        else break;
        v = v * (u64)base + (u64)d;
    }
    *sp = s;
    return v;
}

/* ---- interrupts: IDT, LAPIC, IOAPIC ---- */
struct idt_entry { u16 off0, sel, flags, off1; u32 off2, zero; } __attribute__((packed));
static struct idt_entry idt[256] __attribute__((aligned(16)));
static volatile u32 irq_count;
#define LAPIC 0xfee00000UL
#define IOAPIC 0xfec00000UL
#define IRQ_VECTOR 0x40

struct interrupt_frame;
__attribute__((interrupt)) static void virtio_isr(struct interrupt_frame *f) {
    (void)f;
    irq_count++;
    mmio_write32(LAPIC + 0xb0, 0); /* EOI */
}

/* Completions are polled with interrupts off, and the device may finish before the guest ever
 * halts: the interrupt is then still pending (or still on its way through irqfd -> IOAPIC ->
 * LAPIC) when a test checks irq_count. Open the interrupt window for a bounded while. */
static void await_pending_irq(void) {
    for (u32 i = 0; i < 10000000 && irq_count == 0; i++)
        __asm__ volatile("sti; pause; cli" ::: "memory");
}

static void setup_interrupts(u32 irq) {
    u64 h = (u64)virtio_isr;
    u16 cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    idt[IRQ_VECTOR] = (struct idt_entry){ (u16)h, cs, 0x8e00, (u16)(h >> 16), (u32)(h >> 32), 0 };
    struct { u16 limit; u64 base; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)idt };
    __asm__ volatile("lidt %0" ::"m"(idtr));
    outb(0x21, 0xff); outb(0xa1, 0xff);              /* mask the 8259s */
    mmio_write32(LAPIC + 0xf0, 0x1ff);               /* LAPIC software enable */
    mmio_write32(LAPIC + 0x80, 0);                   /* TPR: accept all */
    mmio_write32(IOAPIC, 0x10 + 2 * irq + 1);        /* redirection entry, high: dest 0 */
    mmio_write32(IOAPIC + 0x10, 0);
    mmio_write32(IOAPIC, 0x10 + 2 * irq);            /* low: vector, fixed, edge, unmasked */
    mmio_write32(IOAPIC + 0x10, IRQ_VECTOR);
}

/* ---- virtio-mmio (virtio 1.2 section 4.2.2) ---- */
enum {
    MAGIC = 0x000, VERSION = 0x004, DEVICE_ID = 0x008, DEV_FEAT = 0x010, DEV_FEAT_SEL = 0x014,
    DRV_FEAT = 0x020, DRV_FEAT_SEL = 0x024, QUEUE_SEL = 0x030, QUEUE_NUM_MAX = 0x034,
    QUEUE_NUM = 0x038, QUEUE_READY = 0x044, QUEUE_NOTIFY = 0x050, INT_STATUS = 0x060,
    INT_ACK = 0x064, STATUS = 0x070, DESC_LO = 0x080, DESC_HI = 0x084, AVAIL_LO = 0x090,
    AVAIL_HI = 0x094, USED_LO = 0x0a0, USED_HI = 0x0a4, CONFIG_GEN = 0x0fc, CONFIG = 0x100,
};
enum { S_ACK = 1, S_DRIVER = 2, S_DRIVER_OK = 4, S_FEATURES_OK = 8, S_NEEDS_RESET = 0x40 };
#define QSIZE 16
struct desc { u64 addr; u32 len; u16 flags, next; };
static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct { u16 flags, idx, ring[QSIZE], used_event; } avail __attribute__((aligned(2)));
static struct { u16 flags, idx; struct { u32 id, len; } ring[QSIZE]; u16 avail_event; } used
    __attribute__((aligned(4)));
static const char ping[] = "ping from the guest";
static char pong[64];

static void test_virtio(u64 base, u32 irq) {
    puts("virtio-mmio device at "); puthex(base); puts(" irq "); putu(irq); putc('\n');
    check(mmio_read32(base + MAGIC) == 0x74726976, "magic");
    check(mmio_read32(base + VERSION) == 2, "version 2");
    check(mmio_read32(base + DEVICE_ID) == 0xEC40, "device id echo");
    check(mmio_read16(base + MAGIC) == 0, "16-bit register read ignored");

    /* A driver that does not accept VERSION_1 must not get FEATURES_OK. */
    mmio_write32(base + STATUS, 0);
    mmio_write32(base + STATUS, S_ACK);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER);
    mmio_write32(base + DRV_FEAT_SEL, 1); mmio_write32(base + DRV_FEAT, 0);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    check(!(mmio_read32(base + STATUS) & S_FEATURES_OK), "FEATURES_OK refused without VERSION_1");

    /* Proper negotiation. */
    mmio_write32(base + STATUS, 0);
    check(mmio_read32(base + STATUS) == 0, "reset");
    mmio_write32(base + STATUS, S_ACK);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER);
    mmio_write32(base + DEV_FEAT_SEL, 1);
    u32 hi = mmio_read32(base + DEV_FEAT);
    check(hi & 1, "device offers VERSION_1");
    mmio_write32(base + DRV_FEAT_SEL, 1); mmio_write32(base + DRV_FEAT, 1);
    mmio_write32(base + DRV_FEAT_SEL, 0); mmio_write32(base + DRV_FEAT, 0);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    check(mmio_read32(base + STATUS) & S_FEATURES_OK, "FEATURES_OK accepted");

    /* Queue 0. */
    mmio_write32(base + QUEUE_SEL, 1);
    check(mmio_read32(base + QUEUE_NUM_MAX) == 0, "queue 1 does not exist");
    mmio_write32(base + QUEUE_SEL, 0);
    u32 max = mmio_read32(base + QUEUE_NUM_MAX);
    check(max >= QSIZE, "QueueNumMax");
    check(mmio_read32(base + QUEUE_READY) == 0, "queue not ready before setup");
    mmio_write32(base + QUEUE_NUM, QSIZE);
    mmio_write32(base + DESC_LO, (u32)(u64)descs); mmio_write32(base + DESC_HI, 0);
    mmio_write32(base + AVAIL_LO, (u32)(u64)&avail); mmio_write32(base + AVAIL_HI, 0);
    mmio_write32(base + USED_LO, (u32)(u64)&used); mmio_write32(base + USED_HI, 0);
    mmio_write32(base + QUEUE_READY, 1);
    check(mmio_read32(base + QUEUE_READY) == 1, "queue ready");
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    u32 st = mmio_read32(base + STATUS);
    check((st & S_DRIVER_OK) && !(st & S_NEEDS_RESET), "DRIVER_OK, device live");

    /* Config space: scratch write raises a config interrupt and bumps the generation. */
    u32 gen = mmio_read32(base + CONFIG_GEN);
    mmio_write32(base + CONFIG + 4, 0xc0da);
    check(mmio_read32(base + CONFIG + 4) == 0xc0da, "config scratch read back");
    check(mmio_read32(base + CONFIG_GEN) == gen + 1, "config generation bumped");
    check(mmio_read32(base + INT_STATUS) & 2, "config-change interrupt status");
    mmio_write32(base + INT_ACK, 2);

    /* Misuse after DRIVER_OK is ignored. */
    mmio_write32(base + QUEUE_NUM, 3);
    mmio_write32(base + QUEUE_NOTIFY, 7);
    mmio_write32(base + MAGIC, 0);
    check(mmio_read32(base + MAGIC) == 0x74726976, "write to read-only register ignored");

    /* Round trip: readable "ping", writable 64-byte buffer. */
    setup_interrupts(irq);
    /* The config-change interrupt above reached the IOAPIC while its pin was masked; KVM
     * delivers it once unmasked. Let it in now so it is not mistaken for the used-ring one. */
    __asm__ volatile("sti; nop; nop; cli" ::: "memory");
    irq_count = 0;
    descs[0] = (struct desc){ (u64)ping, sizeof(ping) - 1, 1 /* NEXT */, 1 };
    descs[1] = (struct desc){ (u64)pong, sizeof(pong), 2 /* WRITE */, 0 };
    avail.ring[0] = 0;
    barrier();
    avail.idx = 1;
    barrier();
    mmio_write32(base + QUEUE_NOTIFY, 0);
    /* Sleep until the device has used the chain and its interrupt arrived (the device writes
     * the used ring before it raises the interrupt, so both happen; either may come first). */
    while (*(volatile u16 *)&used.idx != 1 || irq_count == 0)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    check(irq_count >= 1, "used-ring interrupt (irqfd -> IOAPIC -> LAPIC)");
    check(mmio_read32(base + INT_STATUS) & 1, "InterruptStatus used-ring bit");
    mmio_write32(base + INT_ACK, 1);
    check((mmio_read32(base + INT_STATUS) & 1) == 0, "InterruptACK clears it");
    barrier();
    check(used.idx == 1 && used.ring[0].id == 0, "used ring entry");
    check(used.ring[0].len == sizeof(ping) - 1, "used length");
    check(memcmp(pong, ping, sizeof(ping) - 1) == 0, "echoed payload");
    puts("echo: "); puts(pong); putc('\n');
    check(mmio_read32(base + CONFIG) == 1, "config chains counter");

    /* Reset. */
    mmio_write32(base + STATUS, 0);
    check(mmio_read32(base + STATUS) == 0 && mmio_read32(base + QUEUE_READY) == 0,
          "device reset clears status and queues");
}

static void virtio_mode(const char *cmdline) {
    int devices = 0;
    for (const char *p = cmdline; (p = find(p, "virtio_mmio.device=")); ) {
        p += 19;
        const char *at = find(p, "@");
        if (!at) break;
        const char *s = at + 1;
        u64 base = parse_num(&s);
        u32 irq = 0;
        if (*s == ':') { s++; irq = (u32)parse_num(&s); }
        test_virtio(base, irq);
        devices++;
        p = s;
    }
    check(devices > 0, "found virtio_mmio.device= on the command line");
}


/* ---- virtio-cuda (docs/PROTOCOL.md §7): envelope + frame, response buffer, data windows ---- */
static u8 req_buf[256] __attribute__((aligned(8)));
static u8 resp_buf[256] __attribute__((aligned(8)));
static u8 win_in[64], win_out[64];
static u16 cuda_avail;
static u32 cuda_seq;

static void put16(u8 *p, u16 v) { p[0] = (u8)v; p[1] = (u8)(v >> 8); }
static void put32(u8 *p, u32 v) { put16(p, (u16)v); put16(p + 2, (u16)(v >> 16)); }
static void put64(u8 *p, u64 v) { put32(p, (u32)v); put32(p + 4, (u32)(v >> 32)); }
static u32 get32(const u8 *p) { return p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }
static u64 get64(const u8 *p) { return get32(p) | (u64)get32(p + 4) << 32; }

/* Writes envelope (session 1) + request header at req_buf; returns the body pointer. */
static u8 *cuda_frame(u16 opcode, u16 flags, u32 body_len) {
    put32(req_buf, 0x56435544); put32(req_buf + 4, 0); put64(req_buf + 8, 1);
    u8 *h = req_buf + 16;
    put16(h, 0xC0DA); put16(h + 2, 1); put16(h + 4, opcode); put16(h + 6, flags);
    put32(h + 8, ++cuda_seq); put32(h + 12, body_len);
    return h + 16;
}

/* Posts the chain [req (R)] [win_in (R)]? [resp (W)]? [win_out (W)]? and sleeps until used. */
static u32 cuda_submit(u32 req_len, u32 in_len, int sync, u32 out_len, u64 base) {
    u16 n = 0;
    descs[n] = (struct desc){ (u64)req_buf, req_len, 0, 0 }; n++;
    if (in_len) { descs[n] = (struct desc){ (u64)win_in, in_len, 0, 0 }; n++; }
    if (sync) { descs[n] = (struct desc){ (u64)resp_buf, sizeof(resp_buf), 2, 0 }; n++; }
    if (out_len) { descs[n] = (struct desc){ (u64)win_out, out_len, 2, 0 }; n++; }
    for (u16 i = 0; i + 1 < n; i++) { descs[i].flags |= 1; descs[i].next = i + 1; }
    avail.ring[cuda_avail % QSIZE] = 0;
    barrier();
    avail.idx = ++cuda_avail;
    barrier();
    mmio_write32(base + QUEUE_NOTIFY, 0);
    while (*(volatile u16 *)&used.idx != cuda_avail)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    mmio_write32(base + INT_ACK, 1);
    barrier();
    return used.ring[(cuda_avail - 1) % QSIZE].len;
}

/* Status of the reply in resp_buf (response header: magic, kind, seq, status, body_len). */
static u32 cuda_status(void) { return get32(resp_buf + 8); }

static void test_cuda(u64 base, u32 irq) {
    puts("virtio-cuda device at "); puthex(base); putc('\n');
    check(mmio_read32(base + MAGIC) == 0x74726976 && mmio_read32(base + VERSION) == 2, "modern virtio-mmio");
    check(mmio_read32(base + DEVICE_ID) == 0xC0DA, "device id virtio-cuda");
    mmio_write32(base + STATUS, 0);
    mmio_write32(base + STATUS, S_ACK);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER);
    mmio_write32(base + DRV_FEAT_SEL, 1); mmio_write32(base + DRV_FEAT, 1);
    mmio_write32(base + DRV_FEAT_SEL, 0); mmio_write32(base + DRV_FEAT, 0);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    check(mmio_read32(base + STATUS) & S_FEATURES_OK, "FEATURES_OK");
    check(mmio_read32(base + CONFIG) == 1, "config: protocol version 1");
    mmio_write32(base + QUEUE_SEL, 0);
    mmio_write32(base + QUEUE_NUM, QSIZE);
    mmio_write32(base + DESC_LO, (u32)(u64)descs); mmio_write32(base + DESC_HI, 0);
    mmio_write32(base + AVAIL_LO, (u32)(u64)&avail); mmio_write32(base + AVAIL_HI, 0);
    mmio_write32(base + USED_LO, (u32)(u64)&used); mmio_write32(base + USED_HI, 0);
    mmio_write32(base + QUEUE_READY, 1);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    setup_interrupts(irq);

    /* Hello { version 1, pid 0, client "guest" } */
    u8 *b = cuda_frame(0x0001, 0, 4 + 4 + 4 + 5);
    put32(b, 1); put32(b + 4, 0); put32(b + 8, 5); memcpy(b + 12, "guest", 5);
    u32 len = cuda_submit(16 + 16 + 17, 0, 1, 0, base);
    check(len >= 16 && cuda_status() == 0, "Hello");
    /* Init { flags 0 } -> { driver_version, device_count } */
    b = cuda_frame(0x0101, 0, 4);
    put32(b, 0);
    cuda_submit(16 + 16 + 4, 0, 1, 0, base);
    check(cuda_status() == 0 && get32(resp_buf + 16) >= 13000 && get32(resp_buf + 20) >= 1, "Init");
    /* CtxCreate { ctx 0x1000, device 0, flags 0 }, fire-and-forget */
    b = cuda_frame(0x0201, 1, 16);
    put64(b, 0x1000); put32(b + 8, 0); put32(b + 12, 0);
    check(cuda_submit(16 + 16 + 16, 0, 0, 0, base) == 0, "CtxCreate (async, zero-length completion)");
    /* MemAlloc { ctx, size 64 } -> { dptr } */
    b = cuda_frame(0x0301, 0, 16);
    put64(b, 0x1000); put64(b + 8, 64);
    cuda_submit(16 + 16 + 16, 0, 1, 0, base);
    u64 dptr = get64(resp_buf + 16);
    check(cuda_status() == 0 && dptr != 0, "MemAlloc");
    /* MemcpyHtoD { ctx, stream 0, dst, src: Shm { 0, 64 } }: the bytes are win_in, in place */
    for (int i = 0; i < 64; i++) win_in[i] = (u8)(i * 3 + 1);
    b = cuda_frame(0x0304, 1, 8 + 8 + 8 + 1 + 16);
    put64(b, 0x1000); put64(b + 8, 0); put64(b + 16, dptr); b[24] = 1; put64(b + 25, 0); put64(b + 33, 64);
    cuda_submit(16 + 16 + 41, 64, 0, 0, base);
    /* MemcpyDtoH { ctx, stream 0, src, len 64, dst: Shm { 0, 64 } }: lands in win_out */
    b = cuda_frame(0x0305, 0, 8 + 8 + 8 + 8 + 1 + 16);
    put64(b, 0x1000); put64(b + 8, 0); put64(b + 16, dptr); put64(b + 24, 64);
    b[32] = 1; put64(b + 33, 0); put64(b + 41, 64);
    len = cuda_submit(16 + 16 + 49, 0, 1, 64, base);
    check(cuda_status() == 0, "MemcpyDtoH");
    check(memcmp(win_in, win_out, 64) == 0, "data round trip through guest pages");
    check(len >= 64, "used length counts the data window");
    await_pending_irq();
    check(irq_count > 0, "completion interrupts");
    /* A forged context is refused, and the device keeps serving. */
    b = cuda_frame(0x0301, 0, 16);
    put64(b, 0xdead); put64(b + 8, 64);
    cuda_submit(16 + 16 + 16, 0, 1, 0, base);
    check(cuda_status() == 201, "forged context -> CUDA_ERROR_INVALID_CONTEXT");
}

static void cuda_mode(const char *cmdline) {
    const char *p = find(cmdline, "virtio_mmio.device=");
    const char *at = p ? find(p, "@") : 0;
    if (!at) { check(0, "found virtio_mmio.device= on the command line"); return; }
    const char *s = at + 1;
    u64 base = parse_num(&s);
    u32 irq = 0;
    if (*s == ':') { s++; irq = (u32)parse_num(&s); }
    test_cuda(base, irq);
}


/* ---- virtio-gpu (virtio 1.2 section 5.7): controlq 0 + cursorq 1, the Linux KMS sequence ---- */
#define FB_W 64
#define FB_H 64
static u32 framebuffer[FB_W * FB_H] __attribute__((aligned(4096)));
static u8 gcmd[128] __attribute__((aligned(8)));
static u8 gresp[512] __attribute__((aligned(8)));
static struct desc cdescs[QSIZE] __attribute__((aligned(16)));
static struct { u16 flags, idx, ring[QSIZE], used_event; } cavail __attribute__((aligned(2)));
static struct { u16 flags, idx; struct { u32 id, len; } ring[QSIZE]; u16 avail_event; } cused
    __attribute__((aligned(4)));
static u16 gpu_avail;

/* ctrl header: type, flags, fence_id, ctx_id, ring_idx + padding (24 bytes). */
static u8 *gpu_cmd(u32 type) {
    memset(gcmd, 0, sizeof(gcmd));
    put32(gcmd, type);
    return gcmd + 24;
}

/* Sends gcmd[0..len] (+ an optional second readable buffer) on the control queue; returns the
 * response type. */
static u32 gpu_submit(u64 base, u32 len, const void *extra, u32 extra_len, u32 resp_len) {
    u16 n = 0;
    descs[n] = (struct desc){ (u64)gcmd, len, 1, 1 }; n++;
    if (extra_len) { descs[n] = (struct desc){ (u64)extra, extra_len, 1, (u16)(n + 1) }; n++; }
    descs[n] = (struct desc){ (u64)gresp, resp_len, 2, 0 }; n++;
    avail.ring[gpu_avail % QSIZE] = 0;
    barrier();
    avail.idx = ++gpu_avail;
    barrier();
    mmio_write32(base + QUEUE_NOTIFY, 0);
    while (*(volatile u16 *)&used.idx != gpu_avail)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    mmio_write32(base + INT_ACK, 1);
    barrier();
    return get32(gresp);
}

static void put_rect(u8 *p, u32 x, u32 y, u32 w, u32 h) { put32(p, x); put32(p + 4, y); put32(p + 8, w); put32(p + 12, h); }

static void test_gpu(u64 base, u32 irq) {
    puts("virtio-gpu device at "); puthex(base); putc('\n');
    check(mmio_read32(base + DEVICE_ID) == 16, "device id virtio-gpu");
    mmio_write32(base + STATUS, 0);
    mmio_write32(base + STATUS, S_ACK);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER);
    mmio_write32(base + DRV_FEAT_SEL, 1); mmio_write32(base + DRV_FEAT, 1);
    mmio_write32(base + DRV_FEAT_SEL, 0); mmio_write32(base + DRV_FEAT, 0);
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    check(mmio_read32(base + STATUS) & S_FEATURES_OK, "FEATURES_OK");
    check(mmio_read32(base + CONFIG + 8) >= 1, "config: num_scanouts");
    struct { u64 d, a, u; } rings[2] = { { (u64)descs, (u64)&avail, (u64)&used },
                                         { (u64)cdescs, (u64)&cavail, (u64)&cused } };
    for (u32 q = 0; q < 2; q++) {
        mmio_write32(base + QUEUE_SEL, q);
        mmio_write32(base + QUEUE_NUM, QSIZE);
        mmio_write32(base + DESC_LO, (u32)rings[q].d); mmio_write32(base + DESC_HI, 0);
        mmio_write32(base + AVAIL_LO, (u32)rings[q].a); mmio_write32(base + AVAIL_HI, 0);
        mmio_write32(base + USED_LO, (u32)rings[q].u); mmio_write32(base + USED_HI, 0);
        mmio_write32(base + QUEUE_READY, 1);
    }
    mmio_write32(base + STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    check(!(mmio_read32(base + STATUS) & S_NEEDS_RESET), "device live");
    setup_interrupts(irq);

    gpu_cmd(0x0100);
    check(gpu_submit(base, 24, 0, 0, 408) == 0x1101, "GET_DISPLAY_INFO");
    check(get32(gresp + 24 + 8) > 0 && get32(gresp + 24 + 16) == 1, "scanout 0 enabled with a size");
    u8 *b = gpu_cmd(0x0101);                       /* RESOURCE_CREATE_2D id 1, X8R8G8B8 */
    put32(b, 1); put32(b + 4, 4); put32(b + 8, FB_W); put32(b + 12, FB_H);
    check(gpu_submit(base, 40, 0, 0, 24) == 0x1100, "RESOURCE_CREATE_2D");
    static u8 entry[16] __attribute__((aligned(8)));
    put64(entry, (u64)framebuffer); put32(entry + 8, sizeof(framebuffer)); put32(entry + 12, 0);
    b = gpu_cmd(0x0106);                           /* ATTACH_BACKING: 1 entry */
    put32(b, 1); put32(b + 4, 1);
    check(gpu_submit(base, 32, entry, 16, 24) == 0x1100, "RESOURCE_ATTACH_BACKING");
    b = gpu_cmd(0x0103);                           /* SET_SCANOUT 0 -> resource 1 */
    put_rect(b, 0, 0, FB_W, FB_H); put32(b + 16, 0); put32(b + 20, 1);
    check(gpu_submit(base, 48, 0, 0, 24) == 0x1100, "SET_SCANOUT");
    /* The pattern: bytes in memory X, R, G, B with R = 4x, G = 4y, B = x ^ y. */
    for (u32 y = 0; y < FB_H; y++)
        for (u32 x = 0; x < FB_W; x++)
            framebuffer[y * FB_W + x] = 0xff | (4 * x) << 8 | (4 * y) << 16 | ((x ^ y) & 0xff) << 24;
    b = gpu_cmd(0x0105);                           /* TRANSFER_TO_HOST_2D */
    put_rect(b, 0, 0, FB_W, FB_H); put64(b + 16, 0); put32(b + 24, 1);
    check(gpu_submit(base, 56, 0, 0, 24) == 0x1100, "TRANSFER_TO_HOST_2D");
    b = gpu_cmd(0x0104);                           /* RESOURCE_FLUSH */
    put_rect(b, 0, 0, FB_W, FB_H); put32(b + 16, 1);
    check(gpu_submit(base, 48, 0, 0, 24) == 0x1100, "RESOURCE_FLUSH");
    b = gpu_cmd(0x0101);                           /* a resource id that exists already */
    put32(b, 1); put32(b + 4, 4); put32(b + 8, 8); put32(b + 12, 8);
    check(gpu_submit(base, 40, 0, 0, 24) >= 0x1200, "duplicate resource id -> error response");
    await_pending_irq();
    check(irq_count > 0, "completion interrupts");
}

static void gpu_mode(const char *cmdline) {
    const char *p = find(cmdline, "virtio_mmio.device=");
    const char *at = p ? find(p, "@") : 0;
    if (!at) { check(0, "found virtio_mmio.device= on the command line"); return; }
    const char *s = at + 1;
    u64 base = parse_num(&s);
    u32 irq = 0;
    if (*s == ':') { s++; irq = (u32)parse_num(&s); }
    test_gpu(base, irq);
}

/* ---- memtest ---- */
static u64 pd_high[512] __attribute__((aligned(4096)));

/* Map 4..5 GiB: PDPT (at 0xa000, set up by the VMM) entry 4 -> our page directory. */
static void map_above_4g(void) {
    for (u64 i = 0; i < 512; i++) pd_high[i] = ((4UL << 30) + (i << 21)) | 0x83;
    ((volatile u64 *)0xa000)[4] = (u64)pd_high | 3;
    u64 cr3; __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) :: "memory");
}

static void memtest_mode(void) {
    map_above_4g();
    static const u64 addrs[] = { (1UL << 30) + 0x1000, 2UL << 30, (4UL << 30) + 0x2000 };
    for (int i = 0; i < 3; i++) {
        volatile u64 *p = (volatile u64 *)addrs[i];
        u64 pattern = 0x5a5a000000000000UL | addrs[i];
        *p = pattern;
        p[1] = ~pattern;
        puts("memtest "); puthex(addrs[i]); putc('\n');
        check(*p == pattern && p[1] == ~pattern, "RAM reads back what was written");
    }
}

/* ---- smp: wake the application processor ---- */
/* Real mode, CS = 0x1000: print 'A' on COM1, set the byte at 0x10100, halt. */
static const u8 ap_trampoline[] = {
    0x8c, 0xc8,             /* mov %cs, %ax */
    0x8e, 0xd8,             /* mov %ax, %ds */
    0xba, 0xf8, 0x03,       /* mov $0x3f8, %dx */
    0xb0, 'A',              /* mov $'A', %al */
    0xee,                   /* out %al, %dx */
    0xb0, '\n',             /* mov $'\n', %al */
    0xee,                   /* out %al, %dx */
    0xc6, 0x06, 0x00, 0x01, 0x01, /* movb $1, 0x100 */
    0xfa,                   /* cli */
    0xf4,                   /* hlt */
    0xeb, 0xfd,             /* jmp .-3 (back to hlt) */
};

static void icr(u32 high, u32 low) {
    mmio_write32(LAPIC + 0x310, high);
    mmio_write32(LAPIC + 0x300, low);
    for (int i = 0; i < 1000 && (mmio_read32(LAPIC + 0x300) & (1 << 12)); i++) {}
}

static void smp_mode(void) {
    volatile u8 *flag = (volatile u8 *)0x10100;
    memcpy((void *)0x10000, ap_trampoline, sizeof(ap_trampoline));
    *flag = 0;
    mmio_write32(LAPIC + 0xf0, 0x1ff);          /* LAPIC software enable */
    icr(1u << 24, 0x4500);                      /* INIT to APIC id 1 */
    icr(1u << 24, 0x4600 | 0x10);               /* SIPI, vector 0x10 -> 0x10000 */
    icr(1u << 24, 0x4600 | 0x10);
    for (u64 i = 0; i < 5000000 && !*flag; i++) barrier();
    check(*flag == 1, "application processor ran the trampoline");
}

/* ---- pthigh ---- */
static void pthigh_mode(void) {
    map_above_4g();
    u64 *pml4 = (u64 *)((4UL << 30) + 0x10000), *pdpt = pml4 + 512, *pd = pml4 + 1024;
    pml4[0] = (u64)pdpt | 3;
    pdpt[0] = (u64)pd | 3;
    for (u64 i = 0; i < 8; i++) pd[i] = (i << 21) | 0x83;     /* 0..16 MiB, 2 MiB pages */
    __asm__ volatile("mov %0, %%cr3" ::"r"(pml4) : "memory");
    puts("running on page tables above 4 GiB\n");
}

/* ---- info: e820 from boot_params, CPUs from the MP table ---- */
static void info_mode(const u8 *bp) {
    u8 n = bp[0x1e8];
    u64 total = 0;
    for (u8 i = 0; i < n; i++) {
        const u8 *e = bp + 0x2d0 + 20 * i;
        if (*(const u32 *)(e + 16) == 1) total += *(const u64 *)(e + 8);
    }
    puts("ram_mib="); putu((total + (1 << 19)) >> 20); putc('\n');
    int cpus = 0;
    for (const u8 *p = (const u8 *)0x9fc00; p < (const u8 *)0xa0000; p += 16) {
        if (memcmp(p, "_MP_", 4) == 0) {
            const u8 *t = (const u8 *)(u64)*(const u32 *)(p + 4);
            u16 count = *(const u16 *)(t + 34);
            const u8 *e = t + 44;
            for (u16 i = 0; i < count; i++) {
                if (e[0] == 0) { cpus++; e += 20; } else e += 8;
            }
            break;
        }
    }
    puts("cpus="); putu((u64)cpus); putc('\n');
}

void guest_main(const u8 *boot_params) {
    const char *cmdline = (const char *)(u64)*(const u32 *)(boot_params + 0x228);
    const char *args = find(cmdline, " -- ");
    const char *mode = args ? args + 4 : "";
    if (word_is(mode, "hello")) {
        puts("hello from the vcuda test guest\n");
        exit_with(0);
    } else if (word_is(mode, "exit")) {
        const char *s = mode + 5;
        exit_with((u8)parse_num(&s));
    } else if (word_is(mode, "reset")) {
        puts("resetting through the i8042\n");
        outb(0x64, 0xfe);
    } else if (word_is(mode, "triple-fault")) {
        puts("triple fault coming\n");
        struct { u16 limit; u64 base; } __attribute__((packed)) none = { 0, 0 };
        __asm__ volatile("lidt %0" ::"m"(none));
        (void)*(volatile u64 *)0x4000000000UL; /* not mapped: #PF -> #DF -> shutdown */
    } else if (word_is(mode, "spin")) {
        puts("spinning\n");
        for (;;) barrier();
    } else if (word_is(mode, "calibrate")) {
        const char *s = mode + 10;
        u64 n = parse_num(&s) * 1000000;
        for (u64 i = 0; i < n; i++) barrier();
        exit_with(0);
    } else if (word_is(mode, "memtest")) {
        memtest_mode();
        exit_with((u8)failures);
    } else if (word_is(mode, "readline")) {
        char line[80];
        u32 n = 0;
        for (;;) {
            while (!(inb(0x3f8 + 5) & 1)) {}        /* LSR: data ready */
            char c = (char)inb(0x3f8);
            if (c == '\n' || n == sizeof(line) - 1) break;
            line[n++] = c;
        }
        line[n] = 0;
        puts("got: "); puts(line); putc('\n');
        exit_with(0);
    } else if (word_is(mode, "pthigh")) {
        pthigh_mode();
        exit_with(0);
    } else if (word_is(mode, "smp")) {
        smp_mode();
        exit_with((u8)failures);
    } else if (word_is(mode, "info")) {
        info_mode(boot_params);
        exit_with(0);
    } else if (word_is(mode, "gpu")) {
        gpu_mode(cmdline);
        puts(failures ? "gpu: FAILED\n" : "gpu: all checks passed\n");
        exit_with((u8)failures);
    } else if (word_is(mode, "cuda")) {
        cuda_mode(cmdline);
        puts(failures ? "cuda: FAILED\n" : "cuda: all checks passed\n");
        exit_with((u8)failures);
    } else if (word_is(mode, "virtio")) {
        virtio_mode(cmdline);
        puts(failures ? "virtio: FAILED\n" : "virtio: all checks passed\n");
        exit_with((u8)failures);
    }
    puts("unknown mode: "); puts(mode); putc('\n');
    exit_with(99);
}
