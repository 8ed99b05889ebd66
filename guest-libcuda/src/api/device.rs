//! Initialisation, versions, devices and error strings.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, CString};
use std::sync::{Mutex, OnceLock};

use virtio_cuda::protocol::Status;

use crate::driver::{self, driver, DEFAULT_DRIVER_VERSION};
use crate::ffi::{cstr, entry, put, put_str};
use crate::types::{CUdevice, CUresult, CuUuid};

/// `CU_DEVICE_ATTRIBUTE_*` numbers the shim answers itself.
const ATTR_PCI_BUS_ID: u32 = 33;
const ATTR_PCI_DEVICE_ID: u32 = 34;
const ATTR_PCI_DOMAIN_ID: u32 = 50;
const ATTR_COMPUTE_CAPABILITY_MAJOR: u32 = 75;
const ATTR_COMPUTE_CAPABILITY_MINOR: u32 = 76;
const ATTR_MANAGED_MEMORY: u32 = 83;
const ATTR_CONCURRENT_MANAGED_ACCESS: u32 = 89;
/// Attribute numbers beyond the highest `cuda.h` defines are rejected like the driver does.
const ATTR_MAX: u32 = 256;

/// The driver version reported to applications: the executor's, at least 13000.
pub fn driver_version() -> i32 {
    driver::driver_if_open()
        .map(|d| d.init.driver_version)
        .unwrap_or(DEFAULT_DRIVER_VERSION)
        .max(DEFAULT_DRIVER_VERSION)
}

fn check_device(dev: CUdevice) -> driver::R<&'static driver::Driver> {
    let d = driver()?;
    d.device(dev)?;
    Ok(d)
}

/// C strings for `cuGetErrorName`/`cuGetErrorString`, created once per code and kept forever.
fn error_strings(code: CUresult) -> Option<(*const c_char, *const c_char)> {
    static CACHE: OnceLock<Mutex<HashMap<u32, (&'static CString, &'static CString)>>> =
        OnceLock::new();
    let status = Status(code);
    let (name, desc) = (status.name()?, status.description()?);
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (n, d) = *cache.entry(code).or_insert_with(|| {
        let leak = |s: &str| -> &'static CString {
            Box::leak(Box::new(CString::new(s).unwrap_or_default()))
        };
        (leak(name), leak(desc))
    });
    Some((n.as_ptr(), d.as_ptr()))
}

