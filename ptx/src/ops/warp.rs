//! Warp-level operations: `shfl(.sync)` (up/down/bfly/idx with clamp and segment mask), `vote(.sync)`
//! (all/any/uni/ballot), `activemask`, `match.sync` (any/all), `redux.sync` (add/min/max/and/or/xor).
//! The whole warp executes each instruction at once, so every lane sees the others' values; the
//! member mask is intersected with the active mask.

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, LowerErr, Mods, LR};
use crate::ir::{PReg, PSrc, Reg, Src};
use crate::ops::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone)]
pub(crate) enum WarpOp {
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<PReg>,
        a: Src,
        b: Src,
        c: Src,
    },
    Vote {
        mode: VoteMode,
        d: Result<Reg, PReg>,
        a: PSrc,
    },
    Activemask {
        d: Reg,
    },
    Match {
        all: bool,
        ty: Ty,
        d: Reg,
        p: Option<PReg>,
        a: Src,
    },
    Redux {
        op: ReduxOp,
        signed: bool,
        d: Reg,
        a: Src,
    },
}

/// Lowers the warp-level instructions; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<WarpOp>> {
    let mut m = Mods::new(&i.mods);
    m.has("sync");
    m.has("aligned");
    let o = &i.operands;
    let r = match i.opcode.as_str() {
        "shfl" => {
            let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
                Some("up") => ShflMode::Up,
                Some("down") => ShflMode::Down,
                Some("bfly") => ShflMode::Bfly,
                Some(_) => ShflMode::Idx,
                None => return Err(cx.err("shfl needs a mode")),
            };
            m.ty()?;
            if o.len() < 4 || o.len() > 5 {
                return Err(cx.err("shfl takes 4 or 5 operands"));
            }
            let (d, p) = match &o[0] {
                Operand::Pair(d, p) => (cx.reg(d)?, Some(cx.pred(p)?)),
                d => (cx.dst(d)?, None),
            };
            WarpOp::Shfl {
                mode,
                d,
                p,
                a: cx.src(&o[1], Ty::B32)?,
                b: cx.src(&o[2], Ty::U32)?,
                c: cx.src(&o[3], Ty::U32)?,
            }
        }
        "vote" => {
            let mode = match m.one_of(&["all", "any", "uni", "ballot"]) {
                Some("all") => VoteMode::All,
                Some("any") => VoteMode::Any,
                Some("uni") => VoteMode::Uni,
                Some(_) => VoteMode::Ballot,
                None => return Err(cx.err("vote needs a mode")),
            };
            m.ty()?;
            if o.len() < 2 || o.len() > 3 {
                return Err(cx.err("vote takes 2 or 3 operands"));
            }
            let d = if mode == VoteMode::Ballot {
                Ok(cx.dst(&o[0])?)
            } else {
                Err(cx.pdst(&o[0])?)
            };
            WarpOp::Vote {
                mode,
                d,
                a: cx.psrc(&o[1])?,
            }
        }
        "activemask" => {
            arity(cx, i, 1)?;
            m.ty()?;
            WarpOp::Activemask { d: cx.dst(&o[0])? }
        }
        "match" => {
            let all = match m.one_of(&["any", "all"]) {
                Some("all") => true,
                Some(_) => false,
                None => return Err(cx.err("match needs .any or .all")),
            };
            let ty = m.ty()?;
            arity(cx, i, 3)?;
            let (d, p) = match &o[0] {
                Operand::Pair(d, p) => (cx.reg(d)?, Some(cx.pred(p)?)),
                d => (cx.dst(d)?, None),
            };
            WarpOp::Match {
                all,
                ty,
                d,
                p,
                a: cx.src(&o[1], ty)?,
            }
        }
        "redux" => {
            let op = match m.one_of(&["add", "min", "max", "and", "or", "xor"]) {
                Some("add") => ReduxOp::Add,
                Some("min") => ReduxOp::Min,
                Some("max") => ReduxOp::Max,
                Some("and") => ReduxOp::And,
                Some("or") => ReduxOp::Or,
                Some(_) => ReduxOp::Xor,
                None => return Err(cx.err("redux needs an operation")),
            };
            let ty = m.ty()?;
            if ty.bits() != 32 || ty.is_float() {
                return Err(LowerErr::Unsupported(format!("redux on {ty:?}")));
            }
            arity(cx, i, 3)?;
            WarpOp::Redux {
                op,
                signed: ty.is_signed(),
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
            }
        }
        _ => return Ok(None),
    };
    m.finish()?;
    Ok(Some(r))
}

/// Source lane and validity of `shfl` for `lane` (PTX ISA pseudo-code).
pub(crate) fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let clamp = c & 0x1f;
    let seg = (c >> 8) & 0x1f;
    let min_lane = lane & seg;
    let max_lane = min_lane | (clamp & !seg);
    let (j, ok) = match mode {
        ShflMode::Up => {
            let j = i64::from(lane) - i64::from(b);
            (j.max(-1) as i32, j >= i64::from(max_lane))
        }
        ShflMode::Down => {
            let j = lane as i64 + i64::from(b);
            (j.min(i64::from(i32::MAX)) as i32, j <= i64::from(max_lane))
        }
        ShflMode::Bfly => {
            let j = (lane ^ b) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Idx => {
            let j = (min_lane | (b & !seg)) as i32;
            (j, j <= max_lane as i32)
        }
    };
    if ok {
        ((j as u32) & 31, true)
    } else {
        (lane, false)
    }
}

