//! The state the interpreter works on: a launch's [`Env`], a warp's registers, SIMT stack and
//! call stack ([`Warp`]), and the [`Ctx`] one instruction executes in (operands, memory, special
//! registers). Generic over the function type `F`, so this module knows no instruction: the
//! instruction families (`ops/`) and the run loop ([`crate::exec`]) use it with `ops::Func`.
//!
//! Addresses at or above [`WINDOW_BASE`] are the generic windows of shared, local and parameter
//! memory ([`crate::memory`], "Address windows").

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use crate::error::ExecError;
use crate::ir::{MemSpace, PReg, PSrc, Reg, Special, Src};
use crate::memory::{Snapshot, Store, LOCAL_LIMIT, LOCAL_WINDOW, WINDOW_BASE, WINDOW_SIZE};

/// Values of one register across the 32 lanes of a warp.
pub(crate) type Lanes = [u64; 32];
/// All lanes.
pub(crate) const FULL: u32 = u32::MAX;

/// Most registers a warp may hold over all frames of its call stack.
const MAX_WARP_REGS: usize = 1 << 16;
/// Launch-wide state shared by all blocks.
pub(crate) struct Env<'a, F> {
    pub(crate) funcs: &'a [F],
    pub(crate) mem: Snapshot,
    pub(crate) params: &'a [u8],
    /// Resolved address of every module symbol (arena address, or shared offset for this kernel).
    pub(crate) syms: Vec<u64>,
    pub(crate) grid: [u32; 3],
    pub(crate) block: [u32; 3],
    pub(crate) shared_bytes: usize,
    pub(crate) dyn_smem: u32,
    pub(crate) printf: &'a (dyn Fn(&str) + Sync),
    pub(crate) budget: u64,
    /// When the launch's wall-clock time is up.
    pub(crate) deadline: Option<Instant>,
    /// Set from outside to end the launch.
    pub(crate) cancel: Option<&'a AtomicBool>,
    pub(crate) used: AtomicU64,
    pub(crate) executed: AtomicU64,
    pub(crate) abort: AtomicBool,
    pub(crate) first_error: std::sync::Mutex<Option<ExecError>>,
    pub(crate) start: Instant,
    pub(crate) kernel: u32,
}

/// Identity of a warp.
#[derive(Clone, Default)]
pub(crate) struct WarpIds {
    pub(crate) tid: [[u32; 32]; 3],
    pub(crate) ctaid: [u32; 3],
    pub(crate) warp: u32,
}

/// A source operand as [`Ctx::map2`] sees it.
#[derive(Clone, Copy)]
enum Opnd {
    /// A register of the frame (index in range).
    Reg(usize),
    /// The same value in every lane.
    Splat(u64),
    /// Per-lane special register: materialised by [`Ctx::src`].
    Other,
}

/// The execution context of one instruction on one warp.
pub(crate) struct Ctx<'a, 'e, F> {
    pub(crate) regs: &'a mut [Lanes],
    pub(crate) preds: &'a mut [u32],
    pub(crate) env: &'a Env<'e, F>,
    pub(crate) shared: &'a mut [u8],
    pub(crate) local: &'a mut [Vec<u8>],
    pub(crate) local_base: u64,
    pub(crate) ids: &'a WarpIds,
    pub(crate) cache: &'a mut usize,
    pub(crate) out: &'a mut String,
}

fn illegal(addr: u64) -> ExecError {
    ExecError::IllegalAddress { addr }
}

impl<F> Ctx<'_, '_, F> {
    /// The 32 lane values of a source operand.
    #[inline(always)]
    pub(crate) fn src(&self, s: Src) -> Lanes {
        match s {
            Src::Reg(r) => self.regs.get(r as usize).copied().unwrap_or([0; 32]),
            Src::Imm(v) => [v; 32],
            Src::Sym(i, off) => {
                [self.env
                    .syms
                    .get(i as usize)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(off as u64); 32]
            }
            Src::Local(off) => [self.local_base.wrapping_add(off as u64); 32],
            Src::Special(sp) => self.special(sp),
        }
    }

    /// Writes the lanes of `mask` of register `d`.
    #[inline(always)]
    pub(crate) fn set(&mut self, d: Reg, v: Lanes, mask: u32) {
        if let Some(r) = self.regs.get_mut(d as usize) {
            if mask == FULL {
                *r = v;
            } else {
                for l in 0..32 {
                    if mask >> l & 1 != 0 {
                        r[l] = v[l];
                    }
                }
            }
        }
    }

    /// A predicate source as a lane bitmask.
    #[inline(always)]
    pub(crate) fn psrc(&self, p: PSrc) -> u32 {
        match p {
            PSrc::Reg(r, neg) => {
                self.preds.get(r as usize).copied().unwrap_or(0) ^ if neg { FULL } else { 0 }
            }
            PSrc::Const(b) => {
                if b {
                    FULL
                } else {
                    0
                }
            }
        }
    }

