//! Modules, libraries, kernels, functions and globals.
//!
//! `cuModuleLoadData` gets only a pointer; [`image_bytes`] finds the image's length from its
//! format (fatbin container, `__fatbinwrap` wrapper, ELF cubin, linked image, or NUL-terminated
//! PTX) and the bytes are forwarded. A version-2 wrapper (`nvcc -rdc=true`) also names the
//! translation units' prelinked fatbins: they go along as one linked image
//! (`virtio_cuda::protocol::linked`), so the cpu backend can run their PTX; the bytes are forwarded for the executor to pick what its backend runs. A library
//! (`cuLibraryLoadData`) keeps its image and is loaded as a module into each context that uses
//! it; a `CUkernel` names a library and a function and resolves to that context's function.

use std::ffi::{c_char, c_int, c_uint, c_void};

use virtio_cuda::protocol::{self as p, linked, Source, Status};

use crate::driver::{driver, Driver, FuncEntry, KernelEntry, LibraryInfo, ModuleInfo, R};
use crate::ffi::{bytes, cstr, entry, h, ptr, put};
use crate::types::{CUdevice, CUdeviceptr, Handle};

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// Largest image the shim forwards.
const MAX_IMAGE: usize = 1 << 30;

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Length of an ELF64 image from its headers (the furthest header table or section end).
unsafe fn elf_len(p: *const u8) -> R<usize> {
    // SAFETY: an ELF header is 64 bytes; the caller saw the ELF magic at `p`.
    let hdr = unsafe { bytes(p, 64) }?;
    let bad = Status::ERROR_INVALID_IMAGE;
    let phoff = read_u64(hdr, 0x20).ok_or(bad)? as usize;
    let shoff = read_u64(hdr, 0x28).ok_or(bad)? as usize;
    let phentsize = read_u16(hdr, 0x36).ok_or(bad)? as usize;
    let phnum = read_u16(hdr, 0x38).ok_or(bad)? as usize;
    let shentsize = read_u16(hdr, 0x3A).ok_or(bad)? as usize;
    let shnum = read_u16(hdr, 0x3C).ok_or(bad)? as usize;
    let mut end = 64usize
        .max(phoff.saturating_add(phentsize * phnum))
        .max(shoff.saturating_add(shentsize * shnum));
    if end > MAX_IMAGE || shentsize < 64 && shnum > 0 {
        return Err(bad);
    }
    for i in 0..shnum {
        // SAFETY: the section header table lies inside the image (its end is within `end`).
        let sh = unsafe { bytes(p.add(shoff + i * shentsize), 64) }?;
        let kind = read_u32(sh, 4).ok_or(bad)?;
        let off = read_u64(sh, 0x18).ok_or(bad)? as usize;
        let size = read_u64(sh, 0x20).ok_or(bad)? as usize;
        const SHT_NOBITS: u32 = 8;
        if kind != SHT_NOBITS {
            end = end.max(off.saturating_add(size));
        }
    }
    if end > MAX_IMAGE {
        return Err(bad);
    }
    Ok(end)
}

