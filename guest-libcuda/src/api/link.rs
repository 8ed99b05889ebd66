//! The driver's linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`, `cuLinkComplete`,
//! `cuLinkDestroy`), as JIT users (numba, cuFFT's callbacks, `-rdc` programs) drive it.
//!
//! The linked image is PTX, not SASS: PTX inputs are joined into one module (one `.version` — the
//! newest of the inputs —, the first `.target`, `.address_size 64`, then every input's body; a
//! `.extern .func` of one input resolves against another's definition when the module loads). A
//! link of a single input of any kind returns that input. Both backends load PTX, so
//! `cuModuleLoadData` on the result works everywhere; binary inputs (`CUBIN`, `FATBINARY`,
//! `OBJECT`, `LIBRARY`) cannot be joined without a device linker and make `cuLinkComplete`
//! answer `CUDA_ERROR_NOT_SUPPORTED` when there is more than one input.

use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tracing::warn;
use virtio_cuda::protocol::Status;

use crate::driver::{driver, R};
use crate::ffi::{bytes, cstr, entry, put};

/// `CUjitInputType`.
const INPUT_PTX: c_uint = 1;
const INPUT_LIBRARY: c_uint = 4;
const INPUT_NVVM: c_uint = 5;
/// The most bytes one link may hold (inputs and output together).
const MAX_LINK_BYTES: usize = 1 << 30;
/// The most live link states of a process.
const MAX_LINKS: usize = 1 << 12;

/// One input: its `CUjitInputType` and bytes (PTX without its trailing NULs).
struct Input {
    kind: c_uint,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct LinkState {
    inputs: Vec<Input>,
    /// The completed image, kept for the caller until `cuLinkDestroy` (NUL-terminated PTX).
    output: Option<Vec<u8>>,
}

impl LinkState {
    fn held(&self) -> usize {
        self.inputs.iter().map(|i| i.bytes.len()).sum::<usize>()
            + self.output.as_ref().map_or(0, Vec::len)
    }
}

fn states() -> MutexGuard<'static, HashMap<usize, LinkState>> {
    static STATES: OnceLock<Mutex<HashMap<usize, LinkState>>> = OnceLock::new();
    STATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The linker's handles: never 0, never reused.
fn next_handle() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0x11_0000);
    NEXT.fetch_add(0x10, Ordering::Relaxed)
}

fn add(state: *mut c_void, kind: c_uint, mut data: Vec<u8>) -> R<()> {
    if kind == INPUT_NVVM {
        // LTO IR needs nvJitLink's optimiser: not a driver input here.
        return Err(Status::ERROR_NOT_SUPPORTED);
    }
    if kind > INPUT_LIBRARY {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    if kind == INPUT_PTX {
        while data.last() == Some(&0) {
            data.pop();
        }
        if std::str::from_utf8(&data).is_err() {
            return Err(Status::ERROR_INVALID_PTX);
        }
    }
    let mut all = states();
    let s = all
        .get_mut(&(state as usize))
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    if s.held().saturating_add(data.len()) > MAX_LINK_BYTES {
        return Err(Status::ERROR_OUT_OF_MEMORY);
    }
    s.inputs.push(Input { kind, bytes: data });
    Ok(())
}

/// `.version x.y` as a comparable pair.
fn version_of(line: &str) -> Option<(u32, u32)> {
    let v = line.trim().strip_prefix(".version")?.trim();
    let (a, b) = v.split_once('.')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Joins PTX modules into one (see the module doc).
fn join_ptx(inputs: &[Input]) -> Vec<u8> {
    let mut version: Option<(u32, u32)> = None;
    let mut target: Option<String> = None;
    let mut bodies = String::new();
    for input in inputs {
        let text = String::from_utf8_lossy(&input.bytes);
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with(".version") {
                if let Some(v) = version_of(t) {
                    version = Some(version.map_or(v, |old| old.max(v)));
                }
            } else if t.starts_with(".target") {
                target.get_or_insert_with(|| t.to_string());
            } else if !t.starts_with(".address_size") {
                bodies.push_str(line);
                bodies.push('\n');
            }
        }
    }
    let (major, minor) = version.unwrap_or((8, 0));
    let target = target.unwrap_or_else(|| ".target sm_80".into());
    let mut out =
        format!(".version {major}.{minor}\n{target}\n.address_size 64\n{bodies}").into_bytes();
    out.push(0);
    out
}

entry! {
    fn cuLinkCreate_v2(_num_options: c_uint, _options: *mut c_uint, _values: *mut *mut c_void, state: *mut *mut c_void) proc(cuLinkCreate 5050, 6050) {
        driver()?;
        if state.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        // JIT options (log buffers, optimisation level, target) do not change a PTX join.
        let mut all = states();
        if all.len() >= MAX_LINKS {
            return Err(Status::ERROR_OUT_OF_MEMORY);
        }
        let h = next_handle();
        all.insert(h, LinkState::default());
        put(state, h as *mut c_void)
    }

    fn cuLinkAddData_v2(state: *mut c_void, kind: c_uint, data: *mut c_void, size: usize, _name: *const c_char, _num_options: c_uint, _options: *mut c_uint, _values: *mut *mut c_void) proc(cuLinkAddData 5050, 6050) {
        if data.is_null() || size == 0 || size > MAX_LINK_BYTES {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        // SAFETY: cuda.h: `data` points to `size` bytes.
        let bytes = unsafe { bytes(data.cast::<u8>(), size) }?.to_vec();
        add(state, kind, bytes)
    }

    fn cuLinkAddFile_v2(state: *mut c_void, kind: c_uint, path: *const c_char, _num_options: c_uint, _options: *mut c_uint, _values: *mut *mut c_void) proc(cuLinkAddFile 5050, 6050) {
        // SAFETY: cuda.h: a NUL-terminated path.
        let path = unsafe { cstr(path) }?;
        let meta = std::fs::metadata(path).map_err(|_| Status::ERROR_FILE_NOT_FOUND)?;
        if meta.len() > MAX_LINK_BYTES as u64 {
            return Err(Status::ERROR_OUT_OF_MEMORY);
        }
        let bytes = std::fs::read(path).map_err(|_| Status::ERROR_FILE_NOT_FOUND)?;
        add(state, kind, bytes)
    }

    fn cuLinkComplete(state: *mut c_void, image: *mut *mut c_void, size: *mut usize) proc(cuLinkComplete 5050) {
        if image.is_null() || size.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let mut all = states();
        let s = all.get_mut(&(state as usize)).ok_or(Status::ERROR_INVALID_HANDLE)?;
        let out = match s.inputs.as_slice() {
            [] => return Err(Status::ERROR_INVALID_VALUE),
            [one] if one.kind != INPUT_PTX => one.bytes.clone(),
            inputs if inputs.iter().all(|i| i.kind == INPUT_PTX) => join_ptx(inputs),
            _ => {
                warn!("vcuda: cuLinkComplete: only PTX inputs can be linked together here (a binary input came with others)");
                return Err(Status::ERROR_NOT_SUPPORTED);
            }
        };
        let out = s.output.insert(out);
        put(image, out.as_mut_ptr().cast::<c_void>())?;
        put(size, out.len())
    }

    fn cuLinkDestroy(state: *mut c_void) proc(cuLinkDestroy 5050) {
        states()
            .remove(&(state as usize))
            .map(|_| ())
            .ok_or(Status::ERROR_INVALID_HANDLE)
    }
}