    /// Writes the lanes of `mask` of predicate `d`.
    #[inline(always)]
    pub(crate) fn pset(&mut self, d: PReg, bits: u32, mask: u32) {
        if let Some(p) = self.preds.get_mut(d as usize) {
            *p = (*p & !mask) | (bits & mask);
        }
    }

    /// A source operand without copying a register: a register index (checked in range), a
    /// warp-uniform value, or materialised lanes (special registers).
    #[inline(always)]
    fn opnd(&self, s: Src) -> Opnd {
        match s {
            Src::Reg(r) if (r as usize) < self.regs.len() => Opnd::Reg(r as usize),
            Src::Reg(_) => Opnd::Splat(0),
            Src::Imm(v) => Opnd::Splat(v),
            Src::Sym(i, off) => Opnd::Splat(
                self.env
                    .syms
                    .get(i as usize)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_add(off as u64),
            ),
            Src::Local(off) => Opnd::Splat(self.local_base.wrapping_add(off as u64)),
            Src::Special(sp) => match self.special_uniform(sp) {
                Some(v) => Opnd::Splat(v),
                None => Opnd::Other,
            },
        }
    }

    /// `d[l] = f(a[l], b[l])` on the lanes of `mask`.
    ///
    /// Fast path (all lanes active, register/immediate operands): one loop reading the source
    /// registers and writing the destination in place, lane by lane (so `d` may alias `a` or `b`),
    /// without copying any register.
    #[inline(always)]
    pub(crate) fn map2(&mut self, d: Reg, a: Src, b: Src, mask: u32, f: impl Fn(u64, u64) -> u64) {
        let d = d as usize;
        if mask == FULL && d < self.regs.len() {
            let (oa, ob) = (self.opnd(a), self.opnd(b));
            let regs = &mut *self.regs;
            match (oa, ob) {
                (Opnd::Reg(i), Opnd::Reg(j)) => {
                    for l in 0..32 {
                        let v = f(regs[i][l], regs[j][l]);
                        regs[d][l] = v;
                    }
                    return;
                }
                (Opnd::Reg(i), Opnd::Splat(y)) => {
                    for l in 0..32 {
                        let v = f(regs[i][l], y);
                        regs[d][l] = v;
                    }
                    return;
                }
                (Opnd::Splat(x), Opnd::Reg(j)) => {
                    for l in 0..32 {
                        let v = f(x, regs[j][l]);
                        regs[d][l] = v;
                    }
                    return;
                }
                _ => {}
            }
        }
        let a = self.src(a);
        let b = self.src(b);
        let mut o = [0u64; 32];
        for l in 0..32 {
            o[l] = f(a[l], b[l]);
        }
        self.set(d as Reg, o, mask);
    }

    /// `d[l] = f(a[l])` on the lanes of `mask` (fast path as in [`Ctx::map2`]).
    #[inline(always)]
    pub(crate) fn map1(&mut self, d: Reg, a: Src, mask: u32, f: impl Fn(u64) -> u64) {
        let d = d as usize;
        if mask == FULL && d < self.regs.len() {
            let oa = self.opnd(a);
            let regs = &mut *self.regs;
            match oa {
                Opnd::Reg(i) => {
                    for l in 0..32 {
                        let v = f(regs[i][l]);
                        regs[d][l] = v;
                    }
                    return;
                }
                Opnd::Splat(x) => {
                    regs[d] = [f(x); 32];
                    return;
                }
                Opnd::Other => {}
            }
        }
        let a = self.src(a);
        let mut o = [0u64; 32];
        for l in 0..32 {
            o[l] = f(a[l]);
        }
        self.set(d as Reg, o, mask);
    }

    /// `d[l] = f(a[l], b[l], c[l])` on the lanes of `mask` (fast path as in [`Ctx::map2`]).
    #[inline(always)]
    pub(crate) fn map3(
        &mut self,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        mask: u32,
        f: impl Fn(u64, u64, u64) -> u64,
    ) {
        let d = d as usize;
        if mask == FULL && d < self.regs.len() {
            let (oa, ob, oc) = (self.opnd(a), self.opnd(b), self.opnd(c));
            let regs = &mut *self.regs;
            match (oa, ob, oc) {
                (Opnd::Reg(i), Opnd::Reg(j), Opnd::Reg(k)) => {
                    for l in 0..32 {
                        let v = f(regs[i][l], regs[j][l], regs[k][l]);
                        regs[d][l] = v;
                    }
                    return;
                }
                (Opnd::Reg(i), Opnd::Splat(y), Opnd::Reg(k)) => {
                    for l in 0..32 {
                        let v = f(regs[i][l], y, regs[k][l]);
                        regs[d][l] = v;
                    }
                    return;
                }
                (Opnd::Reg(i), Opnd::Reg(j), Opnd::Splat(z)) => {
                    for l in 0..32 {
                        let v = f(regs[i][l], regs[j][l], z);
                        regs[d][l] = v;
                    }
                    return;
                }
                _ => {}
            }
        }
        let a = self.src(a);
        let b = self.src(b);
        let c = self.src(c);
        let mut o = [0u64; 32];
        for l in 0..32 {
            o[l] = f(a[l], b[l], c[l]);
        }
        self.set(d as Reg, o, mask);
    }

