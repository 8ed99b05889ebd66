//! vCPUs: creation and register setup, and the run loop that dispatches exits to the buses.

use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use tracing::{debug, warn};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::arch::x86_64::{cpuid, lapic, msr, regs};
use crate::boot::BootEntry;
use crate::devices::Bus;
use crate::exit::{ExitSignal, VmExit};
use crate::vstate::vm::Vm;

/// Why a vCPU could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM refused to {what} for vCPU {id}: {source}")]
    Kvm {
        id: u8,
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: {source}")]
    Regs { id: u8, source: regs::RegsError },
    #[error("cannot build the MSR list: {0:?}")]
    Msrs(vmm_sys_util::fam::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, so the signal interrupts KVM_RUN.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(kick_signal(), noop_handler));
    result.map_err(VcpuError::Signal)
}

/// The host CPUID KVM supports, fetched once per VM and filtered per vCPU.
pub fn supported_cpuid(vm: &Vm) -> Result<CpuId, VcpuError> {
    vm.kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VcpuError::Kvm {
            id: 0,
            what: "report supported CPUID",
            source,
        })
}

/// Creates vCPU `id` of `count` with CPUID, MSRs, LAPIC LINTs, FPU and the boot registers.
/// Only vCPU 0 runs at first; the others wait for INIT/SIPI from the guest (in-kernel LAPIC).
pub fn create(
    vm: &Vm,
    cpuid_template: &CpuId,
    id: u8,
    count: u8,
    entry: BootEntry,
) -> Result<VcpuFd, VcpuError> {
    let kvm_err = |what| move |source| VcpuError::Kvm { id, what, source };
    let regs_err = |source| VcpuError::Regs { id, source };
    let fd = vm
        .fd()
        .create_vcpu(u64::from(id))
        .map_err(kvm_err("create the vCPU"))?;
    let mut cpuid = cpuid_template.clone();
    cpuid::filter(&mut cpuid, id, count);
    fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
    let msrs = msr::boot_msrs().map_err(VcpuError::Msrs)?;
    let set = fd.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
    if set != msrs.as_slice().len() {
        debug!(
            "vCPU {id}: KVM accepted {set} of {} boot MSRs",
            msrs.as_slice().len()
        );
    }
    lapic::set_lint(&fd).map_err(kvm_err("configure LAPIC LINT0/1"))?;
    regs::setup_fpu(&fd).map_err(regs_err)?;
    regs::setup_regs(&fd, entry.mode, entry.addr).map_err(regs_err)?;
    regs::setup_sregs(&fd, entry.mode).map_err(regs_err)?;
    Ok(fd)
}

/// A vCPU thread's state.
pub struct VcpuRunner {
    pub id: u8,
    pub fd: VcpuFd,
    pub io_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub exit: ExitSignal,
    /// Set by vCPU 0 just before its first KVM_RUN: VMM start → guest entry.
    pub entered: Arc<OnceLock<Duration>>,
    pub start: Instant,
}

impl VcpuRunner {
    /// Runs until the VM exits (reported through `exit`) or the thread is kicked after one.
    pub fn run(mut self) {
        while !self.exit.is_set() {
            if self.id == 0 && self.entered.get().is_none() {
                let _ = self.entered.set(self.start.elapsed());
            }
            if let Some(exit) = self.run_once() {
                self.exit.report(exit);
            }
        }
        if self.exit.get() == Some(VmExit::Timeout) {
            match self.fd.get_regs() {
                Ok(r) => warn!(
                    "vCPU {}: at rip {:#x} when the timeout expired",
                    self.id, r.rip
                ),
                Err(e) => debug!("vCPU {}: cannot read registers: {e}", self.id),
            }
        }
    }

    fn run_once(&mut self) -> Option<VmExit> {
        let id = self.id;
        let err = |reason: String| Some(VmExit::VcpuError { cpu: id, reason });
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !self.io_bus.read(u64::from(port), data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.io_bus.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio_bus.read(addr, data) {
                    debug!("vCPU {id}: read of unmapped MMIO {addr:#x}");
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.mmio_bus.write(addr, data) {
                    debug!("vCPU {id}: write to unmapped MMIO {addr:#x}");
                }
                None
            }
            Ok(VcpuExit::Shutdown) => Some(VmExit::TripleFault),
            Ok(VcpuExit::Hlt) => err("halted with interrupts disabled (HLT exit)".into()),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => Some(VmExit::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmExit::PowerOff),
                other => err(format!("KVM system event {other}")),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => err(format!(
                "KVM could not enter the guest (hardware reason {reason:#x}, host cpu {cpu})"
            )),
            Ok(VcpuExit::InternalError) => {
                let suberror = self.fd.get_kvm_run().__bindgen_anon_1;
                // SAFETY: KVM_EXIT_INTERNAL_ERROR fills the `internal` member of the union.
                let sub = unsafe { suberror.internal.suberror };
                let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or_default();
                err(format!(
                    "KVM internal error {sub} at rip {rip:#x} (1 = instruction emulation failed{})",
                    crate::vstate::vm::linux_boot_blocker()
                        .map(|_| "; this host's PVM KVM cannot emulate SSE/int3/xrstor")
                        .unwrap_or_default()
                ))
            }
            Ok(other) => err(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => {
                warn!("vCPU {id}: KVM_RUN failed: {e}");
                err(format!("KVM_RUN failed: {e}"))
            }
        }
    }
}
