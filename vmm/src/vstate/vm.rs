//! The KVM VM: guest RAM (lazily mapped, MAP_NORESERVE, never prefaulted or pinned), the
//! in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// Guest RAM registered with KVM before the guest starts; the rest is registered by
/// [`Vm::register_deferred_memory`] while the guest boots.
///
/// Creating a memory slot costs the kernel time proportional to its size (per-page metadata
/// for the shadow MMU: ~0.2 ms per GiB on the PVM host), which would make boot time grow with
/// guest RAM. Until a deferred slot is registered, a guest access to it exits to the VMM as
/// MMIO and the vCPU completes it against the same host mapping (`VcpuRunner`), so the guest
/// sees ordinary RAM throughout.
pub const EAGER_MEMORY: u64 = 1 << 30;

/// A KVM VM with its guest memory.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    mem_size: u64,
    deferred: Vec<kvm_userspace_memory_region>,
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
        let mut slots = Vec::new();
        for region in mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::Kvm {
                    what: "map guest memory (no host address)",
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let (gpa, len) = (region.start_addr().raw_value(), region.len());
            // The first EAGER_MEMORY bytes are registered now, the rest later (see below).
            let eager = if gpa < EAGER_MEMORY {
                len.min(EAGER_MEMORY - gpa)
            } else {
                0
            };
            for (offset, size) in [(0, eager), (eager, len - eager)] {
                if size > 0 {
                    slots.push(kvm_userspace_memory_region {
                        slot: slots.len() as u32,
                        flags: 0,
                        guest_phys_addr: gpa + offset,
                        memory_size: size,
                        userspace_addr: host as u64 + offset,
                    });
                }
            }
        }
        let deferred = slots.split_off(1);
        for slot in slots {
            // SAFETY: the slot covers part of a live mapping owned by `mem`, which the returned
            // `Vm` keeps alive together with the VM fd.
            unsafe { fd.set_user_memory_region(slot) }
                .map_err(kvm_err("add a guest memory slot"))?;
        }
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
            fd: Arc::new(fd),
            mem,
            mem_size,
            deferred,
        })
    }

    /// Registers the deferred memory slots on a background thread (call right before the
    /// vCPUs start); join the handle before tearing the VM down.
    pub fn register_deferred_memory(&mut self) -> JoinHandle<Result<(), VmError>> {
        let slots = std::mem::take(&mut self.deferred);
        let fd = self.fd.clone();
        let mem = self.mem.clone();
        std::thread::spawn(move || {
            for slot in slots {
                // SAFETY: the slot covers part of a live mapping owned by `mem` (a clone held
                // by this thread, and by the VM's owner as long as the VM fd lives).
                unsafe { fd.set_user_memory_region(slot) }.map_err(|source| VmError::Kvm {
                    what: "add a deferred guest memory slot",
                    source,
                })?;
            }
            drop(mem);
            Ok(())
        })
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
