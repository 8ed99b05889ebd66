//! Debug-exit port, in the spirit of QEMU's `isa-debug-exit`: a guest writes its exit status
//! (the low byte of a 1-, 2- or 4-byte `out` to port [`DEBUG_EXIT_PORT`]) and the VM stops at
//! once; `vcuda run` exits with that status. Unlike QEMU, the status is not shifted or or-ed.

use super::BusDevice;
use crate::exit::{ExitSignal, VmExit};

pub const DEBUG_EXIT_PORT: u64 = 0xf4;
pub const DEBUG_EXIT_LEN: u64 = 1;

pub struct DebugExit {
    exit: ExitSignal,
}

impl DebugExit {
    pub fn new(exit: ExitSignal) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(status) = data.first() {
            self.exit.report(VmExit::GuestStatus(*status));
        }
    }
}
