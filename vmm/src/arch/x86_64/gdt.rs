//! Flat GDT entries and their `kvm_segment` twins (KVM loads segment caches from the latter).

use kvm_bindings::kvm_segment;

/// Encodes a GDT descriptor from access `flags` (the 0xFAAF pattern: granularity/size nibble,
/// then the access byte), `base` and 20-bit `limit`.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// 64-bit code: present, ring 0, execute/read, long mode (L), 4 KiB granularity.
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// 32-bit code (PVH entry): present, ring 0, execute/read, D=1, 4 KiB granularity.
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// Flat data: present, ring 0, read/write, 4 KiB granularity.
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// A busy 32/64-bit TSS (KVM requires a valid TR in protected mode).
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The segment register state KVM needs for GDT slot `index` holding `entry`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: if bit(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_is_long_mode() {
        let s = kvm_segment_from_gdt(CODE64, 1);
        assert_eq!(
            (s.selector, s.type_, s.l, s.db, s.present),
            (8, 0xb, 1, 0, 1)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
    }

    #[test]
    fn data_segment_is_flat_32bit() {
        let s = kvm_segment_from_gdt(DATA, 2);
        assert_eq!((s.selector, s.type_, s.db, s.s, s.g), (16, 3, 1, 1, 1));
    }
}
