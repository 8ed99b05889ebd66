//! The interpreter: warps of 32 lanes executing the IR SIMT-style, blocks scheduled cooperatively
//! (so barriers work), blocks of a grid in parallel with rayon.
//!
//! The state it runs on (warps, frames, the instruction context) is [`crate::warp`].
//!
//! # Divergence
//!
//! Each warp keeps a SIMT stack of `(pc, reconvergence pc, mask)` entries. A divergent branch replaces
//! the top entry by a reconvergence entry at the branch's immediate post-dominator plus one entry per
//! side; an entry whose pc reaches its reconvergence pc is popped. `exit` removes lanes from every entry;
//! `ret` from a `.func` parks lanes until the callee's entries are empty, then the frame returns.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::ExecError;
use crate::ir::NONE;
use crate::ops::control::{self, Stop};
use crate::ops::{self, Ctx, Env, Op};
use crate::warp::{Frame, Simt, Warp, WarpState, FULL};

/// Warp-instructions taken from the launch budget at a time.
const BUDGET_CHUNK: u64 = 1 << 14;

impl Warp {
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
    code: &[crate::ops::Inst],
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
    if env.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(ExecError::Cancelled);
    }
    if env.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(ExecError::WatchdogExpired);
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