/// The bytes of a module image given only its address.
///
/// # Safety
/// `image` must point to a complete image of one of the supported formats.
pub unsafe fn image_bytes(image: *const c_void) -> R<Vec<u8>> {
    let p = image.cast::<u8>();
    // SAFETY: every format is at least 4 bytes long.
    let head = unsafe { bytes(p, 4) }?;
    let magic = read_u32(head, 0).ok_or(Status::ERROR_INVALID_IMAGE)?;
    let len = if magic == FATBIN_MAGIC {
        // SAFETY: a fatbin header is 16 bytes: magic, version, header size, payload size.
        let h = unsafe { bytes(p, 16) }?;
        let hs = read_u16(h, 6).ok_or(Status::ERROR_INVALID_IMAGE)? as usize;
        let fs = read_u64(h, 8).ok_or(Status::ERROR_INVALID_IMAGE)? as usize;
        hs.checked_add(fs)
            .filter(|l| *l <= MAX_IMAGE)
            .ok_or(Status::ERROR_INVALID_IMAGE)?
    } else if magic == WRAPPER_MAGIC {
        // SAFETY: the wrapper is {magic, version, data pointer, filename-or-fatbins pointer}.
        let w = unsafe { bytes(p, 24) }?;
        let version = read_u32(w, 4).ok_or(Status::ERROR_INVALID_IMAGE)?;
        let data = read_u64(w, 8).ok_or(Status::ERROR_INVALID_IMAGE)? as usize;
        if data == 0 {
            return Err(Status::ERROR_INVALID_IMAGE);
        }
        // SAFETY: the wrapper's data pointer is the fatbin it wraps.
        let primary = unsafe { image_bytes(data as *const c_void) }?;
        let prelinked = read_u64(w, 16).unwrap_or(0) as usize;
        if version != 2 || prelinked == 0 {
            return Ok(primary);
        }
        // SAFETY: version 2 (relocatable device code): a NULL-terminated array of the
        // translation units' prelinked fatbins, written by nvcc's device-link step.
        return unsafe { linked_registration(primary, prelinked as *const *const c_void) };
    } else if magic == linked::MAGIC {
        // SAFETY: a linked image's header and part table come first (linked::len).
        let header = unsafe { bytes(p, 16) }?;
        let need = match linked::len(header) {
            Err(linked::LinkedError::Truncated { needed, .. }) => needed as usize,
            _ => 16,
        };
        // SAFETY: as above, `need` covers the part table the header declares.
        let table = unsafe { bytes(p, need.min(MAX_IMAGE)) }?;
        linked::len(table)
            .ok()
            .map(|l| l as usize)
            .filter(|l| *l <= MAX_IMAGE)
            .ok_or(Status::ERROR_INVALID_IMAGE)?
    } else if head == b"\x7fELF" {
        // SAFETY: per this function's contract.
        unsafe { elf_len(p) }?
    } else {
        // PTX text: NUL-terminated.
        // SAFETY: per this function's contract the text is NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(p.cast()) }
            .to_bytes_with_nul()
            .len()
    };
    // SAFETY: the image spans `len` bytes, computed from its own headers.
    Ok(unsafe { bytes(p, len) }?.to_vec())
}

/// A relocatable-device-code registration as one linked image: the device-linked fatbin,
/// then each translation unit's prelinked fatbin (whose PTX the cpu backend joins).
///
/// # Safety
/// `units` must point to a NULL-terminated array of pointers to fatbins (or wrappers).
unsafe fn linked_registration(primary: Vec<u8>, units: *const *const c_void) -> R<Vec<u8>> {
    let mut parts = vec![primary];
    for i in 0..linked::MAX_PARTS - 1 {
        // SAFETY: per this function's contract, every element up to the NULL is readable.
        let unit = unsafe { units.add(i).read_unaligned() };
        if unit.is_null() {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            return Ok(linked::encode(&refs));
        }
        // SAFETY: a non-NULL element is a prelinked fatbin container.
        parts.push(unsafe { image_bytes(unit) }?);
        if parts.iter().map(Vec::len).sum::<usize>() > MAX_IMAGE {
            return Err(Status::ERROR_INVALID_IMAGE);
        }
    }
    Err(Status::ERROR_INVALID_IMAGE)
}

/// Loads `image` as module `module` into `ctx`.
fn load_into(d: &Driver, ctx: u64, image: Vec<u8>) -> R<u64> {
    let module = d.alloc_handle()?;
    let r = d.call(&p::ModuleLoad {
        ctx,
        module,
        image: Source::Inline(image),
    })?;
    if !r.log.is_empty() {
        tracing::debug!(module, log = %r.log, "module loaded");
    }
    d.objects_mut().modules.insert(
        module,
        ModuleInfo {
            ctx,
            ..Default::default()
        },
    );
    Ok(module)
}

fn load(out: *mut Handle, image: R<Vec<u8>>) -> R<()> {
    if out.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let d = driver()?;
    let ctx = d.current_ctx()?;
    let m = load_into(d, ctx, image?)?;
    // SAFETY: checked non-null; cuda.h: writable.
    unsafe { put(out, ptr(m)) }
}

fn file_image(path: *const c_char) -> R<Vec<u8>> {
    // SAFETY: cuda.h: a NUL-terminated path.
    let path = unsafe { cstr(path) }?;
    let mut v = std::fs::read(path).map_err(|_| Status::ERROR_FILE_NOT_FOUND)?;
    if v.first() != Some(&0x7f)
        && read_u32(&v, 0) != Some(FATBIN_MAGIC)
        && read_u32(&v, 0) != Some(linked::MAGIC)
    {
        v.push(0); // PTX text files are not NUL-terminated.
    }
    Ok(v)
}