    /// The value of a warp-uniform special register, `None` for per-lane ones.
    #[inline(always)]
    fn special_uniform(&self, s: Special) -> Option<u64> {
        let e = self.env;
        Some(match s {
            Special::Ntid(d) => u64::from(e.block[d as usize % 3]),
            Special::Ctaid(d) => u64::from(self.ids.ctaid[d as usize % 3]),
            Special::Nctaid(d) => u64::from(e.grid[d as usize % 3]),
            _ => return None,
        })
    }

    fn special(&self, s: Special) -> Lanes {
        let e = self.env;
        let mut o = [0u64; 32];
        match s {
            Special::Tid(d) => {
                for l in 0..32 {
                    o[l] = u64::from(self.ids.tid[d as usize % 3][l]);
                }
                return o;
            }
            Special::LaneId => {
                for (l, v) in o.iter_mut().enumerate() {
                    *v = l as u64;
                }
                return o;
            }
            Special::LaneMaskEq
            | Special::LaneMaskLt
            | Special::LaneMaskLe
            | Special::LaneMaskGt
            | Special::LaneMaskGe => {
                for (l, v) in o.iter_mut().enumerate() {
                    let eq = 1u64 << l;
                    *v = match s {
                        Special::LaneMaskEq => eq,
                        Special::LaneMaskLt => eq - 1,
                        Special::LaneMaskLe => (eq << 1) - 1,
                        Special::LaneMaskGt => !((eq << 1) - 1) & 0xffff_ffff,
                        _ => !(eq - 1) & 0xffff_ffff,
                    };
                }
                return o;
            }
            _ => {}
        }
        let v = match s {
            Special::Ntid(d) => u64::from(e.block[d as usize % 3]),
            Special::Ctaid(d) => u64::from(self.ids.ctaid[d as usize % 3]),
            Special::Nctaid(d) => u64::from(e.grid[d as usize % 3]),
            Special::WarpId => u64::from(self.ids.warp),
            Special::NWarpId => 64,
            Special::SmId => rayon::current_thread_index().unwrap_or(0) as u64,
            Special::NSmId => rayon::current_num_threads() as u64,
            Special::GridId => 1,
            Special::Clock | Special::Clock64 | Special::GlobalTimer => {
                e.start.elapsed().as_nanos() as u64
            }
            Special::DynamicSmemSize => u64::from(e.dyn_smem),
            Special::TotalSmemSize => e.shared_bytes as u64,
            Special::Const(c) => u64::from(c),
            _ => 0,
        };
        [v; 32]
    }

    /// The global-memory store and offset for an access of `size` bytes at arena address `addr`.
    #[inline(always)]
    pub(crate) fn global(&mut self, addr: u64, size: u64) -> Result<(&Store, u64), ExecError> {
        let allocs = self.env.mem.allocs();
        if let Some(a) = allocs.get(*self.cache) {
            let off = addr.wrapping_sub(a.base);
            if off < a.size && a.size - off >= size {
                return Ok((&a.store, off));
            }
        }
        let (idx, off) = self
            .env
            .mem
            .lookup(addr, size)
            .ok_or_else(|| illegal(addr))?;
        *self.cache = idx;
        Ok((&allocs[idx].store, off))
    }

    /// Resolves a generic address to a concrete space and the address within it.
    #[inline(always)]
    pub(crate) fn resolve(space: MemSpace, addr: u64) -> (MemSpace, u64) {
        if space != MemSpace::Generic {
            return (space, addr);
        }
        if addr >= WINDOW_BASE {
            let off = addr - WINDOW_BASE;
            return match off / WINDOW_SIZE {
                0 => (MemSpace::Shared, off),
                1 => (MemSpace::Local, off - WINDOW_SIZE),
                2 => (MemSpace::KParam, off - 2 * WINDOW_SIZE),
                _ => (MemSpace::Global, addr),
            };
        }
        (MemSpace::Global, addr)
    }

