//! The driver's linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`, `cuLinkComplete`,
//! `cuLinkDestroy`), as JIT users (numba, cuFFT's callbacks, `-rdc` programs) drive it.
//!
//! A link of a single input returns that input. Otherwise the result is a linked image
//! (`virtio_cuda::protocol::linked`: an empty part 0, then the inputs in order), which
//! `cuModuleLoadData` forwards as it is: the executor joins the inputs' PTX into one module (one
//! `.version` — the newest of the inputs —, the first `.target`, `.address_size 64`, then every
//! input's body; a `.extern .func` of one input resolves against another's definition). PTX
//! inputs and fatbins that carry PTX link that way on both backends; an input without PTX (a
//! lone cubin) contributes nothing. Libraries (`CU_JIT_INPUT_LIBRARY`, e.g. `cudadevrt`) are
//! archives of device code, not images: they are left out, logged at debug, and a kernel that
//! needed them fails to load naming the missing function.

use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tracing::debug;
use virtio_cuda::protocol::{linked, Status};

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
    /// The completed image, kept for the caller until `cuLinkDestroy`.
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
    if s.inputs.len() >= linked::MAX_PARTS - 1
        || s.held().saturating_add(data.len()) > MAX_LINK_BYTES
    {
        return Err(Status::ERROR_OUT_OF_MEMORY);
    }
    s.inputs.push(Input { kind, bytes: data });
    Ok(())
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
        let images: Vec<&Input> = s
            .inputs
            .iter()
            .filter(|i| {
                let keep = i.kind != INPUT_LIBRARY;
                if !keep {
                    debug!("cuLinkComplete: a library input (an archive of device code) is left out");
                }
                keep
            })
            .collect();
        let out = match images.as_slice() {
            [] => return Err(Status::ERROR_INVALID_VALUE),
            [one] if one.kind != INPUT_PTX => one.bytes.clone(),
            [one] => {
                let mut ptx = one.bytes.clone();
                ptx.push(0);
                ptx
            }
            inputs => {
                let parts: Vec<&[u8]> = std::iter::once(&[][..])
                    .chain(inputs.iter().map(|i| i.bytes.as_slice()))
                    .collect();
                linked::encode(&parts)
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