/// The function `name` of `module`, bound once per module.
pub fn get_function(d: &Driver, module: u64, name: &str) -> R<u64> {
    let ctx = {
        let o = d.objects();
        let m = o.modules.get(&module).ok_or(Status::ERROR_INVALID_HANDLE)?;
        if let Some(f) = m.functions.get(name) {
            return Ok(*f);
        }
        m.ctx
    };
    let func = d.alloc_handle()?;
    let info = d.call(&p::ModuleGetFunction {
        ctx,
        module,
        func,
        name: name.to_string(),
    })?;
    let mut o = d.objects_mut();
    if let Some(m) = o.modules.get_mut(&module) {
        m.functions.insert(name.to_string(), func);
    }
    o.functions.insert(
        func,
        FuncEntry {
            ctx,
            module,
            name: name.to_string(),
            info,
            attrs: Vec::new(),
        },
    );
    Ok(func)
}

/// The module of library `lib` in the current context, loading it on first use.
fn library_module(d: &Driver, lib: u64) -> R<u64> {
    let ctx = d.current_ctx()?;
    let image = {
        let o = d.objects();
        let l = o.libraries.get(&lib).ok_or(Status::ERROR_INVALID_HANDLE)?;
        if let Some(m) = l.modules.get(&ctx) {
            return Ok(*m);
        }
        l.image.clone()
    };
    let m = load_into(d, ctx, image)?;
    if let Some(l) = d.objects_mut().libraries.get_mut(&lib) {
        l.modules.insert(ctx, m);
    }
    Ok(m)
}

/// The function a `CUkernel` stands for in the current context.
pub fn kernel_function(d: &Driver, kernel: u64) -> R<u64> {
    let k = d
        .objects()
        .kernels
        .get(&kernel)
        .cloned()
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    let m = library_module(d, k.library)?;
    get_function(d, m, &k.name)
}

/// A `CUfunction` or a `CUkernel` passed where a function is expected.
pub fn resolve_function(d: &Driver, f: u64) -> R<u64> {
    if d.objects().functions.contains_key(&f) {
        return Ok(f);
    }
    kernel_function(d, f)
}

/// The names of a module's kernels, in the module's order.
fn function_names(d: &Driver, module: u64) -> R<Vec<String>> {
    let ctx = d
        .objects()
        .modules
        .get(&module)
        .map(|m| m.ctx)
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    Ok(d.call(&p::ModuleGetFunctionNames { ctx, module })?.names.0)
}

/// The `CUkernel` of `name` in library `lib` (made on first use). With a context current, the
/// name is checked to exist (the function is bound then).
fn library_kernel(d: &Driver, lib: u64, name: &str) -> R<u64> {
    if let Some(k) = d
        .objects()
        .libraries
        .get(&lib)
        .and_then(|l| l.kernels.get(name))
    {
        return Ok(*k);
    }
    if d.current_ctx().is_ok() {
        let m = library_module(d, lib)?;
        get_function(d, m, name)?;
    }
    let k = d.alloc_handle()?;
    let mut o = d.objects_mut();
    let l = o
        .libraries
        .get_mut(&lib)
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    l.kernels.insert(name.to_string(), k);
    o.kernels.insert(
        k,
        KernelEntry {
            library: lib,
            name: name.to_string(),
        },
    );
    Ok(k)
}

/// `(offset, size)` of parameter `index` of function `f`.
fn param_info(d: &Driver, f: u64, index: usize) -> R<(usize, usize)> {
    let o = d.objects();
    let e = o.functions.get(&f).ok_or(Status::ERROR_INVALID_HANDLE)?;
    let p = e
        .info
        .params
        .0
        .get(index)
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    Ok((p.offset as usize, p.size as usize))
}

fn library_load(out: *mut Handle, image: R<Vec<u8>>) -> R<()> {
    if out.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let d = driver()?;
    let image = image?;
    let lib = d.alloc_handle()?;
    d.objects_mut().libraries.insert(
        lib,
        LibraryInfo {
            image,
            modules: Default::default(),
            kernels: Default::default(),
        },
    );
    // Validate eagerly when a context is current, as the driver does.
    if d.current_ctx().is_ok() {
        if let Err(e) = library_module(d, lib) {
            d.objects_mut().libraries.remove(&lib);
            return Err(e);
        }
    }
    // SAFETY: checked non-null; cuda.h: writable.
    unsafe { put(out, ptr(lib)) }
}

