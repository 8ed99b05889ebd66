//! `cuGetProcAddress[_v2]`: every entry point found by name and ABI version.
//!
//! Each implemented function declares beside itself, in its `api/` module's `entry!` block, the
//! driver-API name it serves as `cudaTypedefs.h` spells it (`PFN_<name>_v<version>`) and the
//! versions it is that name's ABI for (`proc(cuMemcpyHtoD 3020)`), and its per-thread-default-
//! stream variant (`per_thread(cuMemcpyHtoD_v2_ptds, ptds)`); see [`crate::ffi::entry`]. A lookup
//! picks the newest version not newer than the caller's `cudaVersion`, in its per-thread variant
//! when the caller asks for it. Every other name of the driver API resolves to a stub that logs
//! its name once and returns `CUDA_ERROR_NOT_SUPPORTED` ([`crate::unsupported`]); names the
//! driver API does not have are `CUDA_ERROR_NOT_FOUND`.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use tracing::debug;
use virtio_cuda::protocol::Status;

use crate::export_table::cuGetExportTable;
use crate::ffi::{cstr, guard, put, Entry};
use crate::types::CUresult;

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
const PER_THREAD_DEFAULT_STREAM: u64 = 2;

/// `CUdriverProcAddressQueryResult`.
const QUERY_SUCCESS: c_int = 0;
const QUERY_SYMBOL_NOT_FOUND: c_int = 1;
const QUERY_VERSION_NOT_SUFFICIENT: c_int = 2;

/// `(name, entry)` for every implemented ABI version: each `api/` module's `entry!` block
/// declares its own (`proc(…)` beside each function), plus the two defined outside them.
pub fn entries() -> Vec<(&'static str, Entry)> {
    let own = |version, symbol, f: usize| Entry::new(version, symbol, f, None);
    let mut v = vec![
        (
            "cuGetProcAddress",
            own(
                11030,
                "cuGetProcAddress",
                cuGetProcAddress as *const () as usize,
            ),
        ),
        (
            "cuGetProcAddress",
            own(
                12000,
                "cuGetProcAddress_v2",
                cuGetProcAddress_v2 as *const () as usize,
            ),
        ),
        (
            "cuGetExportTable",
            own(
                3000,
                "cuGetExportTable",
                cuGetExportTable as *const () as usize,
            ),
        ),
    ];
    for module in [
        crate::api::device::proc_entries,
        crate::api::context::proc_entries,
        crate::api::memory::proc_entries,
        crate::api::managed::proc_entries,
        crate::api::module::proc_entries,
        crate::api::launch::proc_entries,
        crate::api::link::proc_entries,
        crate::api::stream::proc_entries,
    ] {
        v.extend(module());
    }
    v
}

/// The table, by name, with variants sorted by version.
fn index() -> &'static HashMap<&'static str, Vec<Entry>> {
    static INDEX: OnceLock<HashMap<&'static str, Vec<Entry>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut m: HashMap<&'static str, Vec<Entry>> = HashMap::new();
        for (name, e) in entries() {
            m.entry(name).or_default().push(e);
        }
        for v in m.values_mut() {
            v.sort_by_key(|e| e.version);
        }
        m
    })
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found(usize),
    /// The name exists, but only in versions newer than the caller asked for.
    VersionNotSufficient,
    NotFound,
}

/// Resolves `name` for a caller built against `version` with `flags`: the newest ABI version
/// not newer than `version`, in its per-thread variant when the caller asks for that, the
/// version has one and the caller is built against CUDA 7.0 or later.
pub fn lookup(name: &str, version: i32, flags: u64) -> Lookup {
    if let Some(variants) = index().get(name) {
        let Some(e) = variants.iter().rfind(|e| e.version <= version) else {
            return Lookup::VersionNotSufficient;
        };
        let per_thread = flags & PER_THREAD_DEFAULT_STREAM != 0;
        return match e.per_thread {
            Some((_, f)) if per_thread && version >= e.per_thread_version() => Lookup::Found(f),
            _ => Lookup::Found(e.f),
        };
    }
    match crate::unsupported::stub(name) {
        Some(f) => Lookup::Found(f),
        None => Lookup::NotFound,
    }
}

unsafe fn get_proc_address(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> Result<(), Status> {
    if pfn.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: cuda.h: `symbol` is a NUL-terminated name.
    let name = unsafe { cstr(symbol) }?;
    let found = lookup(name, version, flags);
    debug!(symbol = name, version, flags, ?found, "cuGetProcAddress");
    let (f, code, result) = match found {
        Lookup::Found(f) => (f, QUERY_SUCCESS, Ok(())),
        Lookup::VersionNotSufficient => (
            0,
            QUERY_VERSION_NOT_SUFFICIENT,
            Err(Status::ERROR_NOT_FOUND),
        ),
        Lookup::NotFound => (0, QUERY_SYMBOL_NOT_FOUND, Err(Status::ERROR_NOT_FOUND)),
    };
    // SAFETY: checked non-null above; `status` is optional.
    unsafe {
        put(pfn, f as *mut c_void)?;
        if !status.is_null() {
            put(status, code)?;
        }
    }
    result
}

/// `cuGetProcAddress` (CUDA 11.3).
///
/// # Safety
/// `symbol` must be a NUL-terminated string; `pfn` writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) -> CUresult {
    // SAFETY: per this function's contract.
    guard("cuGetProcAddress", || unsafe {
        get_proc_address(symbol, pfn, version, flags, std::ptr::null_mut())
    })
}

