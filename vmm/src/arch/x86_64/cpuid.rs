//! CPUID: the host's KVM-supported leaves, with per-vCPU topology and the hypervisor bit.

use kvm_bindings::CpuId;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: EBX[23:16] holds the logical processor count.
const EDX_HTT: u32 = 1 << 28;

/// Adjusts `cpuid` (as returned by `KVM_GET_SUPPORTED_CPUID`) for vCPU `id` of `count`.
pub fn filter(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24);
                entry.ebx |= u32::from(count) << 16;
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                }
            }
            // Extended topology: x2APIC id of this vCPU.
            0xb | 0x1f => entry.edx = u32::from(id),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn sets_apic_id_and_hypervisor_bit() {
        let mut cpuid = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: 1,
            ebx: 0xffff_ffff,
            ..Default::default()
        }])
        .unwrap();
        filter(&mut cpuid, 3, 4);
        let e = cpuid.as_slice()[0];
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!(e.ecx & ECX_HYPERVISOR, ECX_HYPERVISOR);
        assert_eq!(e.edx & EDX_HTT, EDX_HTT);
    }
}
