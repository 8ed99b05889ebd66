//! The KVM VM: guest RAM (lazily mapped, MAP_NORESERVE, never prefaulted or pinned), the
//! in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT.

use std::path::Path;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::ram_regions;

/// Where KVM keeps the real-mode TSS (3 pages, inside the MMIO gap).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Why the VM could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, enable \
             virtualization in the firmware, or run on a host or VM with nested virtualization)"
    )]
    NoKvm,
    #[error(
        "permission denied opening /dev/kvm: add your user to the `kvm` group \
             (sudo usermod -aG kvm $USER, then log in again) or run as root"
    )]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(kvm_ioctls::Error),
    #[error("unsupported KVM API version {0} (expected 12)")]
    KvmApiVersion(i32),
    #[error("KVM refused to {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(
        "cannot map {size} bytes of guest RAM: {source} (try a smaller --mem, or check \
             vm.overcommit_memory and ulimit -v)"
    )]
    Memory {
        size: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// A KVM VM with its guest memory.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    mem: GuestMemoryMmap,
    mem_size: u64,
    memory_slot_time: Duration,
}

/// Opens /dev/kvm with errors that say what to do.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::KvmOpen(e),
    })
}

/// Why this host's KVM cannot run a Linux kernel, if we know it cannot: a PVM-based KVM emulates
/// every guest instruction and fails on instructions Linux needs (int3, SSE, xrstor, ...).
pub fn linux_boot_blocker() -> Option<String> {
    Path::new("/sys/module/kvm_pvm").exists().then(|| {
        "this host's KVM is PVM-based (/sys/module/kvm_pvm): it emulates every guest \
         instruction and cannot execute int3/SSE/cmpxchg16b/xrstor in long mode, so a Linux \
         kernel cannot boot here; use a host with hardware KVM (VT-x/AMD-V)"
            .to_owned()
    })
}

impl Vm {
    /// Creates the VM with `mem_size` bytes of RAM (the caller validated the size).
    pub fn new(mem_size: u64) -> Result<Self, VmError> {
        let kvm = open_kvm()?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::KvmApiVersion(version));
        }
        let kvm_err = |what| move |source| VmError::Kvm { what, source };
        let fd = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        let ranges: Vec<(GuestAddress, usize)> = ram_regions(mem_size)
            .into_iter()
            .map(|(start, len)| (GuestAddress(start), len as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|source| VmError::Memory {
            size: mem_size,
            source,
        })?;
        // Creating a memory slot costs the kernel time proportional to its size when KVM keeps
        // per-page shadow-MMU metadata (the PVM host: ~0.2 ms per GiB); timed for the report.
        // Registering lazily instead is not safe: the guest's page walks through memory
        // without a slot fault (measured: the `pthigh` test guest triple-faults).
        let slots_start = Instant::now();
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::Kvm {
                    what: "map guest memory (no host address)",
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` points at a live mapping of `memory_size` bytes owned by `mem`,
            // which the returned `Vm` keeps alive as long as the VM fd (dropped together).
            unsafe { fd.set_user_memory_region(region) }
                .map_err(kvm_err("add a guest memory slot"))?;
        }
        let memory_slot_time = slots_start.elapsed();
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("set the TSS address"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("create the PIT"))?;
        Ok(Self {
            kvm,
            fd,
            mem,
            mem_size,
            memory_slot_time,
        })
    }

    /// Time KVM took to create the guest's memory slots.
    pub fn memory_slot_time(&self) -> Duration {
        self.memory_slot_time
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }
}