/// `cuGetProcAddress_v2` (CUDA 12.0): also reports why a symbol was not found.
///
/// # Safety
/// `symbol` must be a NUL-terminated string; `pfn` writable; `status` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    // SAFETY: per this function's contract.
    guard("cuGetProcAddress_v2", || unsafe {
        get_proc_address(symbol, pfn, version, flags, status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::context::*;
    use crate::api::device::*;
    use crate::api::memory::*;

    #[test]
    fn picks_the_newest_version_not_newer_than_asked() {
        assert_eq!(
            lookup("cuGetProcAddress", 12000, 0),
            Lookup::Found(cuGetProcAddress_v2 as *const () as usize)
        );
        assert_eq!(
            lookup("cuGetProcAddress", 11030, 0),
            Lookup::Found(cuGetProcAddress as *const () as usize)
        );
        assert_eq!(
            lookup("cuInit", 13000, 0),
            Lookup::Found(cuInit as *const () as usize)
        );
        assert_eq!(
            lookup("cuCtxCreate", 11000, 0),
            Lookup::Found(cuCtxCreate_v2 as *const () as usize)
        );
        assert_eq!(
            lookup("cuLibraryLoadData", 11000, 0),
            Lookup::VersionNotSufficient
        );
    }

    #[test]
    fn per_thread_variants_when_asked() {
        assert_eq!(
            lookup("cuMemcpyHtoD", 13000, PER_THREAD_DEFAULT_STREAM),
            Lookup::Found(cuMemcpyHtoD_v2_ptds as *const () as usize)
        );
        assert_eq!(
            lookup("cuMemcpyHtoD", 13000, 0),
            Lookup::Found(cuMemcpyHtoD_v2 as *const () as usize)
        );
        // No per-thread variant: the default one.
        assert_eq!(
            lookup("cuMemAlloc", 13000, PER_THREAD_DEFAULT_STREAM),
            Lookup::Found(cuMemAlloc_v2 as *const () as usize)
        );
    }

    #[test]
    fn unknown_names_are_not_found_and_unimplemented_ones_are_stubs() {
        assert_eq!(lookup("cuNoSuchThing", 13000, 0), Lookup::NotFound);
        let Lookup::Found(f) = lookup("cuGraphCreate", 13000, 0) else {
            panic!("cuGraphCreate should resolve to a stub");
        };
        // SAFETY: stubs take no arguments they read and return a CUresult.
        let r = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn() -> CUresult>(f)() };
        assert_eq!(r, Status::ERROR_NOT_SUPPORTED.0);
    }

    #[test]
    fn c_entry_points_report_status() {
        let mut f = std::ptr::null_mut();
        let mut st = -1;
        // SAFETY: valid C string and out-pointers.
        let r = unsafe { cuGetProcAddress_v2(c"cuNope".as_ptr(), &mut f, 13000, 0, &mut st) };
        assert_eq!(r, Status::ERROR_NOT_FOUND.0);
        assert_eq!(st, QUERY_SYMBOL_NOT_FOUND);
        assert!(f.is_null());
        // SAFETY: as above.
        let r = unsafe { cuGetProcAddress_v2(c"cuInit".as_ptr(), &mut f, 2000, 0, &mut st) };
        assert_eq!(r, 0);
        assert_eq!(st, QUERY_SUCCESS);
        assert_eq!(f as usize, cuInit as *const () as usize);
    }

    /// Every table entry names a real `PFN_<name>_v<version>` of the installed toolkit's
    /// `cudaTypedefs.h`, and every driver-API name there is either implemented or a stub.
    #[test]
    fn table_matches_cuda_typedefs() {
        let Ok(root) = std::env::var("VCUDA_CUDA_ROOT") else {
            vcuda_testkit::skip("VCUDA_CUDA_ROOT not set (eval \"$(scripts/setup.sh --env)\")");
            return;
        };
        let Ok(mut text) = std::fs::read_to_string(format!("{root}/include/cudaTypedefs.h")) else {
            vcuda_testkit::skip(format!("no cudaTypedefs.h under {root}"));
            return;
        };
        // The profiler's typedefs live in their own header.
        text += &std::fs::read_to_string(format!("{root}/include/cudaProfilerTypedefs.h"))
            .unwrap_or_default();
        let mut pfns = std::collections::HashSet::new();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(rest) = word.strip_prefix("PFN_") {
                pfns.insert(rest.to_string());
            }
        }
        for (name, e) in entries() {
            let pfn = format!("{name}_v{}", e.version);
            assert!(
                pfns.contains(&pfn),
                "PFN_{pfn} ({}) is not in cudaTypedefs.h",
                e.symbol
            );
            if let Some((symbol, _)) = e.per_thread {
                let pfn = format!("{name}_v{}", e.per_thread_version());
                let known =
                    pfns.contains(&format!("{pfn}_ptds")) || pfns.contains(&format!("{pfn}_ptsz"));
                assert!(
                    known,
                    "PFN_{pfn}_ptds/_ptsz ({symbol}) is not in cudaTypedefs.h"
                );
            }
        }
        for pfn in &pfns {
            let Some(i) = pfn.rfind("_v") else { continue };
            let name = &pfn[..i];
            if name.starts_with("cu") && !pfn.contains("_v3020_") {
                assert_ne!(
                    lookup(name, 13000, 0),
                    Lookup::NotFound,
                    "{name} is neither implemented nor a stub"
                );
            }
        }
    }
}
