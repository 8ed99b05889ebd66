//! Initial vCPU registers, segment/control registers, FPU and the identity page tables.
//!
//! Two entry conventions, both as Firecracker / Cloud Hypervisor set them up:
//! - [`EntryMode::Linux64`]: 64-bit long mode with paging on (low 4 GiB identity-mapped with
//!   2 MiB pages), `rsi` = zero page — the 64-bit Linux boot protocol, also used for plain ELF.
//! - [`EntryMode::Pvh`]: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{self, kvm_segment_from_gdt};
use super::layout::*;

/// Why the register state could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the {what} to guest memory: {source}")]
    Memory {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error("KVM rejected the vCPU {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit entry, `rsi` points at the zero page.
    Linux64,
    /// PVH 32-bit entry, `ebx` points at `hvm_start_info`.
    Pvh,
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Writes GDT, IDT and (for 64-bit entry) the identity page tables into guest memory.
/// Shared by all vCPUs; call once per VM.
pub fn write_boot_tables(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<(), RegsError> {
    let mem_err = |what| move |source| RegsError::Memory { what, source };
    let code = match mode {
        EntryMode::Linux64 => gdt::CODE64,
        EntryMode::Pvh => gdt::CODE32,
    };
    for (i, entry) in [0, code, gdt::DATA, gdt::TSS].iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(mem_err("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(mem_err("IDT"))?;
    if mode == EntryMode::Linux64 {
        // PML4[0] -> PDPT; PDPT[i] -> PD i; each PD maps 1 GiB with 2 MiB pages (PS bit).
        mem.write_obj(PDPT_ADDR | 0x03, GuestAddress(PML4_ADDR))
            .map_err(mem_err("PML4"))?;
        for pd in 0..PD_COUNT {
            let pd_addr = PD_ADDR + pd * 0x1000;
            mem.write_obj(pd_addr | 0x03, GuestAddress(PDPT_ADDR + pd * 8))
                .map_err(mem_err("PDPT"))?;
            for i in 0..512u64 {
                let phys = (pd << 30) | (i << 21);
                mem.write_obj(phys | 0x83, GuestAddress(pd_addr + i * 8))
                    .map_err(mem_err("page directory"))?;
            }
        }
    }
    Ok(())
}

/// Sets segment and control registers for `mode`.
pub fn setup_sregs(vcpu: &VcpuFd, mode: EntryMode) -> Result<(), RegsError> {
    let kvm_err = |what| move |source| RegsError::Kvm { what, source };
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm_err("sregs (get)"))?;
    let code = match mode {
        EntryMode::Linux64 => gdt::CODE64,
        EntryMode::Pvh => gdt::CODE32,
    };
    let code_seg = kvm_segment_from_gdt(code, 1);
    let data_seg = kvm_segment_from_gdt(gdt::DATA, 2);
    let tss_seg = kvm_segment_from_gdt(gdt::TSS, 3);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 8 - 1;
    sregs.cs = code_seg;
    sregs.ds = data_seg;
    sregs.es = data_seg;
    sregs.fs = data_seg;
    sregs.gs = data_seg;
    sregs.ss = data_seg;
    sregs.tr = tss_seg;
    match mode {
        EntryMode::Linux64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm_err("sregs"))
}

/// Sets general registers: entry point, boot-info pointer, stack.
pub fn setup_regs(vcpu: &VcpuFd, mode: EntryMode, entry: u64) -> Result<(), RegsError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 => regs.rsi = ZERO_PAGE_ADDR,
        EntryMode::Pvh => regs.rbx = PVH_INFO_ADDR,
    }
    vcpu.set_regs(&regs).map_err(|source| RegsError::Kvm {
        what: "registers",
        source,
    })
}

/// Sets the x87/SSE control words to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::Kvm {
        what: "FPU state",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_identity_map_the_low_4gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem, EntryMode::Linux64).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 24)).unwrap();
        assert_eq!(pdpt3, (PD_ADDR + 0x3000) | 3);
        // The LAPIC page (0xfee0_0000) is mapped by PD 3, entry 0x1f7.
        let lapic: u64 = mem
            .read_obj(GuestAddress(PD_ADDR + 0x3000 + 0x1f7 * 8))
            .unwrap();
        assert_eq!(lapic, 0xfee0_0000 | 0x83);
    }
}
