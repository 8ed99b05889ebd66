//! Control flow and synchronisation: `bra` (incl. `.uni`), `call` (of `.func`s defined in the
//! module, with `.param` arguments and return values; `vprintf` and `__assertfail` are built in),
//! `ret`, `exit`, `bar/barrier` (`sync`, `arrive`, `red` is unsupported), `membar/fence`, `trap`,
//! `brkpt` (traps), `nanosleep` and `pmevent` (no-ops). The SIMT-stack and call-stack manipulation of
//! each lives here; [`crate::exec`] calls it when a warp reaches one of these instructions.

use crate::ast::{Instruction, Operand, Ty};
use crate::cfg::Flow;
use crate::error::ExecError;
use crate::fncx::{FnCx, LowerErr, Mods, LR};
use crate::ir::{Reg, NONE};
use crate::ops::printf::PrintfOp;
use crate::ops::Env;
use crate::ops::Op;
use crate::warp::{Frame, Simt, Warp};

/// Deepest SIMT stack (nested divergence) a warp may build.
const MAX_SIMT_DEPTH: usize = 4096;
/// Deepest call stack.
const MAX_CALL_DEPTH: usize = 1024;

/// One actual argument of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A `.param` variable of the caller's frame (offset, size).
    Frame(i64, u32),
    /// A register (for `call` forms that pass registers).
    Reg(Reg),
    Imm(u64),
}

#[derive(Debug, Clone)]
pub(crate) enum CtlOp {
    Bra {
        target: u32,
        rpc: u32,
    },
    Call {
        func: u32,
        args: Vec<Arg>,
        rets: Vec<(i64, u32)>,
    },
    Ret,
    Exit,
    Bar {
        arrive: bool,
    },
    Fence,
    Trap,
    Nop,
    Unsupported(Box<str>),
}

/// Why straight-line execution stopped.
pub(crate) enum Stop {
    Budget,
    Reconverge,
    Ctl,
    End,
}

/// Lowers the control instructions; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<Op>> {
    let mut m = Mods::new(&i.mods);
    m.ignore_hints();
    let o = &i.operands;
    let op = match i.opcode.as_str() {
        "bra" => {
            if o.len() != 1 {
                return Err(cx.err("bra takes one label"));
            }
            CtlOp::Bra {
                target: cx.label(&o[0])?,
                rpc: NONE,
            }
        }
        "ret" => CtlOp::Ret,
        "exit" => CtlOp::Exit,
        "trap" | "brkpt" => CtlOp::Trap,
        "nanosleep" | "pmevent" => {
            m.types();
            CtlOp::Nop
        }
        "membar" | "fence" => {
            m.one_of(&[
                "proxy", "alias", "async", "sc", "acq_rel", "cta", "gl", "sys", "gpu",
            ]);
            CtlOp::Fence
        }
        // `bar.warp.sync membermask` (`__syncwarp`): the lanes of a warp run in lockstep here,
        // so what is left of it is its memory ordering among the lanes. (A warp whose member
        // lanes are on different paths is not made to wait for them: the interpreter's
        // divergent paths run one after the other.)
        "bar" if m.has("warp") => {
            m.has("sync");
            if o.len() != 1 {
                return Err(cx.err("bar.warp.sync takes a member mask"));
            }
            cx.src(&o[0], Ty::B32)?;
            CtlOp::Fence
        }
        "bar" | "barrier" => {
            let arrive = m.has("arrive");
            if !arrive {
                m.has("sync");
            }
            if m.has("red") {
                return Err(LowerErr::Unsupported("bar.red".into()));
            }
            m.has("cta");
            CtlOp::Bar { arrive }
        }
        "call" => return lower_call(i, cx, m).map(Some),
        _ => return Ok(None),
    };
    m.finish()?;
    Ok(Some(Op::Ctl(op)))
}

