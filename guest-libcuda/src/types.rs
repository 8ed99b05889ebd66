//! The C types of the driver API that the shim's exported functions take.
//!
//! The layouts are those of `cuda.h`; the tests below check every struct field by field against
//! cudarc's `driver::sys` (bindgen output of the real header), which is the source of truth.
//! Enum-typed fields and parameters are plain integers here: an application may pass a value a
//! newer header defines, and a Rust enum holding an unknown discriminant would be undefined
//! behaviour.

use std::ffi::{c_int, c_uint, c_void};

/// `CUresult`.
pub type CUresult = c_uint;
/// `CUdevice`: a device ordinal.
pub type CUdevice = c_int;
/// `CUdeviceptr`: an address in the session's device VA range.
pub type CUdeviceptr = u64;
/// `CUcontext`, `CUstream`, `CUevent`, `CUmodule`, `CUfunction`, `CUlibrary`, `CUkernel`: the
/// client-side handle id, carried as the pointer value.
pub type Handle = *mut c_void;

/// `CUmemorytype` values.
pub const MEMORYTYPE_HOST: c_uint = 1;
pub const MEMORYTYPE_DEVICE: c_uint = 2;
pub const MEMORYTYPE_ARRAY: c_uint = 3;
pub const MEMORYTYPE_UNIFIED: c_uint = 4;

/// `CUuuid`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CuUuid {
    pub bytes: [u8; 16],
}

/// `CUDA_MEMCPY2D` (`_v2`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct Memcpy2D {
    pub srcXInBytes: usize,
    pub srcY: usize,
    pub srcMemoryType: c_uint,
    pub srcHost: *const c_void,
    pub srcDevice: CUdeviceptr,
    pub srcArray: *mut c_void,
    pub srcPitch: usize,
    pub dstXInBytes: usize,
    pub dstY: usize,
    pub dstMemoryType: c_uint,
    pub dstHost: *mut c_void,
    pub dstDevice: CUdeviceptr,
    pub dstArray: *mut c_void,
    pub dstPitch: usize,
    pub WidthInBytes: usize,
    pub Height: usize,
}

/// `CUDA_MEMCPY3D` (`_v2`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct Memcpy3D {
    pub srcXInBytes: usize,
    pub srcY: usize,
    pub srcZ: usize,
    pub srcLOD: usize,
    pub srcMemoryType: c_uint,
    pub srcHost: *const c_void,
    pub srcDevice: CUdeviceptr,
    pub srcArray: *mut c_void,
    pub reserved0: *mut c_void,
    pub srcPitch: usize,
    pub srcHeight: usize,
    pub dstXInBytes: usize,
    pub dstY: usize,
    pub dstZ: usize,
    pub dstLOD: usize,
    pub dstMemoryType: c_uint,
    pub dstHost: *mut c_void,
    pub dstDevice: CUdeviceptr,
    pub dstArray: *mut c_void,
    pub reserved1: *mut c_void,
    pub dstPitch: usize,
    pub dstHeight: usize,
    pub WidthInBytes: usize,
    pub Height: usize,
    pub Depth: usize,
}

/// `CUlaunchAttribute`: an id, padding, and a 64-byte value union (read as words here).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LaunchAttribute {
    pub id: c_uint,
    pub pad: [u8; 4],
    pub value: [u64; 8],
}

/// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`.
pub const LAUNCH_ATTRIBUTE_COOPERATIVE: c_uint = 2;

/// `CUlaunchConfig`.
/// `CUctxCreateParams` (CUDA 12.5+): all-zero means a plain context.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct CtxCreateParams {
    pub execAffinityParams: *const std::ffi::c_void,
    pub numExecAffinityParams: std::ffi::c_int,
    pub cigParams: *const std::ffi::c_void,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_snake_case)]
pub struct LaunchConfig {
    pub gridDimX: c_uint,
    pub gridDimY: c_uint,
    pub gridDimZ: c_uint,
    pub blockDimX: c_uint,
    pub blockDimY: c_uint,
    pub blockDimZ: c_uint,
    pub sharedMemBytes: c_uint,
    pub hStream: Handle,
    pub attrs: *const LaunchAttribute,
    pub numAttrs: c_uint,
}

/// `CU_LAUNCH_PARAM_END`, `CU_LAUNCH_PARAM_BUFFER_POINTER`, `CU_LAUNCH_PARAM_BUFFER_SIZE`: the
/// markers of `cuLaunchKernel`'s `extra` array.
pub const LAUNCH_PARAM_END: usize = 0x00;
pub const LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
pub const LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;

/// `CUhostFn`: a host callback (`cuLaunchHostFunc`).
pub type HostFn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;
/// `CUstreamCallback` (`cuStreamAddCallback`).
pub type StreamCallback =
    Option<unsafe extern "C" fn(stream: Handle, status: CUresult, user_data: *mut c_void)>;

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::driver::sys;
    use std::mem::{align_of, offset_of, size_of};

    macro_rules! same_layout {
        ($ours:ty, $theirs:ty, [$($f:ident),* $(,)?]) => {{
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), "size of {}", stringify!($ours));
            assert_eq!(align_of::<$ours>(), align_of::<$theirs>(), "align of {}", stringify!($ours));
            $(assert_eq!(
                offset_of!($ours, $f),
                offset_of!($theirs, $f),
                "offset of {}::{}", stringify!($ours), stringify!($f)
            );)*
        }};
    }

    #[test]
    fn structs_match_cuda_h() {
        same_layout!(CuUuid, sys::CUuuid, [bytes]);
        same_layout!(
            CtxCreateParams,
            sys::CUctxCreateParams,
            [execAffinityParams, numExecAffinityParams, cigParams]
        );
        same_layout!(
            Memcpy2D,
            sys::CUDA_MEMCPY2D,
            [
                srcXInBytes,
                srcY,
                srcMemoryType,
                srcHost,
                srcDevice,
                srcArray,
                srcPitch,
                dstXInBytes,
                dstY,
                dstMemoryType,
                dstHost,
                dstDevice,
                dstArray,
                dstPitch,
                WidthInBytes,
                Height
            ]
        );
        same_layout!(
            Memcpy3D,
            sys::CUDA_MEMCPY3D,
            [
                srcXInBytes,
                srcY,
                srcZ,
                srcLOD,
                srcMemoryType,
                srcHost,
                srcDevice,
                srcArray,
                reserved0,
                srcPitch,
                srcHeight,
                dstXInBytes,
                dstY,
                dstZ,
                dstLOD,
                dstMemoryType,
                dstHost,
                dstDevice,
                dstArray,
                reserved1,
                dstPitch,
                dstHeight,
                WidthInBytes,
                Height,
                Depth
            ]
        );
        same_layout!(LaunchAttribute, sys::CUlaunchAttribute, [id, pad, value]);
        same_layout!(
            LaunchConfig,
            sys::CUlaunchConfig,
            [
                gridDimX,
                gridDimY,
                gridDimZ,
                blockDimX,
                blockDimY,
                blockDimZ,
                sharedMemBytes,
                hStream,
                attrs,
                numAttrs
            ]
        );
    }

    #[test]
    fn constants_match_cuda_h() {
        assert_eq!(
            MEMORYTYPE_UNIFIED,
            sys::CUmemorytype::CU_MEMORYTYPE_UNIFIED as c_uint
        );
        assert_eq!(
            LAUNCH_ATTRIBUTE_COOPERATIVE,
            sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE as c_uint
        );
    }
}
