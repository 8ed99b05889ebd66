//! The part of the i8042 keyboard controller a VM needs: the CPU reset line.
//! Writing 0xfe to the command port (0x64) ends the VM with [`VmExit::Reset`]. Ports 0x60–0x64;
//! reads return 0 (no data, controller ready).

use super::BusDevice;
use crate::exit::{ExitSignal, VmExit};

pub const I8042_BASE: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042 {
    exit: ExitSignal,
}

impl I8042 {
    pub fn new(exit: ExitSignal) -> Self {
        Self { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.exit.report(VmExit::Reset);
        }
    }
}