fn lower_call(i: &Instruction, cx: &mut FnCx<'_>, m: Mods<'_>) -> LR<Op> {
    m.finish()?;
    let o = &i.operands;
    let mut k = 0;
    let ret_list: &[Operand] = match o.first() {
        Some(Operand::List(l)) => {
            k = 1;
            l
        }
        _ => &[],
    };
    let Some(Operand::Name(fname)) = o.get(k) else {
        return Err(cx.err("call needs a function name"));
    };
    let args: &[Operand] = match o.get(k + 1) {
        Some(Operand::List(l)) => l,
        Some(_) => return Err(LowerErr::Unsupported("indirect call".into())),
        None => &[],
    };
    if cx.is_pred(fname) || cx.reg(fname).is_ok() {
        return Err(LowerErr::Unsupported("indirect call".into()));
    }
    let frame_arg = |cx: &mut FnCx<'_>, a: &Operand| -> LR<(i64, u32)> {
        match a {
            Operand::Name(n) => cx.frame_var(n),
            _ => Err(cx.err("expected a .param variable")),
        }
    };
    let (func, fdecl) = cx.function(fname)?;
    if fdecl.body.is_none() {
        return match fname.as_str() {
            "vprintf" => {
                let [f, a] = args else {
                    return Err(cx.err("vprintf takes two arguments"));
                };
                let fmt = frame_arg(cx, f)?.0;
                let argbuf = frame_arg(cx, a)?.0;
                let ret = match ret_list.first() {
                    Some(r) => Some(frame_arg(cx, r)?.0),
                    None => None,
                };
                Ok(Op::Printf(PrintfOp {
                    fmt,
                    args: argbuf,
                    ret,
                }))
            }
            "__assertfail" => Ok(Op::Ctl(CtlOp::Trap)),
            other => Err(LowerErr::Unsupported(format!(
                "call of external function `{other}`"
            ))),
        };
    }
    if args.len() != fdecl.params.len() || ret_list.len() != fdecl.rets.len() {
        return Err(cx.err(format!(
            "call of `{fname}`: wrong number of arguments or return values"
        )));
    }
    let mut a = Vec::with_capacity(args.len());
    for (arg, p) in args.iter().zip(&fdecl.params) {
        a.push(match arg {
            Operand::Name(n) if cx.frame_var(n).is_ok() => {
                let (off, size) = cx.frame_var(n)?;
                Arg::Frame(off, size)
            }
            Operand::Name(n) => Arg::Reg(cx.reg(n)?),
            imm => Arg::Imm(cx.imm(imm, p.ty)?),
        });
    }
    let rets = ret_list
        .iter()
        .map(|r| frame_arg(cx, r))
        .collect::<LR<Vec<_>>>()?;
    Ok(Op::Ctl(CtlOp::Call {
        func,
        args: a,
        rets,
    }))
}

impl CtlOp {
    pub(crate) fn flow(&self) -> Flow {
        match self {
            CtlOp::Bra { target, .. } => Flow::Branch(*target),
            CtlOp::Ret | CtlOp::Exit | CtlOp::Trap => Flow::Leave,
            _ => Flow::Next,
        }
    }

    pub(crate) fn set_reconvergence(&mut self, r: u32) {
        if let CtlOp::Bra { rpc, .. } = self {
            *rpc = r;
        }
    }
}

fn set_pc(w: &mut Warp, pc: u32) {
    if let Some(t) = w.simt.last_mut() {
        t.pc = pc;
    }
}