/// `CUfunction_attribute` values answered from [`p::FuncInfo`].
fn function_attribute(f: &FuncEntry, attrib: c_uint) -> i32 {
    if let Some((_, v)) = f.attrs.iter().find(|(a, _)| *a == attrib) {
        return *v;
    }
    let i = &f.info;
    let c = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    match attrib {
        0 => c(i.max_threads_per_block),
        1 => c(i.static_shared_bytes),
        2 => c(i.const_bytes),
        3 => c(i.local_bytes),
        4 => c(i.num_regs),
        5 => c(i.ptx_version),
        6 => c(i.binary_version),
        8 => (48 * 1024 - c(i.static_shared_bytes)).max(0),
        9 => -1,
        _ => 0,
    }
}

fn func_get_attribute(value: *mut c_int, attrib: c_uint, f: u64) -> R<()> {
    let d = driver()?;
    let f = resolve_function(d, f)?;
    let v = d
        .objects()
        .functions
        .get(&f)
        .map(|e| function_attribute(e, attrib))
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    // SAFETY: cuda.h: `value` is null or writable.
    unsafe { put(value, v) }
}

fn func_set_attribute(attrib: c_uint, value: c_int, f: u64) -> R<()> {
    let d = driver()?;
    let f = resolve_function(d, f)?;
    let ctx = {
        let mut o = d.objects_mut();
        let e = o
            .functions
            .get_mut(&f)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        e.attrs.retain(|(a, _)| *a != attrib);
        e.attrs.push((attrib, value));
        e.ctx
    };
    d.send(&p::FuncSetAttribute {
        ctx,
        func: f,
        attr: attrib,
        value,
    })
}

