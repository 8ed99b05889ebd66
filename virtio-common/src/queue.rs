//! Draining a virtqueue with adaptive polling.

use tracing::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

/// Serves `queue` until it has stayed empty for `poll_window`: `process` consumes the available
/// chains with guest notifications suppressed (so a busy guest causes no VM exit per request)
/// and returns whether the driver must be interrupted, `signal` interrupts it, and
/// notifications are re-enabled — with a final check for work that slipped in — before
/// returning. Returns `false` when the queue is unusable. Every device and every frontend (the
/// VMM's MMIO transport, vhost-user) drains its queues through this.
pub fn drain_polling_with<M: GuestMemory>(
    mem: &M,
    queue: &mut Queue,
    poll_window: std::time::Duration,
    mut process: impl FnMut(&M, &mut Queue) -> Result<bool, String>,
    mut signal: impl FnMut(),
) -> bool {
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            warn!("virtqueue unusable: {e}");
            return false;
        }
        let mut idle_since = std::time::Instant::now();
        loop {
            match process(mem, queue) {
                Ok(true) => {
                    signal();
                    idle_since = std::time::Instant::now();
                }
                Ok(false) => {}
                Err(e) => {
                    warn!("virtqueue: {e}");
                    return false;
                }
            }
            let pending = queue
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .map(|i| i.0 != queue.next_avail())
                .unwrap_or(false);
            if pending {
                idle_since = std::time::Instant::now();
                continue;
            }
            if idle_since.elapsed() >= poll_window {
                break;
            }
            std::hint::spin_loop();
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => return true,
            Err(e) => {
                warn!("virtqueue unusable: {e}");
                return false;
            }
        }
    }
}