    /// Loads `size` bytes (1, 2, 4, 8) for lane `lane` (alignment already checked).
    #[inline(always)]
    pub(crate) fn load(
        &mut self,
        space: MemSpace,
        addr: u64,
        size: u32,
        lane: usize,
    ) -> Result<u64, ExecError> {
        let (sp, a) = Self::resolve(space, addr);
        match sp {
            MemSpace::Global | MemSpace::Const | MemSpace::Generic => {
                let (s, off) = self.global(a, u64::from(size))?;
                s.load(off, size).ok_or_else(|| illegal(addr))
            }
            MemSpace::Shared => read_le(self.shared, a, size).ok_or_else(|| illegal(addr)),
            MemSpace::Local => {
                let buf = self.local.get(lane).ok_or_else(|| illegal(addr))?;
                read_le(buf, a, size).ok_or_else(|| illegal(addr))
            }
            MemSpace::KParam => read_le(self.env.params, a, size).ok_or_else(|| illegal(addr)),
        }
    }

    /// Stores `size` bytes (1, 2, 4, 8) for lane `lane`.
    #[inline(always)]
    pub(crate) fn store(
        &mut self,
        space: MemSpace,
        addr: u64,
        size: u32,
        lane: usize,
        v: u64,
    ) -> Result<(), ExecError> {
        let (sp, a) = Self::resolve(space, addr);
        match sp {
            MemSpace::Global | MemSpace::Generic => {
                let (s, off) = self.global(a, u64::from(size))?;
                s.store(off, size, v).ok_or_else(|| illegal(addr))
            }
            MemSpace::Shared => write_le(self.shared, a, size, v).ok_or_else(|| illegal(addr)),
            MemSpace::Local => {
                let buf = self.local.get_mut(lane).ok_or_else(|| illegal(addr))?;
                write_le(buf, a, size, v).ok_or_else(|| illegal(addr))
            }
            MemSpace::Const | MemSpace::KParam => Err(illegal(addr)),
        }
    }

    /// Emits printf output; complete lines go to the launch's printf callback.
    pub(crate) fn print(&mut self, s: &str) {
        self.out.push_str(s);
        while let Some(nl) = self.out.find('\n') {
            let line: String = self.out.drain(..=nl).collect();
            (self.env.printf)(&line);
        }
    }
}

/// Little-endian read of `size` bytes at `off` of `buf`.
#[inline(always)]
pub(crate) fn read_le(buf: &[u8], off: u64, size: u32) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    let b = buf.get(o..o.checked_add(size as usize)?)?;
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

/// Little-endian write of the low `size` bytes of `v` at `off` of `buf`.
#[inline(always)]
pub(crate) fn write_le(buf: &mut [u8], off: u64, size: u32, v: u64) -> Option<()> {
    let o = usize::try_from(off).ok()?;
    let b = buf.get_mut(o..o.checked_add(size as usize)?)?;
    let n = b.len();
    b.copy_from_slice(&v.to_le_bytes()[..n]);
    Some(())
}

/// One SIMT stack entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Simt {
    pub(crate) pc: u32,
    pub(crate) rpc: u32,
    pub(crate) mask: u32,
}

/// One call frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub(crate) func: u32,
    pub(crate) reg_base: usize,
    pub(crate) pred_base: usize,
    pub(crate) local_base: u64,
    /// Index of the call instruction in the caller (NONE for the kernel frame).
    pub(crate) call_pc: u32,
    pub(crate) simt_base: usize,
    pub(crate) returned: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WarpState {
    Run,
    Barrier,
    Done,
}

/// One warp: registers of all frames, local memory of its 32 threads, SIMT stack and call stack.
pub(crate) struct Warp {
    pub(crate) regs: Vec<Lanes>,
    pub(crate) preds: Vec<u32>,
    pub(crate) local: Vec<Vec<u8>>,
    pub(crate) frames: Vec<Frame>,
    pub(crate) simt: Vec<Simt>,
    pub(crate) ids: WarpIds,
    pub(crate) state: WarpState,
    pub(crate) cache: usize,
}

impl Warp {
    pub(crate) fn new() -> Warp {
        Warp {
            regs: Vec::new(),
            preds: Vec::new(),
            local: vec![Vec::new(); 32],
            frames: Vec::new(),
            simt: Vec::new(),
            ids: WarpIds::default(),
            state: WarpState::Done,
            cache: 0,
        }
    }

    /// Grows registers/predicates/local memory for a new frame.
    pub(crate) fn ensure_frame(
        &mut self,
        regs: usize,
        preds: usize,
        local: u64,
    ) -> Result<(), ExecError> {
        if regs > MAX_WARP_REGS || preds > MAX_WARP_REGS || local > LOCAL_LIMIT {
            return Err(ExecError::IllegalAddress {
                addr: LOCAL_WINDOW + local,
            });
        }
        if self.regs.len() < regs {
            self.regs.resize(regs, [0; 32]);
        }
        if self.preds.len() < preds {
            self.preds.resize(preds, 0);
        }
        for l in &mut self.local {
            if (l.len() as u64) < local {
                l.resize(local as usize, 0);
            }
        }
        Ok(())
    }
}
