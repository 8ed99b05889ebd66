//! `cuGetProcAddress[_v2]`: the one table from which every entry point is found.
//!
//! Each line of [`table!`] is one driver-API name as `cudaTypedefs.h` spells it (`PFN_<name>_v<version>`),
//! with each ABI version the shim implements: the version that introduced it, optionally `ptds`
//! (the per-thread-default-stream variant, `_ptds`/`_ptsz`), and the exported function. A lookup
//! picks the newest variant not newer than the caller's `cudaVersion`, preferring the
//! per-thread variant when the caller asks for it. Every other name of the driver API resolves
//! to a stub that logs its name once and returns `CUDA_ERROR_NOT_SUPPORTED`
//! ([`crate::unsupported`]); names the driver API does not have are `CUDA_ERROR_NOT_FOUND`.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use tracing::debug;
use virtio_cuda::protocol::Status;

use crate::api::context::*;
use crate::api::device::*;
use crate::api::launch::*;
use crate::api::managed::*;
use crate::api::memory::*;
use crate::api::module::*;
use crate::api::stream::*;
use crate::export_table::cuGetExportTable;
use crate::ffi::{cstr, guard, put};
use crate::types::CUresult;

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
const PER_THREAD_DEFAULT_STREAM: u64 = 2;

/// `CUdriverProcAddressQueryResult`.
const QUERY_SUCCESS: c_int = 0;
const QUERY_SYMBOL_NOT_FOUND: c_int = 1;
const QUERY_VERSION_NOT_SUFFICIENT: c_int = 2;

/// One ABI version of one name.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub version: i32,
    pub per_thread: bool,
    pub symbol: &'static str,
    pub f: usize,
}

macro_rules! table {
    ($($name:ident $([$($pt:ident)? $ver:literal $f:ident])+;)*) => {
        /// `(name, entry)` for every implemented ABI version.
        pub fn entries() -> Vec<(&'static str, Entry)> {
            vec![$($((stringify!($name), Entry {
                version: $ver,
                per_thread: table!(@pt $($pt)?),
                symbol: stringify!($f),
                f: $f as *const () as usize,
            }),)+)*]
        }
    };
    (@pt) => { false };
    (@pt ptds) => { true };
}

