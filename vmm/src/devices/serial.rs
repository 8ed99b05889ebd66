//! COM1 (ports 0x3f8–0x3ff): a 16550A UART from vm-superio whose interrupt line is an eventfd
//! registered as irqfd for IRQ 4. Output goes to the host's stdout or a file; input comes from
//! the host's stdin (forwarded by the event loop).

use std::io::{self, Write};

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// Base port and size of COM1.
pub const COM1_BASE: u64 = 0x3f8;
pub const COM1_LEN: u64 = 8;

/// Raises the UART interrupt by writing the irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialOut>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, out: SerialOut) -> Self {
        Self {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit (the rest is dropped: the
    /// 64-byte receive FIFO is full until the guest reads it).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("serial: input dropped: {e:?}");
                0
            }
        }
    }

    /// Flushes buffered output (called when the VM stops).
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(off)) => data[0] = self.uart.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (1, Ok(off)) = (data.len(), u8::try_from(offset)) {
            if let Err(e) = self.uart.write(off, data[0]) {
                tracing::warn!("serial: cannot write guest output: {e:?}");
            }
        }
    }
}
