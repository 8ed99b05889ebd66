//! The C boundary: every exported function runs its body through [`guard`], which traces the
//! call, catches panics (→ `CUDA_ERROR_UNKNOWN`, never unwinding into C) and converts the
//! body's `Result` into a `CUresult`. Pointer helpers check for null before touching memory.

use std::collections::HashSet;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use tracing::{debug, warn};
use virtio_cuda::protocol::Status;

use crate::driver::R;
use crate::types::CUresult;

/// Runs one driver-API call.
pub fn guard(name: &'static str, body: impl FnOnce() -> R<()>) -> CUresult {
    let run = || {
        crate::driver::init_logging();
        debug!(call = name);
        let r = body();
        if let Err(s) = &r {
            debug!(call = name, status = %s, "failed");
        }
        r
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => Status::SUCCESS.0,
        Ok(Err(s)) => s.0,
        // Logging itself may be what failed (e.g. thread-locals torn down at exit): stay quiet.
        Err(_) => Status::ERROR_UNKNOWN.0,
    }
}

/// Logs, once per name, that the application called something the shim does not implement.
/// Never panics (it is called from bare C entry points, also at process exit).
pub fn not_supported(name: &str) -> CUresult {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
        let first = seen
            .lock()
            .map(|mut s| s.insert(name.to_string()))
            .unwrap_or(false);
        if first {
            crate::driver::init_logging();
            warn!(
                "vcuda: {name} is not supported by the vcuda shim; returning CUDA_ERROR_NOT_SUPPORTED"
            );
        }
    }));
    Status::ERROR_NOT_SUPPORTED.0
}

/// One ABI version of one driver-API name (a `cuGetProcAddress` entry), and its per-thread-default-stream variant if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub version: i32,
    pub symbol: &'static str,
    pub f: usize,
    /// `(symbol, function)` of the `_ptds`/`_ptsz` variant.
    pub per_thread: Option<(&'static str, usize)>,
}

