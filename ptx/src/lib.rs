//! `vcuda-ptx`: the PTX front end and CPU interpreter of vcuda's `cpu` backend.
//!
//! PTX text → [`lexer`](crate::lexer) → [`parser`](crate::parser) (syntax tree) →
//! [`lower`](crate::lower) (typed, pre-decoded IR with resolved registers, labels and reconvergence
//! points, through the per-instruction context of [`fncx`](crate::fncx)) →
//! [`exec`](crate::exec) (warps of 32 lanes, SIMT stack, cooperative block scheduling for barriers,
//! blocks in parallel with rayon, over the state in [`warp`](crate::warp)). Instructions live one
//! family per module under [`ops`](crate::ops). Device global memory is an [`memory::Arena`].
//!
//! ```
//! use std::sync::Arc;
//! use vcuda_ptx::{launch, memory::Arena, LaunchConfig, LaunchOptions, LoadedModule, Module};
//! let ptx = ".version 8.0\n.target sm_80\n.address_size 64\n\
//!     .visible .entry k(.param .u64 p) { .reg .b64 %rd<2>; .reg .b32 %r<2>;\n\
//!     ld.param.u64 %rd1, [p]; mov.u32 %r1, %tid.x; st.global.u32 [%rd1], %r1; ret; }";
//! let arena = Arena::new(0x1_0000_0000, 1 << 30);
//! let m = LoadedModule::load(Arc::new(Module::parse(ptx).unwrap()), &arena).unwrap();
//! let buf = arena.alloc(4, 4).unwrap();
//! let cfg = LaunchConfig { grid: [1, 1, 1], block: [1, 1, 1], dynamic_shared_bytes: 0 };
//! let opts = LaunchOptions {
//!     instruction_budget: 1 << 20,
//!     printf: &|s| print!("{s}"),
//!     parallel: false,
//!     time_limit: None,
//!     cancel: None,
//! };
//! launch(&m, "k", &cfg, &buf.to_le_bytes(), &arena, &opts).unwrap();
//! ```

#![deny(clippy::undocumented_unsafe_blocks)]
// Lane loops index several per-lane arrays in lockstep (`o[l] = f(a[l], b[l])`); that shape is
// what the compiler vectorises, so the iterator rewrite clippy suggests is not wanted here.
#![allow(clippy::needless_range_loop)]
// `ExecError` has variants owning strings, so building one eagerly (`ok_or(ExecError::…)`) costs a
// drop on every successful memory access; the hot paths use `ok_or_else` on purpose.
#![allow(clippy::unnecessary_lazy_evaluations)]

mod ast;
mod cfg;
mod error;
mod exec;
mod fncx;
mod ir;
mod lexer;
mod lower;
pub mod memory;
mod num;
mod ops;
mod parser;
mod warp;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use ast::StateSpace;
pub use error::{ExecError, LoadError, MemError, PtxError};
pub use memory::{LOCAL_LIMIT, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, WINDOW_BASE};

use ir::Sym;
use memory::Arena;
use ops::Func;

/// Most threads per block (compute capability 8.0).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Most static shared memory per block.
pub const MAX_STATIC_SHARED: u64 = 48 * 1024;
/// Most static + dynamic shared memory per block (the opt-in limit).
pub const MAX_TOTAL_SHARED: u64 = 99 * 1024;

/// Layout of one kernel parameter in the packed parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamInfo {
    /// Byte offset in the buffer.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// Alignment in bytes.
    pub align: u32,
}

/// What the host needs to know about a kernel (`cuFuncGetAttribute`, parameter packing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// Entry name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<ParamInfo>,
    /// Static shared memory (bytes) of the kernel and the functions it calls.
    pub static_shared_bytes: u32,
    /// From `.maxntid`/`.reqntid`.
    pub max_threads_per_block: Option<u32>,
    /// `.reqntid` if present: the block shape the kernel requires.
    pub required_block: Option<[u32; 3]>,
    /// Registers used by the kernel body (an estimate of the GPU's count).
    pub num_regs: u32,
    /// Per-thread local memory of the kernel frame, bytes.
    pub local_bytes: u32,
}

/// State space of a module variable visible to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalSpace {
    /// `.global`
    Global,
    /// `.const`
    Const,
}

/// A `.global` or `.const` module variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Name (`cuModuleGetGlobal`).
    pub name: String,
    /// Space.
    pub space: GlobalSpace,
    /// Size in bytes.
    pub size: u64,
    /// Alignment in bytes.
    pub align: u64,
    /// Initial bytes: a prefix of the variable (the rest is zero). Symbol addresses in initialisers
    /// are patched in by [`LoadedModule::load`].
    pub init: Vec<u8>,
}

