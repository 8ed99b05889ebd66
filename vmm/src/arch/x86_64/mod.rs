//! x86_64: the guest-physical memory map and the vCPU state a 64-bit (or PVH) kernel expects.

pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