table! {
    cuInit [2000 cuInit];
    cuDriverGetVersion [2020 cuDriverGetVersion];
    cuGetProcAddress [11030 cuGetProcAddress] [12000 cuGetProcAddress_v2];
    cuGetExportTable [3000 cuGetExportTable];
    cuGetErrorName [6000 cuGetErrorName];
    cuGetErrorString [6000 cuGetErrorString];

    cuDeviceGet [2000 cuDeviceGet];
    cuDeviceGetCount [2000 cuDeviceGetCount];
    cuDeviceGetName [2000 cuDeviceGetName];
    cuDeviceGetUuid [9020 cuDeviceGetUuid] [11040 cuDeviceGetUuid_v2];
    cuDeviceTotalMem [3020 cuDeviceTotalMem_v2];
    cuDeviceGetAttribute [2000 cuDeviceGetAttribute];
    cuDeviceComputeCapability [2000 cuDeviceComputeCapability];
    cuDeviceGetPCIBusId [4010 cuDeviceGetPCIBusId];
    cuDeviceGetByPCIBusId [4010 cuDeviceGetByPCIBusId];
    cuDeviceCanAccessPeer [4000 cuDeviceCanAccessPeer];
    cuDeviceGetP2PAttribute [8000 cuDeviceGetP2PAttribute];
    cuDeviceGetExecAffinitySupport [11040 cuDeviceGetExecAffinitySupport];
    cuDeviceGetLuid [10000 cuDeviceGetLuid];
    cuDeviceGetTexture1DLinearMaxWidth [11010 cuDeviceGetTexture1DLinearMaxWidth];
    cuFlushGPUDirectRDMAWrites [11030 cuFlushGPUDirectRDMAWrites];

    cuDevicePrimaryCtxRetain [7000 cuDevicePrimaryCtxRetain];
    cuDevicePrimaryCtxRelease [7000 cuDevicePrimaryCtxRelease] [11000 cuDevicePrimaryCtxRelease_v2];
    cuDevicePrimaryCtxReset [7000 cuDevicePrimaryCtxReset] [11000 cuDevicePrimaryCtxReset_v2];
    cuDevicePrimaryCtxSetFlags [7000 cuDevicePrimaryCtxSetFlags] [11000 cuDevicePrimaryCtxSetFlags_v2];
    cuDevicePrimaryCtxGetState [7000 cuDevicePrimaryCtxGetState];
    cuCtxCreate [3020 cuCtxCreate_v2] [11040 cuCtxCreate_v3] [12050 cuCtxCreate_v4];
    cuCtxDestroy [4000 cuCtxDestroy_v2];
    cuCtxPushCurrent [4000 cuCtxPushCurrent_v2];
    cuCtxPopCurrent [4000 cuCtxPopCurrent_v2];
    cuCtxSetCurrent [4000 cuCtxSetCurrent];
    cuCtxGetCurrent [4000 cuCtxGetCurrent];
    cuCtxGetDevice [2000 cuCtxGetDevice] [13000 cuCtxGetDevice_v2];
    cuCtxGetFlags [7000 cuCtxGetFlags];
    cuCtxSetFlags [12010 cuCtxSetFlags];
    cuCtxGetId [12000 cuCtxGetId];
    cuCtxSynchronize [2000 cuCtxSynchronize] [13000 cuCtxSynchronize_v2];
    cuCtxGetApiVersion [3020 cuCtxGetApiVersion];
    cuCtxGetLimit [3010 cuCtxGetLimit];
    cuCtxSetLimit [3010 cuCtxSetLimit];
    cuCtxGetCacheConfig [3020 cuCtxGetCacheConfig];
    cuCtxSetCacheConfig [3020 cuCtxSetCacheConfig];
    cuCtxGetSharedMemConfig [4020 cuCtxGetSharedMemConfig];
    cuCtxSetSharedMemConfig [4020 cuCtxSetSharedMemConfig];
    cuCtxGetStreamPriorityRange [5050 cuCtxGetStreamPriorityRange];
    cuCtxResetPersistingL2Cache [11000 cuCtxResetPersistingL2Cache];

    cuMemAlloc [3020 cuMemAlloc_v2];
    cuMemAllocPitch [3020 cuMemAllocPitch_v2];
    cuMemAllocAsync [11020 cuMemAllocAsync] [ptds 11020 cuMemAllocAsync_ptsz];
    cuMemFree [3020 cuMemFree_v2];
    cuMemFreeAsync [11020 cuMemFreeAsync] [ptds 11020 cuMemFreeAsync_ptsz];
    cuMemGetInfo [3020 cuMemGetInfo_v2];
    cuMemGetAddressRange [3020 cuMemGetAddressRange_v2];
    cuMemcpy [4000 cuMemcpy] [ptds 7000 cuMemcpy_ptds];
    cuMemcpyAsync [4000 cuMemcpyAsync] [ptds 7000 cuMemcpyAsync_ptsz];
    cuMemcpyPeer [4000 cuMemcpyPeer];
    cuMemcpyPeerAsync [4000 cuMemcpyPeerAsync];
    cuMemcpyHtoD [3020 cuMemcpyHtoD_v2] [ptds 7000 cuMemcpyHtoD_v2_ptds];
    cuMemcpyHtoDAsync [3020 cuMemcpyHtoDAsync_v2] [ptds 7000 cuMemcpyHtoDAsync_v2_ptsz];
    cuMemcpyDtoH [3020 cuMemcpyDtoH_v2] [ptds 7000 cuMemcpyDtoH_v2_ptds];
    cuMemcpyDtoHAsync [3020 cuMemcpyDtoHAsync_v2] [ptds 7000 cuMemcpyDtoHAsync_v2_ptsz];
    cuMemcpyDtoD [3020 cuMemcpyDtoD_v2] [ptds 7000 cuMemcpyDtoD_v2_ptds];
    cuMemcpyDtoDAsync [3020 cuMemcpyDtoDAsync_v2] [ptds 7000 cuMemcpyDtoDAsync_v2_ptsz];
    cuMemcpy2D [3020 cuMemcpy2D_v2] [ptds 7000 cuMemcpy2D_v2_ptds];
    cuMemcpy2DUnaligned [3020 cuMemcpy2DUnaligned_v2] [ptds 7000 cuMemcpy2DUnaligned_v2_ptds];
    cuMemcpy2DAsync [3020 cuMemcpy2DAsync_v2] [ptds 7000 cuMemcpy2DAsync_v2_ptsz];
    cuMemcpy3D [3020 cuMemcpy3D_v2] [ptds 7000 cuMemcpy3D_v2_ptds];
    cuMemcpy3DAsync [3020 cuMemcpy3DAsync_v2] [ptds 7000 cuMemcpy3DAsync_v2_ptsz];
    cuMemsetD8 [3020 cuMemsetD8_v2] [ptds 7000 cuMemsetD8_v2_ptds];
    cuMemsetD16 [3020 cuMemsetD16_v2] [ptds 7000 cuMemsetD16_v2_ptds];
    cuMemsetD32 [3020 cuMemsetD32_v2] [ptds 7000 cuMemsetD32_v2_ptds];
    cuMemsetD2D8 [3020 cuMemsetD2D8_v2] [ptds 7000 cuMemsetD2D8_v2_ptds];
    cuMemsetD2D16 [3020 cuMemsetD2D16_v2] [ptds 7000 cuMemsetD2D16_v2_ptds];
    cuMemsetD2D32 [3020 cuMemsetD2D32_v2] [ptds 7000 cuMemsetD2D32_v2_ptds];
    cuMemsetD8Async [3020 cuMemsetD8Async] [ptds 7000 cuMemsetD8Async_ptsz];
    cuMemsetD16Async [3020 cuMemsetD16Async] [ptds 7000 cuMemsetD16Async_ptsz];
    cuMemsetD32Async [3020 cuMemsetD32Async] [ptds 7000 cuMemsetD32Async_ptsz];
    cuMemsetD2D8Async [3020 cuMemsetD2D8Async] [ptds 7000 cuMemsetD2D8Async_ptsz];
    cuMemsetD2D16Async [3020 cuMemsetD2D16Async] [ptds 7000 cuMemsetD2D16Async_ptsz];
    cuMemsetD2D32Async [3020 cuMemsetD2D32Async] [ptds 7000 cuMemsetD2D32Async_ptsz];
    cuMemAllocHost [3020 cuMemAllocHost_v2];
    cuMemHostAlloc [2020 cuMemHostAlloc];
    cuMemFreeHost [2000 cuMemFreeHost];
    cuMemHostRegister [4000 cuMemHostRegister_v2] [6050 cuMemHostRegister_v2];
    cuMemHostUnregister [4000 cuMemHostUnregister];
    cuMemHostGetFlags [2030 cuMemHostGetFlags];
    cuMemHostGetDevicePointer [3020 cuMemHostGetDevicePointer_v2];
    cuMemAllocManaged [6000 cuMemAllocManaged];
    cuMemPrefetchAsync [8000 cuMemPrefetchAsync] [ptds 8000 cuMemPrefetchAsync_ptsz] [12020 cuMemPrefetchAsync] [ptds 12020 cuMemPrefetchAsync_ptsz];
    cuMemAdvise [8000 cuMemAdvise] [12020 cuMemAdvise];
    cuPointerGetAttribute [4000 cuPointerGetAttribute];
    cuPointerGetAttributes [7000 cuPointerGetAttributes];
    cuPointerSetAttribute [6000 cuPointerSetAttribute];

    cuModuleLoad [2000 cuModuleLoad];
    cuModuleLoadData [2000 cuModuleLoadData];
    cuModuleLoadDataEx [2010 cuModuleLoadDataEx];
    cuModuleLoadFatBinary [2000 cuModuleLoadFatBinary];
    cuModuleUnload [2000 cuModuleUnload];
    cuModuleGetFunction [2000 cuModuleGetFunction];
    cuModuleGetGlobal [3020 cuModuleGetGlobal_v2];
    cuModuleGetLoadingMode [11070 cuModuleGetLoadingMode];
    cuFuncGetAttribute [2020 cuFuncGetAttribute];
    cuFuncSetAttribute [9000 cuFuncSetAttribute];
    cuFuncSetCacheConfig [3000 cuFuncSetCacheConfig];
    cuFuncSetSharedMemConfig [4020 cuFuncSetSharedMemConfig];
    cuFuncGetModule [11000 cuFuncGetModule];
    cuFuncGetName [12030 cuFuncGetName];
    cuFuncIsLoaded [12040 cuFuncIsLoaded];
    cuFuncLoad [12040 cuFuncLoad];
    cuLibraryLoadData [12000 cuLibraryLoadData];
    cuLibraryLoadFromFile [12000 cuLibraryLoadFromFile];
    cuLibraryUnload [12000 cuLibraryUnload];
    cuLibraryGetKernel [12000 cuLibraryGetKernel];
    cuLibraryGetModule [12000 cuLibraryGetModule];
    cuLibraryGetGlobal [12000 cuLibraryGetGlobal];
    cuKernelGetFunction [12000 cuKernelGetFunction];
    cuKernelGetLibrary [12050 cuKernelGetLibrary];
    cuKernelGetName [12030 cuKernelGetName];
    cuKernelGetAttribute [12000 cuKernelGetAttribute];
    cuKernelSetAttribute [12000 cuKernelSetAttribute];
    cuKernelSetCacheConfig [12000 cuKernelSetCacheConfig];

    cuLaunchKernel [4000 cuLaunchKernel] [ptds 7000 cuLaunchKernel_ptsz];
    cuLaunchKernelEx [11060 cuLaunchKernelEx] [ptds 11060 cuLaunchKernelEx_ptsz];
    cuLaunchCooperativeKernel [9000 cuLaunchCooperativeKernel] [ptds 9000 cuLaunchCooperativeKernel_ptsz];
    cuLaunchHostFunc [10000 cuLaunchHostFunc] [ptds 10000 cuLaunchHostFunc_ptsz];

    cuStreamCreate [2000 cuStreamCreate];
    cuStreamCreateWithPriority [5050 cuStreamCreateWithPriority];
    cuStreamDestroy [4000 cuStreamDestroy_v2];
    cuStreamSynchronize [2000 cuStreamSynchronize] [ptds 7000 cuStreamSynchronize_ptsz];
    cuStreamQuery [2000 cuStreamQuery] [ptds 7000 cuStreamQuery_ptsz];
    cuStreamWaitEvent [3020 cuStreamWaitEvent] [ptds 7000 cuStreamWaitEvent_ptsz];
    cuStreamAddCallback [5000 cuStreamAddCallback] [ptds 7000 cuStreamAddCallback_ptsz];
    cuStreamGetPriority [5050 cuStreamGetPriority] [ptds 7000 cuStreamGetPriority_ptsz];
    cuStreamGetFlags [5050 cuStreamGetFlags] [ptds 7000 cuStreamGetFlags_ptsz];
    cuStreamGetCtx [9020 cuStreamGetCtx] [ptds 9020 cuStreamGetCtx_ptsz] [12050 cuStreamGetCtx_v2] [ptds 12050 cuStreamGetCtx_v2_ptsz];
    cuStreamGetId [12000 cuStreamGetId] [ptds 12000 cuStreamGetId_ptsz];
    cuStreamGetDevice [12080 cuStreamGetDevice] [ptds 12080 cuStreamGetDevice_ptsz];
    cuStreamIsCapturing [10000 cuStreamIsCapturing] [ptds 10000 cuStreamIsCapturing_ptsz];
    cuStreamGetCaptureInfo [10010 cuStreamGetCaptureInfo] [ptds 10010 cuStreamGetCaptureInfo_ptsz] [11030 cuStreamGetCaptureInfo_v2] [ptds 11030 cuStreamGetCaptureInfo_v2] [12030 cuStreamGetCaptureInfo_v3] [ptds 12030 cuStreamGetCaptureInfo_v3];
    cuThreadExchangeStreamCaptureMode [10010 cuThreadExchangeStreamCaptureMode];
    cuProfilerStart [4000 cuProfilerStart];
    cuProfilerStop [4000 cuProfilerStop];

    cuEventCreate [2000 cuEventCreate];
    cuEventDestroy [4000 cuEventDestroy_v2];
    cuEventRecord [2000 cuEventRecord] [ptds 7000 cuEventRecord_ptsz];
    cuEventRecordWithFlags [11010 cuEventRecordWithFlags] [ptds 11010 cuEventRecordWithFlags_ptsz];
    cuEventQuery [2000 cuEventQuery];
    cuEventSynchronize [2000 cuEventSynchronize];
    cuEventElapsedTime [2000 cuEventElapsedTime] [12080 cuEventElapsedTime_v2];

    cuOccupancyMaxActiveBlocksPerMultiprocessor [6050 cuOccupancyMaxActiveBlocksPerMultiprocessor];
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags [7000 cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags];
    cuOccupancyMaxPotentialBlockSize [6050 cuOccupancyMaxPotentialBlockSize];
    cuOccupancyMaxPotentialBlockSizeWithFlags [7000 cuOccupancyMaxPotentialBlockSizeWithFlags];
    cuOccupancyAvailableDynamicSMemPerBlock [10020 cuOccupancyAvailableDynamicSMemPerBlock];
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

/// Resolves `name` for a caller built against `version` with `flags`.
pub fn lookup(name: &str, version: i32, flags: u64) -> Lookup {
    if let Some(variants) = index().get(name) {
        let pick = |pt: bool| {
            variants
                .iter()
                .rfind(|e| e.per_thread == pt && e.version <= version)
        };
        let per_thread = flags & PER_THREAD_DEFAULT_STREAM != 0;
        let found = if per_thread {
            pick(true).or_else(|| pick(false))
        } else {
            pick(false)
        };
        return match found {
            Some(e) => Lookup::Found(e.f),
            None => Lookup::VersionNotSufficient,
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
            let known = if e.per_thread {
                pfns.contains(&format!("{pfn}_ptds")) || pfns.contains(&format!("{pfn}_ptsz"))
            } else {
                pfns.contains(&pfn)
            };
            assert!(known, "PFN_{pfn} ({}) is not in cudaTypedefs.h", e.symbol);
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
