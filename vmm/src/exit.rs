//! How a VM ends, and the one-shot signal devices and vCPUs use to report it.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote a status to the debug-exit port (`devices::debug_exit`).
    GuestStatus(u8),
    /// The guest asked for a reset through the i8042 controller (port 0x64, value 0xfe), or KVM
    /// reported a reset system event. Linux does this for `reboot` with `reboot=k`.
    Reset,
    /// KVM reported a power-off system event.
    PowerOff,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// A vCPU stopped in a way the guest cannot recover from (emulation failure, entry failure).
    VcpuError { cpu: u8, reason: String },
    /// `--timeout` expired.
    Timeout,
}

impl VmExit {
    /// The VMM process exit code for this outcome (documented in docs/VMM.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            VmExit::GuestStatus(code) => *code,
            VmExit::Reset | VmExit::PowerOff => 0,
            VmExit::Timeout => 124,
            VmExit::TripleFault => 125,
            VmExit::VcpuError { .. } => 126,
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::GuestStatus(code) => write!(f, "guest exited with status {code}"),
            VmExit::Reset => write!(f, "guest reset (i8042 / reboot)"),
            VmExit::PowerOff => write!(f, "guest powered off"),
            VmExit::TripleFault => write!(f, "guest triple-faulted (KVM shutdown exit)"),
            VmExit::VcpuError { cpu, reason } => write!(f, "vCPU {cpu} stopped: {reason}"),
            VmExit::Timeout => write!(f, "guest timed out"),
        }
    }
}

/// Shared by devices and vCPU threads; the first reported exit wins and wakes the event loop.
#[derive(Clone)]
pub struct ExitSignal {
    exit: Arc<Mutex<Option<VmExit>>>,
    wake: Arc<EventFd>,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            exit: Arc::new(Mutex::new(None)),
            wake: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
    }

    /// Records `exit` unless another exit came first, and wakes the event loop.
    pub fn report(&self, exit: VmExit) {
        let mut slot = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::debug!("VM exit: {exit}");
            *slot = Some(exit);
        }
        drop(slot);
        if let Err(e) = self.wake.write(1) {
            tracing::error!("cannot wake the event loop: {e}");
        }
    }

    /// The recorded exit, if any.
    pub fn get(&self) -> Option<VmExit> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_set(&self) -> bool {
        self.get().is_some()
    }

    /// The eventfd the event loop polls.
    pub fn eventfd(&self) -> &EventFd {
        &self.wake
    }
}
