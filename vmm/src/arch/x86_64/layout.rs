//! The guest-physical memory map. Every fixed address the VMM uses lives here.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_7000  zero page (boot_params, Linux)
//! 0x0000_0520  IDT (empty)              0x0000_8ff0  initial stack pointer
//! 0x0000_6000  hvm_start_info (PVH)     0x0000_9000  PML4, then PDPT, then 4 page directories
//! 0x0000_6100  PVH memory map           0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA: MP table           0x0010_0000  kernel (bzImage / ELF segments)
//! 0xc000_0000  MMIO gap: boot timer, then one 4 KiB window per virtio-mmio device
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC (in-kernel, inside the gap)
//! 0x1_0000_0000  RAM above the gap, when the guest has more than 3 GiB
//! ```

/// GDT: null, code64, data, TSS (Linux) or null, code32, data, TSS (PVH).
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH memory map (array of `hvm_memmap_table_entry`).
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, then [`PD_COUNT`] page directories of 2 MiB pages.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Page directories: each maps 1 GiB, so the low 4 GiB (RAM and MMIO gap) are identity-mapped.
pub const PD_COUNT: u64 = 4;
/// Kernel command line (NUL-terminated).
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line we pass (Linux x86 accepts 2048 by default; newer kernels more).
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the extended BIOS data area; the MP table lives here and RAM below it is usable.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the kernel is loaded and where "high" memory starts.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// The MMIO gap below 4 GiB: no RAM here.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Firecracker-style boot timer register (see `devices::boot_timer`).
pub const BOOT_TIMER_ADDR: u64 = MMIO_GAP_START;
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// First virtio-mmio window; device `i` lives at `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START + 0x1000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC and LAPIC (emulated in the kernel).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Legacy IRQ (GSI) of the serial port COM1.
pub const SERIAL_IRQ: u32 = 4;
/// GSIs handed to virtio-mmio devices, in order.
pub const VIRTIO_IRQ_FIRST: u32 = 5;
pub const VIRTIO_IRQ_LAST: u32 = 23;

/// Smallest and largest guest RAM we accept.
pub const MIN_MEM: u64 = 8 << 20;
pub const MAX_MEM: u64 = 1 << 40;

// The fixed boot structures must not overlap (checked at compile time).
const _: () = {
    assert!(PD_ADDR + PD_COUNT * 0x1000 <= CMDLINE_ADDR);
    assert!(PVH_MEMMAP_ADDR + 16 * 24 <= ZERO_PAGE_ADDR);
    assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
};

/// Guest RAM regions for `mem` bytes: below the MMIO gap, and the rest above 4 GiB.
pub fn ram_regions(mem: u64) -> Vec<(u64, u64)> {
    if mem <= MMIO_GAP_START {
        vec![(0, mem)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, mem - MMIO_GAP_START)]
    }
}

/// Usable RAM as the firmware-style map a kernel expects (e820 / PVH memmap): `(start, len)`.
/// The EBDA and the legacy VGA/BIOS hole below 1 MiB are left out.
pub fn usable_ram(mem: u64) -> Vec<(u64, u64)> {
    let mut out = vec![(0, EBDA_START)];
    for (start, len) in ram_regions(mem) {
        let end = start + len;
        let start = start.max(HIGH_MEMORY_START);
        if end > start {
            out.push((start, end - start));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_around_the_gap() {
        assert_eq!(ram_regions(1 << 30), vec![(0, 1 << 30)]);
        assert_eq!(
            ram_regions(8 << 30),
            vec![(0, MMIO_GAP_START), (1 << 32, (8 << 30) - MMIO_GAP_START)]
        );
        assert_eq!(
            usable_ram(64 << 20),
            vec![
                (0, EBDA_START),
                (HIGH_MEMORY_START, (64 << 20) - HIGH_MEMORY_START)
            ]
        );
    }
}