struct KernelLayout {
    func: u32,
    /// (symbol, offset) of the shared variables it uses.
    shared: Vec<(u32, u64)>,
    dyn_offset: u64,
    static_bytes: u64,
}

/// A parsed, validated and lowered PTX module. `Send + Sync`; share it in an `Arc`.
pub struct Module {
    funcs: Vec<Func>,
    syms: Vec<Sym>,
    kernels: Vec<KernelInfo>,
    layouts: Vec<KernelLayout>,
    globals: Vec<GlobalInfo>,
    global_syms: Vec<u32>,
    version: Option<(u32, u32)>,
    target: Option<String>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("kernels", &self.kernels)
            .field("globals", &self.globals.len())
            .finish()
    }
}

impl Module {
    /// Parses, validates and lowers PTX text.
    pub fn parse(ptx: &str) -> Result<Module, PtxError> {
        let ast = parser::parse(ptx)?;
        if ast.address_size == Some(32) {
            return Err(PtxError::new(1, 1, ".address_size 32 is not supported"));
        }
        let lowered = lower::lower_module(&ast)?;
        let funcs = lowered.funcs;
        let syms = lowered.syms;
        let func_decls: HashMap<&str, &ast::Function> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Func(f)
                    if f.body.is_some()
                        || !funcs.iter().any(|g| g.name == f.name && g.code.is_some()) =>
                {
                    Some((f.name.as_str(), f))
                }
                _ => None,
            })
            .collect();
        let mut kernels = Vec::new();
        let mut layouts = Vec::new();
        for (fi, f) in funcs.iter().enumerate() {
            if !f.is_entry || f.code.is_none() {
                continue;
            }
            let Some(decl) = func_decls.get(f.name.as_str()) else {
                continue;
            };
            let mut params = Vec::new();
            let mut off = 0u64;
            for p in &decl.params {
                let size = p.size().unwrap_or(0);
                let align = p.alignment();
                off = off.div_ceil(align) * align;
                params.push(ParamInfo {
                    offset: off as u32,
                    size: size as u32,
                    align: align as u32,
                });
                off += size;
            }
            let layout = shared_layout(&funcs, &syms, fi as u32);
            let max_threads = decl
                .reqntid
                .or(decl.maxntid)
                .map(|d| d.iter().fold(1u32, |a, b| a.saturating_mul(*b)));
            kernels.push(KernelInfo {
                name: f.name.clone(),
                params,
                static_shared_bytes: u32::try_from(layout.static_bytes).unwrap_or(u32::MAX),
                max_threads_per_block: max_threads,
                required_block: decl.reqntid,
                num_regs: f.nregs.min(255),
                local_bytes: f.local_size as u32,
            });
            layouts.push(layout);
        }
        let mut globals = Vec::new();
        let mut global_syms = Vec::new();
        for (i, s) in syms.iter().enumerate() {
            let space = match s.space {
                StateSpace::Global => GlobalSpace::Global,
                StateSpace::Const => GlobalSpace::Const,
                _ => continue,
            };
            globals.push(GlobalInfo {
                name: s.name.clone(),
                space,
                size: s.size,
                align: s.align,
                init: s.init.clone(),
            });
            global_syms.push(i as u32);
        }
        tracing::debug!(
            kernels = kernels.len(),
            globals = globals.len(),
            "parsed PTX module"
        );
        Ok(Module {
            funcs,
            syms,
            kernels,
            layouts,
            globals,
            global_syms,
            version: ast.version,
            target: ast.target,
        })
    }

    /// The kernels (`.entry` functions with a body).
    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    /// The `.global` and `.const` variables.
    pub fn globals(&self) -> &[GlobalInfo] {
        &self.globals
    }

    /// `.version` of the PTX text.
    pub fn ptx_version(&self) -> Option<(u32, u32)> {
        self.version
    }

    /// `.target` of the PTX text (`sm_80`).
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

