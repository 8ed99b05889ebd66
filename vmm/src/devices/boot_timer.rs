//! Boot timer, as in Firecracker: the guest writes the byte [`BOOT_TIMER_MAGIC`] (123) to offset 0
//! of the MMIO page at `layout::BOOT_TIMER_ADDR` (0xc000_0000) when it considers itself booted
//! (a Linux init: `devmem 0xc0000000 8 123`). The first such write is timed against VMM start.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::BusDevice;

pub const BOOT_TIMER_MAGIC: u8 = 123;

pub struct BootTimer {
    start: Instant,
    print: bool,
    first_write: Arc<OnceLock<Duration>>,
}

impl BootTimer {
    /// `print`: report the time on stderr when the guest writes (the `--boot-timer` flag).
    pub fn new(start: Instant, print: bool) -> Self {
        Self {
            start,
            print,
            first_write: Arc::new(OnceLock::new()),
        }
    }

    /// Time from VMM start to the guest's first write, once it happened.
    pub fn handle(&self) -> Arc<OnceLock<Duration>> {
        self.first_write.clone()
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.first() != Some(&BOOT_TIMER_MAGIC) {
            return;
        }
        let elapsed = self.start.elapsed();
        if self.first_write.set(elapsed).is_ok() && self.print {
            eprintln!(
                "vcuda: boot-timer: guest boot-timer write {:.3} ms after VMM start",
                elapsed.as_secs_f64() * 1e3
            );
        }
    }
}
