//! The transport's register file driven by a Rust test driver: the spec's happy path, and guest
//! misuse (unit tests and proptest sequences of arbitrary accesses).

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::echo::{EchoDevice, ECHO_DEVICE_ID, ECHO_QUEUE_SIZE};
use crate::devices::virtio::{INT_CONFIG_CHANGE, INT_USED_RING};

const MEM_SIZE: usize = 1 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DATA: u64 = 0x8000;
const QSIZE: u32 = 16;

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
}

impl Driver {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(
            Box::new(EchoDevice::new()),
            mem.clone(),
            Interrupt::new(irq),
        )
        .unwrap();
        Self { t, mem }
    }

    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    fn negotiate(&mut self, features_hi: u32) -> u32 {
        self.negotiate_words(0, features_hi)
    }

    fn negotiate_words(&mut self, features_lo: u32, features_hi: u32) -> u32 {
        use status::*;
        self.w(reg::STATUS, 0);
        self.w(reg::STATUS, ACKNOWLEDGE);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, features_hi);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features_lo);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.r(reg::STATUS)
    }

    fn setup_queue(&mut self, desc: u64) {
        self.w(reg::QUEUE_SEL, 0);
        self.w(reg::QUEUE_NUM, QSIZE);
        self.w(reg::QUEUE_DESC_LOW, desc as u32);
        self.w(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.w(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        self.w(reg::QUEUE_DEVICE_LOW, USED as u32);
        self.w(reg::QUEUE_READY, 1);
    }

    fn go_live(&mut self) {
        use status::*;
        assert_eq!(self.negotiate(1), ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.setup_queue(DESC);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(self.t.is_activated());
    }

    /// Posts a chain: `out` readable, then a writable buffer of `in_len` bytes.
    fn post(&mut self, idx: u16, out: &[u8], in_len: u32) {
        let m = &self.mem;
        m.write_slice(out, GuestAddress(DATA)).unwrap();
        let desc = |addr: u64, len: u32, flags: u16, next: u16| {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            d
        };
        m.write_slice(&desc(DATA, out.len() as u32, 1, 1), GuestAddress(DESC))
            .unwrap();
        m.write_slice(&desc(DATA + 0x1000, in_len, 2, 0), GuestAddress(DESC + 16))
            .unwrap();
        m.write_obj(
            0u16,
            GuestAddress(AVAIL + 4 + 2 * u64::from(idx % QSIZE as u16)),
        )
        .unwrap();
        m.write_obj(idx + 1, GuestAddress(AVAIL + 2)).unwrap();
    }
}

#[test]
fn identification_registers() {
    let mut d = Driver::new();
    assert_eq!(d.r(reg::MAGIC_VALUE), MAGIC_VALUE);
    assert_eq!(d.r(reg::VERSION), 2);
    assert_eq!(d.r(reg::DEVICE_ID), ECHO_DEVICE_ID);
    assert_eq!(d.r(reg::VENDOR_ID), VENDOR_ID);
    d.w(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.r(reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    d.w(reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(d.r(reg::DEVICE_FEATURES), 0);
    assert_eq!(
        d.r(reg::SHM_LEN_LOW),
        u32::MAX,
        "no shared memory region: length -1"
    );
}

#[test]
fn round_trip_through_the_echo_device() {
    let mut d = Driver::new();
    d.go_live();
    d.post(0, b"hello virtio", 64);
    d.w(reg::QUEUE_NOTIFY, 0);
    let used_idx: u16 = d.mem.read_obj(GuestAddress(USED + 2)).unwrap();
    let used_len: u32 = d.mem.read_obj(GuestAddress(USED + 8)).unwrap();
    assert_eq!((used_idx, used_len), (1, 12));
    let mut echoed = [0u8; 12];
    d.mem
        .read_slice(&mut echoed, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(&echoed, b"hello virtio");
    assert_eq!(d.r(reg::INTERRUPT_STATUS), INT_USED_RING);
    assert_eq!(d.t.interrupt().eventfd().read().unwrap(), 1);
    d.w(reg::INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    assert_eq!(d.r(reg::CONFIG), 1, "echo config: chains completed");
    // Truncation: a 4-byte writable buffer gets 4 bytes.
    d.post(1, b"truncated", 4);
    d.t.notify(0);
    let used_len: u32 = d.mem.read_obj(GuestAddress(USED + 4 + 8 + 4)).unwrap();
    assert_eq!(used_len, 4);
}

#[test]
fn event_idx_suppresses_interrupts_when_negotiated() {
    use status::*;
    let mut d = Driver::new();
    let event_idx = 1 << crate::devices::virtio::features::VIRTIO_RING_F_EVENT_IDX;
    assert_ne!(d.negotiate_words(event_idx, 1) & FEATURES_OK, 0);
    d.setup_queue(DESC);
    d.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    // used_event (after the avail ring) = 5: the driver wants an interrupt only after the
    // sixth used buffer.
    d.mem
        .write_obj(5u16, GuestAddress(AVAIL + 4 + 2 * u64::from(QSIZE)))
        .unwrap();
    d.post(0, b"quiet", 8);
    d.t.notify(0);
    let used_idx: u16 = d.mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used_idx, 1, "the chain was completed");
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0, "but not signalled");
    assert!(d.t.interrupt().eventfd().read().is_err(), "irqfd untouched");
}

#[test]
fn config_space_and_generation() {
    let mut d = Driver::new();
    d.go_live();
    let gen = d.r(reg::CONFIG_GENERATION);
    d.w(reg::CONFIG + 4, 0xdead_beef);
    assert_eq!(d.r(reg::CONFIG + 4), 0xdead_beef);
    assert_eq!(d.r(reg::CONFIG_GENERATION), gen + 1);
    assert_eq!(
        d.r(reg::INTERRUPT_STATUS) & INT_CONFIG_CHANGE,
        INT_CONFIG_CHANGE
    );
    // Byte access at natural alignment is fine, past the end reads zero, unaligned is ignored.
    let mut b = [0u8; 1];
    d.t.read(reg::CONFIG + 4, &mut b);
    assert_eq!(b[0], 0xef);
    let mut w = [0xffu8; 4];
    d.t.read(reg::CONFIG + 0x40, &mut w);
    assert_eq!(w, [0; 4]);
    let mut w = [0xffu8; 4];
    d.t.read(reg::CONFIG + 2, &mut w);
    assert_eq!(w, [0; 4]);
}

#[test]
fn features_ok_requires_version_1_and_offered_bits() {
    let mut d = Driver::new();
    assert_eq!(d.negotiate(0) & status::FEATURES_OK, 0, "no VERSION_1");
    assert_eq!(
        d.negotiate(1 | 2) & status::FEATURES_OK,
        0,
        "bit 33 not offered"
    );
    assert_ne!(d.negotiate(1) & status::FEATURES_OK, 0);
}

#[test]
fn out_of_order_status_is_ignored() {
    use status::*;
    let mut d = Driver::new();
    d.w(reg::STATUS, DRIVER_OK);
    assert_eq!(d.r(reg::STATUS), 0);
    d.w(reg::STATUS, ACKNOWLEDGE);
    d.w(reg::STATUS, ACKNOWLEDGE | FEATURES_OK);
    assert_eq!(d.r(reg::STATUS), ACKNOWLEDGE);
    d.w(reg::STATUS, FAILED);
    assert_eq!(d.r(reg::STATUS), ACKNOWLEDGE | FAILED);
    d.w(reg::STATUS, 0);
    assert_eq!(d.r(reg::STATUS), 0);
}

#[test]
fn bad_queue_sizes_are_ignored() {
    let mut d = Driver::new();
    d.negotiate(1);
    d.w(reg::QUEUE_SEL, 0);
    assert_eq!(d.r(reg::QUEUE_NUM_MAX), u32::from(ECHO_QUEUE_SIZE));
    for bad in [0, 3, 100, u32::from(ECHO_QUEUE_SIZE) * 2, u32::MAX] {
        d.w(reg::QUEUE_NUM, bad);
    }
    // The queue still has its default (maximum) size, so it is still valid at DRIVER_OK.
    d.setup_queue(DESC);
    d.w(reg::QUEUE_NUM, 0);
    d.w(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(d.t.is_activated());
    // A queue that does not exist reports max 0 and ignores setup.
    d.w(reg::QUEUE_SEL, 5);
    assert_eq!(d.r(reg::QUEUE_NUM_MAX), 0);
    assert_eq!(d.r(reg::QUEUE_READY), 0);
}

#[test]
fn queue_registers_only_between_features_ok_and_driver_ok() {
    let mut d = Driver::new();
    d.w(reg::QUEUE_READY, 1);
    assert_eq!(d.r(reg::QUEUE_READY), 0, "before FEATURES_OK");
    d.go_live();
    d.w(reg::QUEUE_READY, 0);
    assert_eq!(d.r(reg::QUEUE_READY), 1, "after DRIVER_OK");
}

#[test]
fn invalid_rings_set_device_needs_reset() {
    use status::*;
    let mut d = Driver::new();
    d.negotiate(1);
    d.setup_queue(MEM_SIZE as u64 * 4); // descriptor table outside guest memory
    d.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(!d.t.is_activated());
    assert_ne!(d.r(reg::STATUS) & DEVICE_NEEDS_RESET, 0);
    assert_ne!(d.r(reg::INTERRUPT_STATUS) & INT_CONFIG_CHANGE, 0);
    d.w(reg::STATUS, 0);
    assert_eq!(d.r(reg::STATUS), 0);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
}

#[test]
fn wrong_widths_and_read_only_writes_are_ignored() {
    let mut d = Driver::new();
    let mut b2 = [0xffu8; 2];
    d.t.read(reg::MAGIC_VALUE, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b4 = [0xffu8; 4];
    d.t.read(reg::MAGIC_VALUE + 1, &mut b4);
    assert_eq!(b4, [0; 4]);
    d.t.write(reg::STATUS, &[1]);
    d.t.write(reg::STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(d.r(reg::STATUS), 0);
    d.w(reg::MAGIC_VALUE, 0);
    d.w(reg::DEVICE_ID, 0);
    d.w(reg::INTERRUPT_STATUS, 3);
    assert_eq!(d.r(reg::MAGIC_VALUE), MAGIC_VALUE);
    assert_eq!(d.r(reg::DEVICE_ID), ECHO_DEVICE_ID);
    // Write-only registers read as 0.
    d.w(reg::QUEUE_SEL, 0);
    assert_eq!(d.r(reg::QUEUE_NOTIFY), 0);
    assert_eq!(d.r(reg::DRIVER_FEATURES), 0);
}

#[test]
fn notify_of_unknown_queue_or_before_driver_ok_is_ignored() {
    let mut d = Driver::new();
    d.post(0, b"early", 8);
    d.w(reg::QUEUE_NOTIFY, 0);
    d.go_live();
    d.w(reg::QUEUE_NOTIFY, 1);
    d.w(reg::QUEUE_NOTIFY, u32::MAX);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    assert_eq!(d.r(reg::CONFIG), 0, "nothing processed");
}

#[test]
fn reset_returns_to_initial_state() {
    let mut d = Driver::new();
    d.go_live();
    d.post(0, b"x", 8);
    d.t.notify(0);
    d.w(reg::STATUS, 0);
    assert!(!d.t.is_activated());
    assert_eq!(d.r(reg::STATUS), 0);
    assert_eq!(d.r(reg::QUEUE_READY), 0);
    assert_eq!(d.r(reg::INTERRUPT_STATUS), 0);
    assert_eq!(d.r(reg::CONFIG), 0, "device state reset");
    // And it can be brought up again.
    d.go_live();
}

#[derive(Debug, Clone)]
enum Access {
    Read { off: u64, len: usize },
    Write { off: u64, bytes: Vec<u8> },
    Notify(u32),
}

fn access() -> impl Strategy<Value = Access> {
    let off = prop_oneof![0u64..0x120, (0u64..0x48).prop_map(|r| r * 4)];
    let len = prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 0usize..16];
    prop_oneof![
        (off.clone(), len).prop_map(|(off, len)| Access::Read { off, len }),
        (off, prop::collection::vec(any::<u8>(), 0..9))
            .prop_map(|(off, bytes)| Access::Write { off, bytes }),
        (0u32..4).prop_map(Access::Notify),
    ]
}

proptest! {
    /// Any sequence of guest accesses (with arbitrary guest memory behind the rings) leaves the
    /// transport consistent: it never panics, identification registers never change, the
    /// status is always a valid prefix of the init sequence, and a live device implies DRIVER_OK.
    #[test]
    fn arbitrary_guest_accesses_keep_the_transport_consistent(
        seq in prop::collection::vec(access(), 1..120),
        garbage in prop::collection::vec(any::<u8>(), 0x4000),
        live_first in any::<bool>(),
    ) {
        let mut d = Driver::new();
        d.mem.write_slice(&garbage, GuestAddress(0)).unwrap();
        if live_first {
            d.go_live();
        }
        for a in seq {
            match a {
                Access::Read { off, len } => {
                    let mut b = vec![0u8; len];
                    d.t.read(off, &mut b);
                }
                Access::Write { off, bytes } => d.t.write(off, &bytes),
                Access::Notify(q) => d.t.notify(q),
            }
            prop_assert_eq!(d.r(reg::MAGIC_VALUE), MAGIC_VALUE);
            prop_assert_eq!(d.r(reg::VERSION), 2);
            prop_assert_eq!(d.r(reg::DEVICE_ID), ECHO_DEVICE_ID);
            use status::*;
            let s = d.r(reg::STATUS) & !(FAILED | DEVICE_NEEDS_RESET);
            prop_assert!(
                [0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, ACKNOWLEDGE | DRIVER | FEATURES_OK,
                 ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK].contains(&s),
                "status {:#x}", s
            );
            if d.t.is_activated() {
                prop_assert_ne!(d.r(reg::STATUS) & DRIVER_OK, 0);
            }
        }
    }
}
