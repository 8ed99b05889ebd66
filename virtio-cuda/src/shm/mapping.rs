//! [`Mapping`]: a memfd mapped shared, created by the client or mapped from its descriptor by
//! the executor.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use super::SharedRegion;

/// A shared mapping of a whole memfd, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only accessed through
// `SharedRegion` raw copies and the atomics of `atomic_at`, both valid from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

impl Mapping {
    /// Creates a memfd of `len` bytes, sealed against shrinking, growing and re-sealing (the
    /// peer maps it and must be able to rely on its size), and maps it; returns the mapping and
    /// the descriptor to hand to the peer.
    pub fn create(name: &CStr, len: usize) -> io::Result<(Mapping, OwnedFd)> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked below.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a valid descriptor; sets the file's size.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: a valid memfd created with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let m = Self::map_fd(&fd, len)?;
        Ok((m, fd))
    }

    /// Maps `len` bytes of a peer's memfd, refusing sizes above `max`, files smaller than `len`
    /// (touching a mapping past the end of its file would fault) and files not sealed against
    /// shrinking (the peer could cut the file under the mapping and make every access a SIGBUS).
    pub fn map(fd: &OwnedFd, len: u64, max: u64) -> io::Result<Mapping> {
        if len == 0 || len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared mapping of {len} bytes (limit {max})"),
            ));
        }
        // SAFETY: a valid descriptor; F_GET_SEALS only reads the file's seals.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the shared file is not a memfd sealed against shrinking (F_SEAL_SHRINK)",
            ));
        }
        // SAFETY: a zeroed `stat` is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared file of {} bytes is smaller than {len}", st.st_size),
            ));
        }
        Self::map_fd(fd, len as usize)
    }

    fn map_fd(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of a descriptor we hold; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never: creation refuses it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole mapping as a region.
    pub fn region(&self) -> SharedRegion<'_> {
        // SAFETY: the mapping is valid for as long as `self` is borrowed, and no reference to
        // its bytes exists (it is only reached through regions and atomics).
        unsafe { SharedRegion::new(self.ptr, self.len) }
    }

    /// The 8-byte word at `offset` as an atomic, or `None` if out of range or misaligned.
    pub(crate) fn atomic_at(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: in range and 8-aligned (mappings are page-aligned); the word lives as long as
        // `&self`. Both processes access control words only atomically.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map_fd`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
