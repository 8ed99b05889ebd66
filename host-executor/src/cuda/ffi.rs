//! Calling the CUDA driver through cudarc's dynamically loaded `sys` bindings.
//!
//! cudarc resolves each symbol on first use and panics if the loaded library lacks it; every
//! driver call therefore goes through [`call`], which turns both a failing `CUresult` and such a
//! panic into a [`Status`], so a driver without some entry point fails that call, not the
//! executor.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cudarc::driver::sys;
use virtio_cuda::protocol::Status;

/// Runs one driver call; `CUDA_SUCCESS` → `Ok`.
pub fn call(f: impl FnOnce() -> sys::CUresult) -> Result<(), Status> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => status(r),
        Err(_) => Err(Status::ERROR_NOT_SUPPORTED),
    }
}

/// Converts a driver result (CUresult values are the protocol's status values).
pub fn status(r: sys::CUresult) -> Result<(), Status> {
    let code = r as u32;
    if code == 0 {
        Ok(())
    } else {
        Err(Status(code))
    }
}

/// Runs a driver call that produces a plain value through an out-pointer.
pub fn out<T: Default>(f: impl FnOnce(*mut T) -> sys::CUresult) -> Result<T, Status> {
    let mut v = T::default();
    call(|| f(&mut v))?;
    Ok(v)
}

/// Runs a driver call that produces a handle (a pointer type) through an out-pointer.
pub fn out_handle<T>(f: impl FnOnce(*mut *mut T) -> sys::CUresult) -> Result<*mut T, Status> {
    let mut v: *mut T = std::ptr::null_mut();
    call(|| f(&mut v))?;
    Ok(v)
}

/// Whether the loaded driver exports `name` (call only after the backend was probed).
pub fn has_symbol(name: &str) -> bool {
    catch_unwind(|| {
        // SAFETY: looks a symbol up without calling it; `u8` stands in for its unknown type.
        unsafe { sys::culib().get::<*const u8>(name.as_bytes()).is_ok() }
    })
    .unwrap_or(false)
}
