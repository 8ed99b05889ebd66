//! The virtio-gpu device ([`VirtioGpu`]) served over vhost-user, for QEMU's
//! `vhost-user-gpu-pci` frontend (and any other vhost-user frontend): the one request only this
//! transport has, `VHOST_USER_GPU_SET_SOCKET` (request 33), passes the socket over which QEMU
//! is shown what the guest shows ([`crate::display::qemu`]).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use tracing::info;
use virtio_common::vhost_user::{VhostUserDevice, VhostUserError};

use crate::display::qemu::GpuSocket;
use crate::served::VirtioGpu;

/// `VHOST_USER_GPU_SET_SOCKET`: the vhost-user request carrying the display socket.
pub const REQ_GPU_SET_SOCKET: u32 = 33;

impl VhostUserDevice for VirtioGpu {
    fn device_request(
        &mut self,
        code: u32,
        payload: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), VhostUserError> {
        if code != REQ_GPU_SET_SOCKET {
            return Err(VhostUserError::Unsupported(code));
        }
        if !payload.is_empty() {
            return Err(VhostUserError::PayloadSize(payload.len()));
        }
        if fds.len() != 1 {
            return Err(VhostUserError::FdCount {
                expected: 1,
                got: fds.len(),
            });
        }
        let Some(fd) = fds.pop() else {
            return Err(VhostUserError::FdCount {
                expected: 1,
                got: 0,
            });
        };
        info!("vhost-user-gpu: display socket received");
        self.set_display_socket(GpuSocket::new(UnixStream::from(fd)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use virtio_common::device::QueueDevice;

    use super::*;
    use crate::device::GpuConfig;
    use crate::display::DisplaySpec;

    #[test]
    fn set_socket_needs_exactly_one_descriptor_and_no_payload() {
        let mut dev = VirtioGpu::new(GpuConfig::with_size(64, 48), DisplaySpec::None).unwrap();
        assert!(matches!(
            dev.device_request(REQ_GPU_SET_SOCKET, &[], Vec::new()),
            Err(VhostUserError::FdCount { .. })
        ));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            dev.device_request(REQ_GPU_SET_SOCKET, &[0], vec![OwnedFd::from(a)]),
            Err(VhostUserError::PayloadSize(1))
        ));
        assert!(matches!(
            dev.device_request(99, &[], Vec::new()),
            Err(VhostUserError::Unsupported(99))
        ));
        assert!(!dev.has_display_socket());
        let (a, _b) = UnixStream::pair().unwrap();
        dev.device_request(REQ_GPU_SET_SOCKET, &[], vec![OwnedFd::from(a)])
            .unwrap();
        assert!(dev.has_display_socket());
        // Config space: one scanout; SET_CONFIG's events_clear is accepted.
        let mut c = [0u8; 16];
        dev.read_config(0, &mut c);
        assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), 1);
        dev.write_config(0, &c).unwrap();
    }
}
