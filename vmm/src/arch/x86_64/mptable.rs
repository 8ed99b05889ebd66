//! The Intel MultiProcessor table (MP spec 1.4) in the EBDA: how a kernel without ACPI finds the
//! vCPUs, the IOAPIC and the ISA interrupt routing. Built byte by byte (little-endian) from the
//! spec's layouts, then written with vm-memory's checked accessors.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{EBDA_START, IOAPIC_ADDR, LAPIC_ADDR, VIRTIO_IRQ_LAST};

/// Most vCPUs whose entries fit the 1 KiB EBDA.
pub const MAX_CPUS: u8 = 32;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 signature, FPU + APIC feature flags: what Linux's MP parser expects.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;

/// Why the table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit the MP table (at most {MAX_CPUS})")]
    TooManyCpus(u8),
    #[error("cannot write the MP table to guest memory: {0}")]
    Memory(vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Interrupt entry (type 3: I/O interrupt, 4: local interrupt).
fn intr_entry(kind: u8, irq_type: u8, bus_irq: u8, dst_apic: u8, dst_int: u8) -> [u8; 8] {
    [kind, irq_type, 0, 0, 0, bus_irq, dst_apic, dst_int]
}

/// Builds the floating pointer + configuration table for `num_cpus` vCPUs at `addr`.
pub fn build(num_cpus: u8, addr: u64) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus + 1;
    let mut entries = Vec::new();
    let mut count = 0u16;
    for cpu in 0..num_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    for irq in 0..=VIRTIO_IRQ_LAST as u8 {
        entries.extend_from_slice(&intr_entry(3, 0, irq, ioapic_id, irq));
        count += 1;
    }
    // LINT0: ExtINT (type 3), LINT1: NMI (type 1), to all LAPICs.
    entries.extend_from_slice(&intr_entry(4, 3, 0, 0xff, 0));
    entries.extend_from_slice(&intr_entry(4, 1, 0, 0xff, 1));
    count += 2;

    let table_addr = addr + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"VCUDA   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 4 + 2]); // OEM table pointer and size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 1 (x16), rev 1.4, checksum, features
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `num_cpus` vCPUs at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build(num_cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(MptableError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_zero_and_table_fits_the_ebda() {
        let t = build(MAX_CPUS, EBDA_START).unwrap();
        assert!(t.len() <= 0x400);
        assert_eq!(t[0..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&t[16..20], b"PCMP");
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(16 + len, t.len());
        assert_eq!(t[16..].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn rejects_zero_or_too_many_cpus() {
        assert!(build(0, EBDA_START).is_err());
        assert!(build(MAX_CPUS + 1, EBDA_START).is_err());
    }
}