fn shared_layout(funcs: &[Func], syms: &[Sym], kernel: u32) -> KernelLayout {
    let mut seen = vec![false; funcs.len()];
    let mut queue = VecDeque::from([kernel]);
    let mut used = std::collections::BTreeSet::new();
    while let Some(f) = queue.pop_front() {
        let Some(func) = funcs.get(f as usize) else {
            continue;
        };
        if std::mem::replace(&mut seen[f as usize], true) {
            continue;
        }
        used.extend(func.syms_used.iter().copied());
        queue.extend(func.callees.iter().copied());
    }
    let mut off = 0u64;
    let mut shared = Vec::new();
    let mut dyn_syms = Vec::new();
    let mut dyn_align = 16u64;
    for id in used {
        let Some(s) = syms.get(id as usize) else {
            continue;
        };
        if s.space != StateSpace::Shared {
            continue;
        }
        if s.dynamic {
            dyn_align = dyn_align.max(s.align);
            dyn_syms.push(id);
            continue;
        }
        off = off.div_ceil(s.align).saturating_mul(s.align);
        shared.push((id, off));
        off = off.saturating_add(s.size);
    }
    let dyn_offset = off.div_ceil(dyn_align).saturating_mul(dyn_align);
    shared.extend(dyn_syms.into_iter().map(|id| (id, dyn_offset)));
    KernelLayout {
        func: kernel,
        shared,
        dyn_offset,
        static_bytes: off,
    }
}

/// A [`Module`] whose `.global`/`.const` variables are allocated and initialised in an [`Arena`].
pub struct LoadedModule {
    module: Arc<Module>,
    /// Arena address of every symbol (0 for shared ones).
    addrs: Vec<u64>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("module", &self.module)
            .finish()
    }
}

impl LoadedModule {
    /// Allocates and initialises the module's variables in `arena`.
    pub fn load(module: Arc<Module>, arena: &Arena) -> Result<LoadedModule, LoadError> {
        let mut addrs = vec![0u64; module.syms.len()];
        let mut done = Vec::new();
        let fail = |done: &[u64], name: &str, e: MemError| {
            for a in done {
                let _ = arena.free(*a);
            }
            LoadError::Memory {
                name: name.to_owned(),
                source: e,
            }
        };
        for &id in &module.global_syms {
            let s = &module.syms[id as usize];
            if s.size == 0 {
                continue;
            }
            let a = arena
                .alloc(s.size, s.align)
                .map_err(|e| fail(&done, &s.name, e))?;
            done.push(a);
            addrs[id as usize] = a;
        }
        for &id in &module.global_syms {
            let s = &module.syms[id as usize];
            let a = addrs[id as usize];
            if a == 0 || s.init.is_empty() {
                continue;
            }
            let mut init = s.init.clone();
            for &(off, target, add) in &s.relocs {
                let v = addrs
                    .get(target as usize)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(add as u64);
                if let Some(b) = init.get_mut(off as usize..off as usize + 8) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
            }
            let n = init.len().min(s.size as usize);
            arena
                .write(a, &init[..n])
                .map_err(|e| fail(&done, &s.name, e))?;
        }
        Ok(LoadedModule { module, addrs })
    }

    /// The module.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// Device address and size of a `.global`/`.const` variable (`cuModuleGetGlobal`).
    pub fn global(&self, name: &str) -> Option<(u64, u64)> {
        let m = &self.module;
        m.global_syms
            .iter()
            .find(|&&id| m.syms[id as usize].name == name)
            .and_then(|&id| {
                let a = self.addrs[id as usize];
                (a != 0).then_some((a, m.syms[id as usize].size))
            })
    }

    /// Frees the module's variables.
    pub fn unload(self, arena: &Arena) {
        for &id in &self.module.global_syms {
            let a = self.addrs[id as usize];
            if a != 0 {
                let _ = arena.free(a);
            }
        }
    }
}

/// Grid and block shape of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks per grid (x, y, z).
    pub grid: [u32; 3],
    /// Threads per block (x, y, z).
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    pub dynamic_shared_bytes: u32,
}

/// Options of a launch.
pub struct LaunchOptions<'a> {
    /// Most warp-instructions the whole launch may execute before failing with `LaunchTimeout`.
    pub instruction_budget: u64,
    /// Receives device `printf` output, one complete line (with its `\n`) per call.
    pub printf: &'a (dyn Fn(&str) + Sync),
    /// Run blocks on the rayon thread pool.
    pub parallel: bool,
    /// Wall-clock time the launch may take before failing with `WatchdogExpired` (a watchdog
    /// like a display GPU's), checked every few thousand warp-instructions.
    pub time_limit: Option<std::time::Duration>,
    /// Set by someone else to end the launch early (its client is gone): `Cancelled`.
    pub cancel: Option<&'a AtomicBool>,
}

/// What a launch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchStats {
    /// Warp-instructions executed.
    pub warp_instructions: u64,
    /// Blocks run.
    pub blocks: u64,
}