pub(crate) fn exec(op: &WarpOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        WarpOp::Shfl {
            mode,
            d,
            p,
            a,
            b,
            c,
        } => {
            let (av, bv, cv) = (cx.src(a), cx.src(b), cx.src(c));
            let mut o = [0u64; 32];
            let mut valid = 0u32;
            for l in 0..32u32 {
                let (j, ok) = shfl_source(mode, l, bv[l as usize] as u32, cv[l as usize] as u32);
                o[l as usize] = av[j as usize] & 0xffff_ffff;
                valid |= u32::from(ok) << l;
            }
            cx.set(d, o, m);
            if let Some(p) = p {
                cx.pset(p, valid, m);
            }
        }
        WarpOp::Vote { mode, d, a } => {
            let v = cx.psrc(a) & m;
            match (mode, d) {
                (VoteMode::Ballot, Ok(r)) => cx.set(r, [u64::from(v); 32], m),
                (_, Err(p)) => {
                    let r = match mode {
                        VoteMode::All => v == m,
                        VoteMode::Any => v != 0,
                        _ => v == 0 || v == m,
                    };
                    cx.pset(p, if r { u32::MAX } else { 0 }, m);
                }
                _ => {}
            }
        }
        WarpOp::Activemask { d } => cx.set(d, [u64::from(m); 32], m),
        WarpOp::Match { all, ty, d, p, a } => {
            let av = cx.src(a);
            let w = if ty.bits() == 64 {
                u64::MAX
            } else {
                0xffff_ffff
            };
            let mut o = [0u64; 32];
            let mut pv = 0u32;
            for l in 0..32 {
                if m >> l & 1 == 0 {
                    continue;
                }
                let mut same = 0u32;
                for k in 0..32 {
                    if m >> k & 1 != 0 && av[k] & w == av[l] & w {
                        same |= 1 << k;
                    }
                }
                if all {
                    let eq = same == m;
                    o[l] = if eq { u64::from(m) } else { 0 };
                    pv |= u32::from(eq) << l;
                } else {
                    o[l] = u64::from(same);
                }
            }
            cx.set(d, o, m);
            if let Some(p) = p {
                cx.pset(p, pv, m);
            }
        }
        WarpOp::Redux { op, signed, d, a } => {
            let av = cx.src(a);
            let mut acc: Option<u32> = None;
            for (l, x) in av.iter().enumerate() {
                if m >> l & 1 == 0 {
                    continue;
                }
                let x = *x as u32;
                acc = Some(match acc {
                    None => x,
                    Some(y) => match op {
                        ReduxOp::Add => y.wrapping_add(x),
                        ReduxOp::Min if signed => (y as i32).min(x as i32) as u32,
                        ReduxOp::Max if signed => (y as i32).max(x as i32) as u32,
                        ReduxOp::Min => y.min(x),
                        ReduxOp::Max => y.max(x),
                        ReduxOp::And => y & x,
                        ReduxOp::Or => y | x,
                        ReduxOp::Xor => y ^ x,
                    },
                });
            }
            cx.set(d, [u64::from(acc.unwrap_or(0)); 32], m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::run_kernel;

    #[test]
    fn shfl_modes() {
        assert_eq!(shfl_source(ShflMode::Down, 30, 4, 0x1f), (30, false));
        assert_eq!(shfl_source(ShflMode::Down, 3, 4, 0x1f), (7, true));
        assert_eq!(shfl_source(ShflMode::Up, 1, 2, 0), (1, false));
        assert_eq!(shfl_source(ShflMode::Up, 5, 2, 0), (3, true));
        assert_eq!(shfl_source(ShflMode::Bfly, 5, 1, 0x1f), (4, true));
        assert_eq!(shfl_source(ShflMode::Idx, 9, 3, 0x1f), (3, true));
        // Width-8 segments (as __shfl_sync(m, v, 3, 8) emits: c = ((32-8)<<8) | 0x1f).
        assert_eq!(
            shfl_source(ShflMode::Idx, 9, 3, (24 << 8) | 0x1f),
            (11, true)
        );
        assert_eq!(
            shfl_source(ShflMode::Down, 6, 4, (24 << 8) | 0x1f),
            (6, false)
        );
    }

    #[test]
    fn votes_and_reductions_values() {
        let r = run_kernel(
            "mov.u32 %r1, %laneid; setp.lt.u32 %p1, %r1, 5; vote.sync.ballot.b32 %r2, %p1, -1;\
             vote.sync.any.pred %p2, %p1, -1; vote.sync.all.pred %p3, %p1, -1; selp.u32 %r3, 1, 0, %p2; selp.u32 %r4, 1, 0, %p3;\
             redux.sync.add.u32 %r5, %r1, -1; shfl.sync.bfly.b32 %r6|%p4, %r1, 1, 31, -1;\
             and.b32 %r9, %r1, 3; match.any.sync.b32 %r7, %r9, -1;\
             @%p1 activemask.b32 %r8;\
             mul.wide.u32 %rd1, %r1, 8; add.s64 %rd2, %rd_out, %rd1;\
             mov.b64 %rd3, {%r2, %r3}; st.global.u64 [%rd2], %rd3;\
             setp.eq.u32 %p5, %r1, 0; @%p5 mov.b64 %rd4, {%r4, %r5}; @%p5 st.global.u64 [%rd_out+256], %rd4;\
             setp.eq.u32 %p6, %r1, 1; @%p6 mov.b64 %rd4, {%r6, %r8}; @%p6 st.global.u64 [%rd_out+264], %rd4;\
             @%p6 cvt.u64.u32 %rd5, %r7; @%p6 st.global.u64 [%rd_out+272], %rd5;",
            32,
            35,
        )
        .unwrap();
        for v in &r[..32] {
            assert_eq!(*v, 0x1_0000_001f);
        }
        assert_eq!(r[32], (u64::from((0..32u32).sum::<u32>()) << 32));
        assert_eq!(r[33], 0x1f << 32);
        assert_eq!(r[34], 0x2222_2222);
    }
}