impl Entry {
    pub const fn new(
        version: i32,
        symbol: &'static str,
        f: usize,
        per_thread: Option<(&'static str, usize)>,
    ) -> Entry {
        Entry {
            version,
            symbol,
            f,
            per_thread,
        }
    }

    /// The `cudaTypedefs.h` version of the per-thread variant: the same ABI version, but
    /// per-thread default streams exist only from CUDA 7.0.
    pub fn per_thread_version(&self) -> i32 {
        self.version.max(7000)
    }
}

/// Defines exported driver-API functions whose bodies return `R<()>`, and the module's
/// `cuGetProcAddress` entries.
///
/// The body runs inside one `unsafe` block: the application's pointers are trusted exactly as
/// far as `cuda.h` says they may be (every pointer is null-checked by the helpers below before
/// it is dereferenced).
///
/// ```text
/// fn cuStreamQuery(stream: Handle) proc(cuStreamQuery 2000) per_thread(cuStreamQuery_ptsz, ptds) { … }
/// ```
///
/// * `proc(name v1, v2…)`: `cuGetProcAddress("name")` finds this function for callers built
///   against CUDA `v1` (`PFN_name_v1` in `cudaTypedefs.h`) and later, up to the next ABI
///   version of `name` declared anywhere. A function without `proc` is exported only.
/// * `per_thread(variant, flag)`: the same body also defines the per-thread-default-stream
///   variant (`_ptds`/`_ptsz`), with `flag == true` there and `false` in the default one (a
///   call whose behaviour does not depend on it names the flag `_ptds`). `cuGetProcAddress`
///   returns it to callers that ask for `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`, from
///   the same versions (CUDA 7.0, which introduced it, at the earliest).
///
/// Each `api/` module has one `entry!` block; `procaddr.rs` gathers their `proc_entries()`.
macro_rules! entry {
    ($(
        $(#[$m:meta])*
        fn $name:ident $args:tt $(proc $proc:tt)? $(per_thread $pt:tt)? $body:block
    )*) => {
        $(
            $crate::ffi::entry!(@fn [$(#[$m])*] $name $args [$($pt)?] false $body);
            $($crate::ffi::entry!(@pt $name $args $pt $body);)?
        )*

        /// This module's `cuGetProcAddress` entries: `(name, ABI version)`.
        #[allow(clippy::vec_init_then_push)]
        pub(crate) fn proc_entries() -> Vec<(&'static str, $crate::ffi::Entry)> {
            #[allow(unused_mut)]
            let mut v = Vec::new();
            $($crate::ffi::entry!(@proc v $name [$($proc)?] [$($pt)?]);)*
            v
        }
    };
    (@pt $name:ident $args:tt ($ptname:ident, $flag:ident) $body:block) => {
        $crate::ffi::entry!(@fn [#[doc = concat!("Per-thread-default-stream variant of `", stringify!($name), "`.")]]
            $ptname $args [($ptname, $flag)] true $body);
    };
    (@fn [$(#[$m:meta])*] $name:ident ($($arg:ident : $ty:ty),* $(,)?)
        [$(($_pt:ident, $flag:ident))?] $value:literal $body:block) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $crate::types::CUresult {
            $crate::ffi::guard(stringify!($name), || -> $crate::driver::R<()> {
                $(let $flag: bool = $value;)?
                // SAFETY: the arguments follow the cuda.h contract of this function; pointer
                // arguments are checked for null before use.
                #[allow(unused_unsafe)]
                unsafe { $body }
            })
        }
    };
    (@proc $v:ident $f:ident [] $pt:tt) => {};
    (@proc $v:ident $f:ident [($pname:ident $($ver:literal),+)] []) => {
        $($v.push((stringify!($pname), $crate::ffi::Entry::new($ver, stringify!($f), $f as *const () as usize, None)));)+
    };
    (@proc $v:ident $f:ident [($pname:ident $($ver:literal),+)] [($ptname:ident, $_flag:ident)]) => {
        $($v.push((stringify!($pname), $crate::ffi::Entry::new($ver, stringify!($f), $f as *const () as usize,
            Some((stringify!($ptname), $ptname as *const () as usize)))));)+
    };
}
pub(crate) use entry;

/// Writes `v` through an application out-pointer.
///
/// # Safety
/// `p` must be null or valid for a write of `T`.
pub unsafe fn put<T>(p: *mut T, v: T) -> R<()> {
    if p.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid for writes per the caller's contract.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Reads a value from an application pointer.
///
/// # Safety
/// `p` must be null or valid for a read of `T`.
pub unsafe fn get<T: Copy>(p: *const T) -> R<T> {
    if p.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid for reads per the caller's contract.
    Ok(unsafe { p.read_unaligned() })
}

/// A NUL-terminated string argument.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn cstr<'a>(p: *const c_char) -> R<&'a str> {
    if p.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Status::ERROR_INVALID_VALUE)
}

/// A host buffer argument as a byte slice (empty for `len == 0`, whatever the pointer).
///
/// # Safety
/// `p` must be null or valid for reads of `len` bytes.
pub unsafe fn bytes<'a>(p: *const u8, len: usize) -> R<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null and valid for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A host output buffer argument as a mutable byte slice.
///
/// # Safety
/// `p` must be null or valid for writes of `len` bytes.
pub unsafe fn bytes_mut<'a>(p: *mut u8, len: usize) -> R<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null and valid for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Copies `s` into a C buffer of `cap` bytes, NUL-terminated and truncated to fit.
///
/// # Safety
/// `p` must be null or valid for writes of `cap` bytes.
pub unsafe fn put_str(p: *mut c_char, cap: i32, s: &str) -> R<()> {
    let cap = usize::try_from(cap).map_err(|_| Status::ERROR_INVALID_VALUE)?;
    if cap == 0 {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: per the caller's contract.
    let out = unsafe { bytes_mut(p.cast(), cap) }?;
    let n = s.len().min(cap - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out[n] = 0;
    Ok(())
}

/// A handle from an opaque CUDA pointer.
pub fn h(p: *mut std::ffi::c_void) -> u64 {
    p as usize as u64
}

/// An opaque CUDA pointer from a handle.
pub fn ptr(h: u64) -> *mut std::ffi::c_void {
    h as usize as *mut std::ffi::c_void
}