/// Checks a launch configuration against compute-capability-8.0 limits: at most 1024 threads per
/// block (x, y ≤ 1024, z ≤ 64), grid x < 2³¹, y and z ≤ 65535, static shared memory ≤ 48 KiB and
/// static + dynamic ≤ 99 KiB, `.reqntid`/`.maxntid` honoured.
fn check_config(k: &KernelInfo, cfg: &LaunchConfig) -> Result<(), ExecError> {
    let bad = |m: String| Err(ExecError::InvalidConfig(m));
    let [bx, by, bz] = cfg.block;
    let [gx, gy, gz] = cfg.grid;
    if cfg.block.contains(&0) || cfg.grid.contains(&0) {
        return bad("grid and block dimensions must be at least 1".into());
    }
    if bx > 1024 || by > 1024 || bz > 64 {
        return bad(format!("block {bx}x{by}x{bz} exceeds 1024x1024x64"));
    }
    let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
    if threads > u64::from(MAX_THREADS_PER_BLOCK) {
        return bad(format!(
            "{threads} threads per block exceeds {MAX_THREADS_PER_BLOCK}"
        ));
    }
    if gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
        return bad(format!("grid {gx}x{gy}x{gz} exceeds (2^31-1)x65535x65535"));
    }
    if let Some(r) = k.required_block {
        if r != cfg.block {
            return bad(format!("kernel requires block {r:?} (.reqntid)"));
        }
    }
    if let Some(m) = k.max_threads_per_block {
        if threads > u64::from(m) {
            return bad(format!(
                "kernel allows at most {m} threads per block (.maxntid)"
            ));
        }
    }
    let st = u64::from(k.static_shared_bytes);
    if st > MAX_STATIC_SHARED {
        return bad(format!(
            "{st} bytes of static shared memory exceed {MAX_STATIC_SHARED}"
        ));
    }
    if st + u64::from(cfg.dynamic_shared_bytes) > MAX_TOTAL_SHARED {
        return bad(format!(
            "{st} static + {} dynamic bytes of shared memory exceed {MAX_TOTAL_SHARED}",
            cfg.dynamic_shared_bytes
        ));
    }
    Ok(())
}

/// Runs `kernel` of `m` over the grid. `params` holds the arguments packed at
/// [`KernelInfo::params`] offsets.
pub fn launch(
    m: &LoadedModule,
    kernel: &str,
    cfg: &LaunchConfig,
    params: &[u8],
    arena: &Arena,
    opts: &LaunchOptions<'_>,
) -> Result<LaunchStats, ExecError> {
    let module = &m.module;
    let ki = module
        .kernels
        .iter()
        .position(|k| k.name == kernel)
        .ok_or_else(|| ExecError::NotFound(kernel.to_owned()))?;
    let info = &module.kernels[ki];
    let layout = &module.layouts[ki];
    check_config(info, cfg)?;
    let need = info
        .params
        .iter()
        .map(|p| u64::from(p.offset) + u64::from(p.size))
        .max()
        .unwrap_or(0);
    if (params.len() as u64) < need {
        return Err(ExecError::InvalidConfig(format!(
            "{} parameter bytes given, kernel needs {need}",
            params.len()
        )));
    }
    let mut syms = m.addrs.clone();
    for &(id, off) in &layout.shared {
        if let Some(s) = syms.get_mut(id as usize) {
            *s = off;
        }
    }
    let shared_bytes = layout
        .dyn_offset
        .saturating_add(u64::from(cfg.dynamic_shared_bytes))
        .max(layout.static_bytes) as usize;
    let env = warp::Env {
        funcs: &module.funcs,
        mem: arena.snapshot(),
        params,
        syms,
        grid: cfg.grid,
        block: cfg.block,
        shared_bytes,
        dyn_smem: cfg.dynamic_shared_bytes,
        printf: opts.printf,
        budget: opts.instruction_budget,
        deadline: opts.time_limit.and_then(|t| Instant::now().checked_add(t)),
        cancel: opts.cancel,
        used: AtomicU64::new(0),
        executed: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        first_error: Mutex::new(None),
        start: Instant::now(),
        kernel: layout.func,
    };
    let blocks = cfg.grid.iter().map(|&g| u64::from(g)).product();
    tracing::debug!(kernel, ?cfg.grid, ?cfg.block, "launch");
    let used = exec::run_grid(&env, opts.parallel)?;
    Ok(LaunchStats {
        warp_instructions: used,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Module>();
        check::<LoadedModule>();
        check::<Arena>();
    }
}