/// Executes a control instruction at `pc` for the lanes `m` (guard applied) of the top entry
/// (`mask`). Returns `true` when the warp must wait at a barrier.
pub(crate) fn exec(
    w: &mut Warp,
    env: &Env<'_>,
    op: &CtlOp,
    pc: u32,
    m: u32,
    mask: u32,
) -> Result<bool, ExecError> {
    match op {
        CtlOp::Bra { target, rpc } => branch(w, pc, *target, *rpc, m, mask)?,
        CtlOp::Exit => exit_lanes(w, m, pc),
        CtlOp::Ret if w.frames.len() <= 1 => exit_lanes(w, m, pc),
        CtlOp::Ret => {
            let base = w.frames.last().map_or(0, |f| f.simt_base);
            if let Some(f) = w.frames.last_mut() {
                f.returned |= m;
            }
            for e in w.simt.iter_mut().skip(base) {
                e.mask &= !m;
            }
            set_pc(w, pc + 1);
        }
        CtlOp::Bar { arrive } => {
            set_pc(w, pc + 1);
            return Ok(m != 0 && !arrive);
        }
        CtlOp::Fence => {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            set_pc(w, pc + 1);
        }
        CtlOp::Nop => set_pc(w, pc + 1),
        CtlOp::Trap if m != 0 => return Err(ExecError::Trap),
        CtlOp::Unsupported(s) if m != 0 => {
            let line = current_line(w, env, pc);
            return Err(ExecError::Unsupported {
                instruction: s.to_string(),
                line,
            });
        }
        CtlOp::Trap | CtlOp::Unsupported(_) => set_pc(w, pc + 1),
        CtlOp::Call { .. } if m == 0 => set_pc(w, pc + 1),
        CtlOp::Call { func, args, .. } => call(w, env, *func, args, pc, m)?,
    }
    Ok(false)
}

fn current_line(w: &Warp, env: &Env<'_>, pc: u32) -> u32 {
    w.frames
        .last()
        .and_then(|f| env.funcs.get(f.func as usize))
        .and_then(|f| f.code.as_ref())
        .and_then(|c| c.get(pc as usize))
        .map_or(0, |i| i.line)
}

fn branch(
    w: &mut Warp,
    pc: u32,
    target: u32,
    rpc: u32,
    taken: u32,
    mask: u32,
) -> Result<(), ExecError> {
    let not_taken = mask & !taken;
    if not_taken == 0 {
        set_pc(w, target);
        return Ok(());
    }
    if taken == 0 {
        set_pc(w, pc + 1);
        return Ok(());
    }
    let Some(top) = w.simt.pop() else {
        return Ok(());
    };
    let r = if rpc == NONE { top.rpc } else { rpc };
    if r != top.rpc {
        w.simt.push(Simt {
            pc: r,
            rpc: top.rpc,
            mask: top.mask,
        });
    }
    if pc + 1 != r {
        w.simt.push(Simt {
            pc: pc + 1,
            rpc: r,
            mask: not_taken,
        });
    }
    if target != r {
        w.simt.push(Simt {
            pc: target,
            rpc: r,
            mask: taken,
        });
    }
    if w.simt.len() > MAX_SIMT_DEPTH {
        return Err(ExecError::Unsupported {
            instruction: "divergence nested too deeply".into(),
            line: 0,
        });
    }
    Ok(())
}

fn exit_lanes(w: &mut Warp, m: u32, pc: u32) {
    for e in &mut w.simt {
        e.mask &= !m;
    }
    for f in &mut w.frames {
        f.returned &= !m;
    }
    set_pc(w, pc + 1);
}

fn copy_lane_bytes(
    w: &mut Warp,
    lane: usize,
    src: u64,
    dst: u64,
    size: u32,
) -> Result<(), ExecError> {
    let buf = w
        .local
        .get_mut(lane)
        .ok_or_else(|| ExecError::IllegalAddress { addr: src })?;
    let (s, d, n) = (src as usize, dst as usize, size as usize);
    if s.checked_add(n).is_none_or(|e| e > buf.len())
        || d.checked_add(n).is_none_or(|e| e > buf.len())
    {
        return Err(ExecError::IllegalAddress { addr: src });
    }
    buf.copy_within(s..s + n, d);
    Ok(())
}

fn write_lane_bytes(
    w: &mut Warp,
    lane: usize,
    dst: u64,
    size: u32,
    v: u64,
) -> Result<(), ExecError> {
    let buf = w
        .local
        .get_mut(lane)
        .ok_or_else(|| ExecError::IllegalAddress { addr: dst })?;
    crate::warp::write_le(buf, dst, size.min(8), v)
        .ok_or_else(|| ExecError::IllegalAddress { addr: dst })
}