entry! {
    fn cuInit(flags: c_uint) proc(cuInit 2000) {
        if flags != 0 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        driver::init().map(|_| ())
    }

    fn cuDriverGetVersion(version: *mut c_int) proc(cuDriverGetVersion 2020) {
        put(version, driver_version())
    }

    fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) proc(cuDeviceGet 2000) {
        check_device(ordinal)?;
        put(device, ordinal)
    }

    fn cuDeviceGetCount(count: *mut c_int) proc(cuDeviceGetCount 2000) {
        let n = driver()?.devices.len();
        put(count, c_int::try_from(n).unwrap_or(c_int::MAX))
    }

    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) proc(cuDeviceGetName 2000) {
        let d = driver()?.device(dev)?;
        put_str(name, len, &d.name)
    }

    fn cuDeviceGetUuid(uuid: *mut CuUuid, dev: CUdevice) proc(cuDeviceGetUuid 9020) {
        let d = driver()?.device(dev)?;
        put(uuid, CuUuid { bytes: d.uuid })
    }

    fn cuDeviceGetUuid_v2(uuid: *mut CuUuid, dev: CUdevice) proc(cuDeviceGetUuid 11040) {
        let d = driver()?.device(dev)?;
        put(uuid, CuUuid { bytes: d.uuid })
    }

    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) proc(cuDeviceTotalMem 3020) {
        let d = driver()?.device(dev)?;
        put(bytes, usize::try_from(d.total_mem).unwrap_or(usize::MAX))
    }

    fn cuDeviceGetAttribute(value: *mut c_int, attrib: c_uint, dev: CUdevice) proc(cuDeviceGetAttribute 2000) {
        let d = check_device(dev)?;
        if attrib == 0 || attrib >= ATTR_MAX {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let v = match attrib {
            // Managed memory is emulated with coherence at synchronisation points only.
            ATTR_MANAGED_MEMORY => 1,
            ATTR_CONCURRENT_MANAGED_ACCESS => 0,
            a => d.attribute(dev, a)?,
        };
        put(value, v)
    }

    fn cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: CUdevice) proc(cuDeviceComputeCapability 2000) {
        let d = check_device(dev)?;
        put(major, d.attribute(dev, ATTR_COMPUTE_CAPABILITY_MAJOR)?)?;
        put(minor, d.attribute(dev, ATTR_COMPUTE_CAPABILITY_MINOR)?)
    }

    fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: c_int, dev: CUdevice) proc(cuDeviceGetPCIBusId 4010) {
        let d = check_device(dev)?;
        let s = format!(
            "{:08x}:{:02x}:{:02x}.0",
            d.attribute(dev, ATTR_PCI_DOMAIN_ID)?,
            d.attribute(dev, ATTR_PCI_BUS_ID)?,
            d.attribute(dev, ATTR_PCI_DEVICE_ID)?
        );
        put_str(bus_id, len, &s)
    }

    fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, bus_id: *const c_char) proc(cuDeviceGetByPCIBusId 4010) {
        let want = cstr(bus_id)?.to_ascii_lowercase();
        let d = driver()?;
        for i in 0..d.devices.len() {
            let i = c_int::try_from(i).unwrap_or(c_int::MAX);
            let s = format!(
                "{:08x}:{:02x}:{:02x}.0",
                d.attribute(i, ATTR_PCI_DOMAIN_ID)?,
                d.attribute(i, ATTR_PCI_BUS_ID)?,
                d.attribute(i, ATTR_PCI_DEVICE_ID)?
            );
            if s == want || s.ends_with(&want) {
                return put(dev, i);
            }
        }
        Err(Status::ERROR_INVALID_DEVICE)
    }

    fn cuDeviceCanAccessPeer(can: *mut c_int, dev: CUdevice, peer: CUdevice) proc(cuDeviceCanAccessPeer 4000) {
        check_device(dev)?;
        check_device(peer)?;
        put(can, 0)
    }

    fn cuDeviceGetP2PAttribute(value: *mut c_int, _attrib: c_uint, src: CUdevice, dst: CUdevice) proc(cuDeviceGetP2PAttribute 8000) {
        check_device(src)?;
        check_device(dst)?;
        put(value, 0)
    }

    fn cuDeviceGetExecAffinitySupport(pi: *mut c_int, _kind: c_uint, dev: CUdevice) proc(cuDeviceGetExecAffinitySupport 11040) {
        check_device(dev)?;
        put(pi, 0)
    }

    fn cuFlushGPUDirectRDMAWrites(_target: c_uint, _scope: c_uint) proc(cuFlushGPUDirectRDMAWrites 11030) {
        Ok(())
    }

    fn cuGetErrorName(error: CUresult, out: *mut *const c_char) proc(cuGetErrorName 6000) {
        match error_strings(error) {
            Some((name, _)) => put(out, name),
            None => {
                put(out, std::ptr::null())?;
                Err(Status::ERROR_INVALID_VALUE)
            }
        }
    }

    fn cuGetErrorString(error: CUresult, out: *mut *const c_char) proc(cuGetErrorString 6000) {
        match error_strings(error) {
            Some((_, desc)) => put(out, desc),
            None => {
                put(out, std::ptr::null())?;
                Err(Status::ERROR_INVALID_VALUE)
            }
        }
    }

    fn cuDeviceGetLuid(_luid: *mut c_char, _mask: *mut c_uint, dev: CUdevice) proc(cuDeviceGetLuid 10000) {
        check_device(dev)?;
        Err(Status::ERROR_NOT_SUPPORTED)
    }

    fn cuDeviceGetTexture1DLinearMaxWidth(max: *mut usize, _format: c_uint, _channels: c_uint, dev: CUdevice) proc(cuDeviceGetTexture1DLinearMaxWidth 11010) {
        check_device(dev)?;
        put(max, 1 << 27)
    }
}
