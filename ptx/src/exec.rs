//! The interpreter: warps of 32 lanes executing the IR SIMT-style, blocks scheduled cooperatively
//! (so barriers work), blocks of a grid in parallel with rayon.
//!
//! Addresses at or above [`WINDOW_BASE`] are the generic windows of shared, local and parameter
//! memory ([`crate::memory`], "Address windows").
//!
//! # Divergence
//!
//! Each warp keeps a SIMT stack of `(pc, reconvergence pc, mask)` entries. A divergent branch replaces
//! the top entry by a reconvergence entry at the branch's immediate post-dominator plus one entry per
//! side; an entry whose pc reaches its reconvergence pc is popped. `exit` removes lanes from every entry;
//! `ret` from a `.func` parks lanes until the callee's entries are empty, then the frame returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::ExecError;
use crate::ir::{Func, MemSpace, PReg, PSrc, Reg, Special, Src, NONE};
use crate::memory::{Snapshot, Store, LOCAL_LIMIT, LOCAL_WINDOW, WINDOW_BASE, WINDOW_SIZE};
use crate::ops::control::{self, Stop};
use crate::ops::{self, Op};

/// Values of one register across the 32 lanes of a warp.
pub(crate) type Lanes = [u64; 32];
/// All lanes.
pub(crate) const FULL: u32 = u32::MAX;

/// Most registers a warp may hold over all frames of its call stack.
const MAX_WARP_REGS: usize = 1 << 16;
/// Warp-instructions taken from the launch budget at a time.
const BUDGET_CHUNK: u64 = 1 << 14;