fn call(
    w: &mut Warp,
    env: &Env<'_>,
    func: u32,
    args: &[Arg],
    pc: u32,
    m: u32,
) -> Result<(), ExecError> {
    let Some(&caller) = w.frames.last() else {
        return Ok(());
    };
    let (Some(cf), Some(callee)) = (
        env.funcs.get(caller.func as usize),
        env.funcs.get(func as usize),
    ) else {
        return Ok(());
    };
    if callee.code.is_none() {
        return Err(ExecError::Unsupported {
            instruction: format!("call {}", callee.name),
            line: 0,
        });
    }
    if w.frames.len() >= MAX_CALL_DEPTH {
        return Err(ExecError::IllegalAddress {
            addr: crate::memory::LOCAL_WINDOW + caller.local_base,
        });
    }
    let reg_base = caller.reg_base + cf.nregs as usize;
    let pred_base = caller.pred_base + cf.npreds as usize;
    let local_base = (caller.local_base + cf.local_size).div_ceil(16) * 16;
    w.ensure_frame(
        reg_base + callee.nregs as usize,
        pred_base + callee.npreds as usize,
        local_base + callee.local_size,
    )?;
    for (arg, &(poff, psize)) in args.iter().zip(&callee.params) {
        let dst = local_base.wrapping_add(poff as u64);
        for l in 0..32usize {
            if m >> l & 1 == 0 {
                continue;
            }
            match *arg {
                Arg::Frame(off, size) => copy_lane_bytes(
                    w,
                    l,
                    caller.local_base.wrapping_add(off as u64),
                    dst,
                    size.min(psize),
                )?,
                Arg::Reg(r) => {
                    let v = w.regs.get(caller.reg_base + r as usize).map_or(0, |x| x[l]);
                    write_lane_bytes(w, l, dst, psize, v)?
                }
                Arg::Imm(v) => write_lane_bytes(w, l, dst, psize, v)?,
            }
        }
    }
    set_pc(w, pc + 1);
    w.frames.push(Frame {
        func,
        reg_base,
        pred_base,
        local_base,
        call_pc: pc,
        simt_base: w.simt.len(),
        returned: 0,
    });
    w.simt.push(Simt {
        pc: 0,
        rpc: NONE,
        mask: m,
    });
    Ok(())
}