entry! {
    fn cuModuleLoad(module: *mut Handle, fname: *const c_char) proc(cuModuleLoad 2000) {
        load(module, file_image(fname))
    }

    fn cuModuleLoadData(module: *mut Handle, image: *const c_void) proc(cuModuleLoadData 2000) {
        load(module, image_bytes(image))
    }

    fn cuModuleLoadDataEx(module: *mut Handle, image: *const c_void, _n: c_uint, _opts: *mut c_uint, _vals: *mut *mut c_void) proc(cuModuleLoadDataEx 2010) {
        load(module, image_bytes(image))
    }

    fn cuModuleLoadFatBinary(module: *mut Handle, fatbin: *const c_void) proc(cuModuleLoadFatBinary 2000) {
        load(module, image_bytes(fatbin))
    }

    fn cuModuleUnload(module: Handle) proc(cuModuleUnload 2000) {
        let d = driver()?;
        let module = h(module);
        let m = d.objects_mut().modules.remove(&module).ok_or(Status::ERROR_INVALID_HANDLE)?;
        d.objects_mut().functions.retain(|_, f| f.module != module);
        d.send(&p::ModuleUnload { ctx: m.ctx, module })
    }

    fn cuModuleGetFunction(func: *mut Handle, module: Handle, name: *const c_char) proc(cuModuleGetFunction 2000) {
        let d = driver()?;
        if func.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let f = get_function(d, h(module), cstr(name)?)?;
        put(func, ptr(f))
    }

    fn cuModuleGetGlobal_v2(dptr: *mut CUdeviceptr, size: *mut usize, module: Handle, name: *const c_char) proc(cuModuleGetGlobal 3020) {
        let d = driver()?;
        let module = h(module);
        let ctx = d.objects().modules.get(&module).map(|m| m.ctx).ok_or(Status::ERROR_INVALID_HANDLE)?;
        let g = d.call(&p::ModuleGetGlobal { ctx, module, name: cstr(name)?.to_string() })?;
        if !dptr.is_null() {
            put(dptr, g.dptr)?;
        }
        if !size.is_null() {
            put(size, g.size as usize)?;
        }
        Ok(())
    }

    fn cuModuleGetFunctionCount(count: *mut c_uint, module: Handle) proc(cuModuleGetFunctionCount 12040) {
        let d = driver()?;
        if count.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let module = h(module);
        let ctx = d.objects().modules.get(&module).map(|m| m.ctx).ok_or(Status::ERROR_INVALID_HANDLE)?;
        put(count, d.call(&p::ModuleGetFunctionCount { ctx, module })?.count)
    }

    fn cuModuleEnumerateFunctions(functions: *mut Handle, num: c_uint, module: Handle) proc(cuModuleEnumerateFunctions 12040) {
        let d = driver()?;
        if functions.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let module = h(module);
        for (i, name) in function_names(d, module)?.iter().take(num as usize).enumerate() {
            put(functions.add(i), ptr(get_function(d, module, name)?))?;
        }
        Ok(())
    }

    fn cuFuncGetParamInfo(func: Handle, index: usize, offset: *mut usize, size: *mut usize) proc(cuFuncGetParamInfo 12040) {
        let d = driver()?;
        let (o, s) = param_info(d, resolve_function(d, h(func))?, index)?;
        put(offset, o)?;
        put(size, s)
    }

    fn cuModuleGetLoadingMode(mode: *mut c_uint) proc(cuModuleGetLoadingMode 11070) {
        put(mode, 1) // CU_MODULE_EAGER_LOADING
    }

    fn cuFuncGetAttribute(value: *mut c_int, attrib: c_uint, func: Handle) proc(cuFuncGetAttribute 2020) {
        func_get_attribute(value, attrib, h(func))
    }

    fn cuFuncSetAttribute(func: Handle, attrib: c_uint, value: c_int) proc(cuFuncSetAttribute 9000) {
        func_set_attribute(attrib, value, h(func))
    }

    fn cuFuncSetCacheConfig(func: Handle, _config: c_uint) proc(cuFuncSetCacheConfig 3000) {
        resolve_function(driver()?, h(func)).map(|_| ())
    }

    fn cuFuncSetSharedMemConfig(func: Handle, _config: c_uint) proc(cuFuncSetSharedMemConfig 4020) {
        resolve_function(driver()?, h(func)).map(|_| ())
    }

    fn cuFuncGetModule(module: *mut Handle, func: Handle) proc(cuFuncGetModule 11000) {
        let d = driver()?;
        let m = d.objects().functions.get(&h(func)).map(|f| f.module).ok_or(Status::ERROR_INVALID_HANDLE)?;
        put(module, ptr(m))
    }

    fn cuFuncGetName(name: *mut *const c_char, func: Handle) proc(cuFuncGetName 12030) {
        let d = driver()?;
        let n = d.objects().functions.get(&h(func)).map(|f| f.name.clone()).ok_or(Status::ERROR_INVALID_HANDLE)?;
        put(name, leak_cstr(&n))
    }

    fn cuFuncIsLoaded(state: *mut c_uint, func: Handle) proc(cuFuncIsLoaded 12040) {
        resolve_function(driver()?, h(func))?;
        put(state, 1) // CU_FUNCTION_LOADING_STATE_LOADED
    }

    fn cuFuncLoad(func: Handle) proc(cuFuncLoad 12040) {
        resolve_function(driver()?, h(func)).map(|_| ())
    }

    fn cuLibraryLoadData(lib: *mut Handle, code: *const c_void, _jo: *mut c_uint, _jv: *mut *mut c_void, _nj: c_uint, _lo: *mut c_uint, _lv: *mut *mut c_void, _nl: c_uint) proc(cuLibraryLoadData 12000) {
        library_load(lib, image_bytes(code))
    }

    fn cuLibraryLoadFromFile(lib: *mut Handle, fname: *const c_char, _jo: *mut c_uint, _jv: *mut *mut c_void, _nj: c_uint, _lo: *mut c_uint, _lv: *mut *mut c_void, _nl: c_uint) proc(cuLibraryLoadFromFile 12000) {
        library_load(lib, file_image(fname))
    }

    fn cuLibraryUnload(lib: Handle) proc(cuLibraryUnload 12000) {
        let d = driver()?;
        let l = d.objects_mut().libraries.remove(&h(lib)).ok_or(Status::ERROR_INVALID_HANDLE)?;
        for (ctx, module) in l.modules {
            d.objects_mut().modules.remove(&module);
            d.objects_mut().functions.retain(|_, f| f.module != module);
            d.send(&p::ModuleUnload { ctx, module })?;
        }
        d.objects_mut().kernels.retain(|_, k| k.library != h(lib));
        Ok(())
    }

    fn cuLibraryGetKernel(kernel: *mut Handle, lib: Handle, name: *const c_char) proc(cuLibraryGetKernel 12000) {
        let d = driver()?;
        let name = cstr(name)?;
        if kernel.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        put(kernel, ptr(library_kernel(d, h(lib), name)?))
    }

    // The kernels of a library are those of its module in the current context (the shim loads
    // a library into each context on first use), so these two need a current context.
    fn cuLibraryGetKernelCount(count: *mut c_uint, lib: Handle) proc(cuLibraryGetKernelCount 12040) {
        let d = driver()?;
        if count.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let module = library_module(d, h(lib))?;
        let ctx = d.current_ctx()?;
        put(count, d.call(&p::ModuleGetFunctionCount { ctx, module })?.count)
    }

    fn cuLibraryEnumerateKernels(kernels: *mut Handle, num: c_uint, lib: Handle) proc(cuLibraryEnumerateKernels 12040) {
        let d = driver()?;
        if kernels.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let lib = h(lib);
        let module = library_module(d, lib)?;
        for (i, name) in function_names(d, module)?.iter().take(num as usize).enumerate() {
            put(kernels.add(i), ptr(library_kernel(d, lib, name)?))?;
        }
        Ok(())
    }

    fn cuKernelGetParamInfo(kernel: Handle, index: usize, offset: *mut usize, size: *mut usize) proc(cuKernelGetParamInfo 12040) {
        let d = driver()?;
        let (o, s) = param_info(d, resolve_function(d, h(kernel))?, index)?;
        put(offset, o)?;
        put(size, s)
    }

    fn cuLibraryGetModule(module: *mut Handle, lib: Handle) proc(cuLibraryGetModule 12000) {
        let d = driver()?;
        let m = library_module(d, h(lib))?;
        put(module, ptr(m))
    }

    fn cuKernelGetFunction(func: *mut Handle, kernel: Handle) proc(cuKernelGetFunction 12000) {
        let d = driver()?;
        let f = kernel_function(d, h(kernel))?;
        put(func, ptr(f))
    }

    fn cuKernelGetLibrary(lib: *mut Handle, kernel: Handle) proc(cuKernelGetLibrary 12050) {
        let d = driver()?;
        let l = d.objects().kernels.get(&h(kernel)).map(|k| k.library).ok_or(Status::ERROR_INVALID_HANDLE)?;
        put(lib, ptr(l))
    }

    fn cuKernelGetName(name: *mut *const c_char, kernel: Handle) proc(cuKernelGetName 12030) {
        let d = driver()?;
        let n = d.objects().kernels.get(&h(kernel)).map(|k| k.name.clone()).ok_or(Status::ERROR_INVALID_HANDLE)?;
        put(name, leak_cstr(&n))
    }

    fn cuLibraryGetGlobal(dptr: *mut CUdeviceptr, size: *mut usize, lib: Handle, name: *const c_char) proc(cuLibraryGetGlobal 12000) {
        let d = driver()?;
        let module = library_module(d, h(lib))?;
        let ctx = d.current_ctx()?;
        let g = d.call(&p::ModuleGetGlobal { ctx, module, name: cstr(name)?.to_string() })?;
        if !dptr.is_null() {
            put(dptr, g.dptr)?;
        }
        if !size.is_null() {
            put(size, g.size as usize)?;
        }
        Ok(())
    }

    fn cuKernelGetAttribute(value: *mut c_int, attrib: c_uint, kernel: Handle, _dev: CUdevice) proc(cuKernelGetAttribute 12000) {
        func_get_attribute(value, attrib, h(kernel))
    }

    fn cuKernelSetAttribute(attrib: c_uint, value: c_int, kernel: Handle, _dev: CUdevice) proc(cuKernelSetAttribute 12000) {
        func_set_attribute(attrib, value, h(kernel))
    }

    fn cuKernelSetCacheConfig(kernel: Handle, _config: c_uint, _dev: CUdevice) proc(cuKernelSetCacheConfig 12000) {
        resolve_function(driver()?, h(kernel)).map(|_| ())
    }
}

/// A C string that lives as long as the process (names handed out by `cuFuncGetName`).
fn leak_cstr(s: &str) -> *const c_char {
    std::ffi::CString::new(s)
        .map(|c| Box::leak(c.into_boxed_c_str()).as_ptr())
        .unwrap_or(std::ptr::null())
}