/// Launch-wide state shared by all blocks.
pub(crate) struct Env<'a> {
    pub(crate) funcs: &'a [Func],
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
pub(crate) struct Ctx<'a, 'e> {
    pub(crate) regs: &'a mut [Lanes],
    pub(crate) preds: &'a mut [u32],
    pub(crate) env: &'a Env<'e>,
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

impl Ctx<'_, '_> {
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
    fn new() -> Warp {
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

    fn reset(&mut self, env: &Env<'_>, ctaid: [u32; 3], warp: u32) {
        let k = &env.funcs[env.kernel as usize];
        let [bx, by, bz] = env.block;
        let threads = bx * by * bz;
        let first = warp * 32;
        let n = (threads - first).min(32);
        // Thread coordinates of lane 0, then incremented lane by lane (no division per lane).
        let (mut x, mut y, mut z) = (first % bx, (first / bx) % by, first / (bx * by));
        for l in 0..32usize {
            self.ids.tid[0][l] = x;
            self.ids.tid[1][l] = y;
            self.ids.tid[2][l] = z;
            if (l as u32) + 1 < n {
                x += 1;
                if x == bx {
                    x = 0;
                    y += 1;
                    if y == by {
                        y = 0;
                        z += 1;
                    }
                }
            }
        }
        self.ids.ctaid = ctaid;
        self.ids.warp = warp;
        if self.regs.len() < k.nregs as usize {
            self.regs.resize(k.nregs as usize, [0; 32]);
        }
        if self.preds.len() < k.npreds as usize {
            self.preds.resize(k.npreds as usize, 0);
        }
        for l in &mut self.local {
            if (l.len() as u64) < k.local_size {
                l.resize(k.local_size as usize, 0);
            }
        }
        self.frames.clear();
        self.frames.push(Frame {
            func: env.kernel,
            reg_base: 0,
            pred_base: 0,
            local_base: 0,
            call_pc: NONE,
            simt_base: 0,
            returned: 0,
        });
        let mask = if n == 32 { FULL } else { (1u32 << n) - 1 };
        self.simt.clear();
        self.simt.push(Simt {
            pc: 0,
            rpc: NONE,
            mask,
        });
        self.state = WarpState::Run;
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

    /// Runs until the warp finishes or reaches a barrier.
    fn run(
        &mut self,
        env: &Env<'_>,
        shared: &mut [u8],
        out: &mut String,
        budget: &mut Budget,
    ) -> Result<(), ExecError> {
        loop {
            let Some(top) = self.simt.last().copied() else {
                self.state = WarpState::Done;
                return Ok(());
            };
            let Some(&frame) = self.frames.last() else {
                self.state = WarpState::Done;
                return Ok(());
            };
            if top.mask == 0 || top.pc == top.rpc {
                self.simt.pop();
                if self.simt.len() <= frame.simt_base && self.frames.len() > 1 {
                    control::do_return(self, env)?;
                }
                continue;
            }
            let func = &env.funcs[frame.func as usize];
            let Some(code) = func.code.as_deref() else {
                return Err(ExecError::Unsupported {
                    instruction: func.name.clone(),
                    line: 0,
                });
            };
            let (stop, pc, m) = {
                let mut cx = Ctx {
                    regs: self.regs.get_mut(frame.reg_base..).unwrap_or_default(),
                    preds: self.preds.get_mut(frame.pred_base..).unwrap_or_default(),
                    env,
                    shared: &mut *shared,
                    local: &mut self.local,
                    local_base: frame.local_base,
                    ids: &self.ids,
                    cache: &mut self.cache,
                    out: &mut *out,
                };
                straight_line(&mut cx, code, top, &mut budget.allowance)?
            };
            if let Some(t) = self.simt.last_mut() {
                t.pc = pc;
            }
            match stop {
                Stop::Budget => {
                    take_budget(env, budget)?;
                }
                Stop::Reconverge => {}
                Stop::Ctl => {
                    if let Some(inst) = code.get(pc as usize) {
                        if let Op::Ctl(op) = &inst.op {
                            if control::exec(self, env, op, pc, m, top.mask)? {
                                self.state = WarpState::Barrier;
                                return Ok(());
                            }
                        }
                    }
                }
                Stop::End => {
                    // Falling off the end of a function body is a `ret`.
                    control::exec(self, env, &control::CtlOp::Ret, pc, top.mask, top.mask)?;
                }
            }
        }
    }
}

/// Executes non-control instructions from `top.pc` until a control instruction, the reconvergence
/// point, the end of the code or the end of the budget allowance. Returns why it stopped, the pc
/// and (for control instructions) the guarded mask.
#[inline(always)]
fn straight_line(
    cx: &mut Ctx<'_, '_>,
    code: &[crate::ir::Inst],
    top: Simt,
    allowance: &mut u64,
) -> Result<(Stop, u32, u32), ExecError> {
    let mut pc = top.pc;
    let mask = top.mask;
    loop {
        if pc == top.rpc {
            return Ok((Stop::Reconverge, pc, 0));
        }
        let Some(inst) = code.get(pc as usize) else {
            return Ok((Stop::End, pc, 0));
        };
        if *allowance == 0 {
            return Ok((Stop::Budget, pc, 0));
        }
        *allowance -= 1;
        let m = match inst.guard {
            None => mask,
            Some((p, neg)) => {
                mask & (cx.preds.get(p as usize).copied().unwrap_or(0) ^ if neg { FULL } else { 0 })
            }
        };
        if let Op::Ctl(_) = inst.op {
            return Ok((Stop::Ctl, pc, m));
        }
        if m != 0 {
            ops::exec(&inst.op, cx, m).map_err(|e| annotate(e, inst.line))?;
        }
        pc += 1;
    }
}

fn annotate(e: ExecError, line: u32) -> ExecError {
    match e {
        ExecError::Unsupported {
            instruction,
            line: 0,
        } => ExecError::Unsupported { instruction, line },
        e => e,
    }
}

/// A host thread's share of the launch's instruction budget.
#[derive(Default)]
pub(crate) struct Budget {
    /// Warp-instructions this thread may still run before asking for more.
    allowance: u64,
    /// Warp-instructions taken from the launch so far.
    grabbed: u64,
    /// Warp-instructions already reported as executed.
    reported: u64,
}

/// Takes the next chunk of the launch's instruction budget.
fn take_budget(env: &Env<'_>, b: &mut Budget) -> Result<(), ExecError> {
    if env.abort.load(Ordering::Relaxed) {
        return Err(ExecError::LaunchTimeout);
    }
    let prev = env.used.fetch_add(BUDGET_CHUNK, Ordering::Relaxed);
    if prev >= env.budget {
        return Err(ExecError::LaunchTimeout);
    }
    let n = BUDGET_CHUNK.min(env.budget - prev);
    b.allowance += n;
    b.grabbed += n;
    Ok(())
}

/// Per-host-thread reusable state.
pub(crate) struct Worker {
    warps: Vec<Warp>,
    shared: Vec<u8>,
    out: String,
    budget: Budget,
}

impl Worker {
    pub(crate) fn new() -> Worker {
        Worker {
            warps: Vec::new(),
            shared: Vec::new(),
            out: String::new(),
            budget: Budget::default(),
        }
    }

    /// Runs block number `b` (linear) of the grid.
    pub(crate) fn run_block(&mut self, env: &Env<'_>, b: u64) -> Result<(), ExecError> {
        if env.abort.load(Ordering::Relaxed) {
            return Err(ExecError::LaunchTimeout);
        }
        let [gx, gy, _] = env.grid.map(u64::from);
        let ctaid = [
            (b % gx) as u32,
            ((b / gx) % gy) as u32,
            (b / (gx * gy)) as u32,
        ];
        let threads = env.block.iter().product::<u32>();
        let nwarps = threads.div_ceil(32) as usize;
        while self.warps.len() < nwarps {
            self.warps.push(Warp::new());
        }
        self.shared.clear();
        self.shared.resize(env.shared_bytes, 0);
        for (i, w) in self.warps.iter_mut().take(nwarps).enumerate() {
            w.reset(env, ctaid, i as u32);
        }
        loop {
            let mut live = false;
            for w in self.warps.iter_mut().take(nwarps) {
                if w.state == WarpState::Run {
                    w.run(env, &mut self.shared, &mut self.out, &mut self.budget)?;
                }
                live |= w.state != WarpState::Done;
            }
            if !live {
                break;
            }
            // Every live warp waits at a barrier: release them.
            for w in self.warps.iter_mut().take(nwarps) {
                if w.state == WarpState::Barrier {
                    w.state = WarpState::Run;
                }
            }
        }
        if !self.out.is_empty() {
            let s = std::mem::take(&mut self.out);
            (env.printf)(&s);
        }
        Ok(())
    }

    /// Reports the warp-instructions executed since the last report.
    fn finish(&mut self, env: &Env<'_>) {
        let b = &mut self.budget;
        let done = b.grabbed - b.allowance;
        env.executed.fetch_add(done - b.reported, Ordering::Relaxed);
        b.reported = done;
    }
}

/// Runs all blocks of the grid; the first error of any block wins.
pub(crate) fn run_grid(env: &Env<'_>, parallel: bool) -> Result<u64, ExecError> {
    let nblocks = env.grid.iter().map(|&g| u64::from(g)).product::<u64>();
    let fail = |e: ExecError| {
        if let Ok(mut g) = env.first_error.lock() {
            if g.is_none() {
                *g = Some(e.clone());
            }
        }
        env.abort.store(true, Ordering::Relaxed);
        e
    };
    let r = if parallel && nblocks > 1 {
        // Blocks go to rayon in small batches: less scheduling overhead per (often tiny) block.
        let per_task = (nblocks / (rayon::current_num_threads() as u64 * 64)).clamp(1, 64);
        (0..nblocks.div_ceil(per_task))
            .into_par_iter()
            .try_for_each_init(Worker::new, |w, t| {
                let end = (t * per_task + per_task).min(nblocks);
                let r = (t * per_task..end)
                    .try_for_each(|b| w.run_block(env, b))
                    .map_err(fail);
                w.finish(env);
                r
            })
    } else {
        let mut w = Worker::new();
        (0..nblocks).try_for_each(|b| {
            let r = w.run_block(env, b).map_err(fail);
            w.finish(env);
            r
        })
    };
    if let Err(e) = r {
        let first = env.first_error.lock().ok().and_then(|mut g| g.take());
        return Err(first.unwrap_or(e));
    }
    Ok(env.executed.load(Ordering::Relaxed))
}