/// Pops the finished frame of a `.func`, copying return values to the caller's `.param`s.
pub(crate) fn do_return(w: &mut Warp, env: &Env<'_>) -> Result<(), ExecError> {
    let Some(f) = w.frames.pop() else {
        return Ok(());
    };
    let Some(&caller) = w.frames.last() else {
        return Ok(());
    };
    let rets = env
        .funcs
        .get(caller.func as usize)
        .and_then(|c| c.code.as_ref())
        .and_then(|c| c.get(f.call_pc as usize))
        .and_then(|i| match &i.op {
            Op::Ctl(CtlOp::Call { rets, .. }) => Some(rets.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let callee = env.funcs.get(f.func as usize);
    for (k, (coff, csize)) in rets.iter().enumerate() {
        let Some(&(roff, rsize)) = callee.and_then(|c| c.rets.get(k)) else {
            continue;
        };
        for l in 0..32usize {
            if f.returned >> l & 1 != 0 {
                copy_lane_bytes(
                    w,
                    l,
                    f.local_base.wrapping_add(roff as u64),
                    caller.local_base.wrapping_add(*coff as u64),
                    rsize.min(*csize),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ops::testutil::run_kernel;
    use crate::ExecError;

    #[test]
    fn syncwarp_is_accepted_on_a_converged_warp() {
        let r = run_kernel(
            "mov.u32 %r1, %tid.x; bar.warp.sync -1; shl.b32 %r2, %r1, 2; cvt.u64.u32 %rd1, %r2;\
             add.u64 %rd2, %rd_out, %rd1; bar.warp.sync 0xffffffff; st.global.u32 [%rd2], %r1;",
            32,
            16,
        )
        .unwrap();
        assert_eq!(r[15], (31u64 << 32) | 30);
    }

    #[test]
    fn divergence_reconverges() {
        // Odd lanes take a long path, even lanes a short one; all must reconverge before the store.
        let r = run_kernel(
            "mov.u32 %r1, %tid.x; and.b32 %r2, %r1, 1; setp.eq.u32 %p1, %r2, 0; mov.u32 %r3, 0;\
             @%p1 bra EVEN; mov.u32 %r4, 0;\
             LOOP: add.u32 %r3, %r3, 3; add.u32 %r4, %r4, 1; setp.lt.u32 %p2, %r4, %r1; @%p2 bra LOOP;\
             bra.uni JOIN;\
             EVEN: add.u32 %r3, %r3, 1;\
             JOIN: activemask.b32 %r5; mul.wide.u32 %rd1, %r1, 8; add.s64 %rd2, %rd_out, %rd1;\
             mov.b64 %rd3, {%r3, %r5}; st.global.u64 [%rd2], %rd3;",
            32,
            32,
        )
        .unwrap();
        for (t, v) in r.iter().enumerate() {
            let want = if t % 2 == 0 { 1 } else { 3 * t as u64 };
            assert_eq!(*v as u32 as u64, want, "lane {t}");
            assert_eq!(v >> 32, 0xffff_ffff, "lane {t} did not reconverge");
        }
    }

    #[test]
    fn barrier_orders_warps() {
        // Thread t writes shared[t]; after the barrier it reads shared[(t+1) % 256] (another warp's).
        let r = run_kernel(
            ".shared .align 4 .b8 s[1024];\
             mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 2; mov.u32 %r3, s; add.s32 %r4, %r3, %r2;\
             add.s32 %r5, %r1, 1000; st.shared.u32 [%r4], %r5; bar.sync 0;\
             add.s32 %r6, %r1, 1; and.b32 %r6, %r6, 255; shl.b32 %r7, %r6, 2; add.s32 %r8, %r3, %r7; ld.shared.u32 %r9, [%r8];\
             mul.wide.u32 %rd1, %r1, 8; add.s64 %rd2, %rd_out, %rd1; cvt.u64.u32 %rd3, %r9; st.global.u64 [%rd2], %rd3;",
            256,
            256,
        )
        .unwrap();
        for (t, v) in r.iter().enumerate() {
            assert_eq!(*v, 1000 + ((t as u64 + 1) % 256));
        }
    }

    #[test]
    fn infinite_loop_times_out_and_trap_traps() {
        assert_eq!(
            run_kernel("L: bra.uni L;", 32, 1).unwrap_err(),
            ExecError::LaunchTimeout
        );
        assert_eq!(
            run_kernel(
                "mov.u32 %r1, %tid.x; setp.eq.u32 %p1, %r1, 3; @%p1 trap;",
                32,
                1
            )
            .unwrap_err(),
            ExecError::Trap
        );
        let u = run_kernel("mov.u32 %r1, 1;\nbrx.idx %r1, tab;", 1, 1).unwrap_err();
        assert!(
            matches!(u, ExecError::Unsupported { line, .. } if line > 0),
            "{u:?}"
        );
    }

    #[test]
    fn exit_in_divergent_code() {
        let r = run_kernel(
            "mov.u32 %r1, %tid.x; setp.gt.u32 %p1, %r1, 9; @%p1 exit; bar.sync 0;\
             mul.wide.u32 %rd1, %r1, 8; add.s64 %rd2, %rd_out, %rd1; st.global.u64 [%rd2], 7;",
            64,
            64,
        )
        .unwrap();
        for (t, v) in r.iter().enumerate() {
            assert_eq!(*v, if t <= 9 { 7 } else { 0 });
        }
    }
}
