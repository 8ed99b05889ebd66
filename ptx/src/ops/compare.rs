//! Comparisons and predicate logic: setp (all integer and ordered/unordered float comparisons, with
//! `.and/.or/.xor` combination), selp, set, slct, and/or/xor/not on predicates.

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, Mods, LR};
use crate::ir::{PReg, PSrc, Reg, Src};
use crate::num::{sext, zext};
use crate::ops::Ctx;
use crate::warp::FULL;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

const CMPS: &[&str] = &[
    "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu", "gtu",
    "geu", "num", "nan",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone)]
pub(crate) enum CmpOp {
    Setp {
        cmp: Cmp,
        ty: Ty,
        comb: Option<(BoolOp, PSrc)>,
        p: PReg,
        q: Option<PReg>,
        a: Src,
        b: Src,
    },
    Set {
        cmp: Cmp,
        ty: Ty,
        float_out: bool,
        comb: Option<(BoolOp, PSrc)>,
        d: Reg,
        a: Src,
        b: Src,
    },
    Selp {
        d: Reg,
        a: Src,
        b: Src,
        c: PSrc,
    },
    Slct {
        float: bool,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    PredLogic {
        op: PLogic,
        d: PReg,
        a: PSrc,
        b: PSrc,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PLogic {
    And,
    Or,
    Xor,
    Not,
}

fn cmp_of(s: &str) -> Cmp {
    match s {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        _ => Cmp::Nan,
    }
}

fn bool_op(m: &mut Mods<'_>) -> Option<BoolOp> {
    Some(match m.one_of(&["and", "or", "xor"])? {
        "and" => BoolOp::And,
        "or" => BoolOp::Or,
        _ => BoolOp::Xor,
    })
}

/// Lowers comparisons, selections and predicate logic; `None` for any other opcode (and for
/// `and`/`or`/`xor`/`not` on anything but predicates, which are integer operations).
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<CmpOp>> {
    let mut m = Mods::new(&i.mods);
    let o = &i.operands;
    let r = match i.opcode.as_str() {
        "setp" => {
            let cmp = cmp_of(
                m.one_of(CMPS)
                    .ok_or_else(|| cx.err("setp needs a comparison"))?,
            );
            let bop = bool_op(&mut m);
            let ty = m.ty()?;
            m.has("ftz");
            let (p, q) = match &o.first() {
                Some(Operand::Pair(p, q)) => (cx.pred(p)?, Some(cx.pred(q)?)),
                Some(p) => (cx.pdst(p)?, None),
                None => return Err(cx.err("setp needs operands")),
            };
            let comb = match bop {
                Some(b) => {
                    arity(cx, i, 4)?;
                    Some((b, cx.psrc(&o[3])?))
                }
                None => {
                    arity(cx, i, 3)?;
                    None
                }
            };
            CmpOp::Setp {
                cmp,
                ty,
                comb,
                p,
                q,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
            }
        }
        "set" => {
            let cmp = cmp_of(
                m.one_of(CMPS)
                    .ok_or_else(|| cx.err("set needs a comparison"))?,
            );
            let bop = bool_op(&mut m);
            m.has("ftz");
            let t = m.types();
            let [dty, sty] = t[..] else {
                return Err(cx.err("set needs destination and source types"));
            };
            let comb = match bop {
                Some(b) => {
                    arity(cx, i, 4)?;
                    Some((b, cx.psrc(&o[3])?))
                }
                None => {
                    arity(cx, i, 3)?;
                    None
                }
            };
            CmpOp::Set {
                cmp,
                ty: sty,
                float_out: dty == Ty::F32,
                comb,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], sty)?,
                b: cx.src(&o[2], sty)?,
            }
        }
        "selp" => {
            arity(cx, i, 4)?;
            let ty = m.ty()?;
            CmpOp::Selp {
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.psrc(&o[3])?,
            }
        }
        "slct" => {
            arity(cx, i, 4)?;
            m.has("ftz");
            let t = m.types();
            let [dty, cty] = t[..] else {
                return Err(cx.err("slct needs two types"));
            };
            CmpOp::Slct {
                float: cty == Ty::F32,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], dty)?,
                b: cx.src(&o[2], dty)?,
                c: cx.src(&o[3], cty)?,
            }
        }
        "and" | "or" | "xor" | "not" if i.mods.iter().any(|m| m == "pred") => {
            m.ty()?;
            let op = match i.opcode.as_str() {
                "and" => PLogic::And,
                "or" => PLogic::Or,
                "xor" => PLogic::Xor,
                _ => PLogic::Not,
            };
            if op == PLogic::Not {
                arity(cx, i, 2)?;
                CmpOp::PredLogic {
                    op,
                    d: cx.pdst(&o[0])?,
                    a: cx.psrc(&o[1])?,
                    b: PSrc::Const(false),
                }
            } else {
                arity(cx, i, 3)?;
                CmpOp::PredLogic {
                    op,
                    d: cx.pdst(&o[0])?,
                    a: cx.psrc(&o[1])?,
                    b: cx.psrc(&o[2])?,
                }
            }
        }
        _ => return Ok(None),
    };
    m.finish()?;
    Ok(Some(r))
}

/// One comparison on raw register bits of type `ty`.
#[inline(always)]
pub(crate) fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = match ty {
            Ty::F64 => (f64::from_bits(a), f64::from_bits(b)),
            Ty::F16 | Ty::F16x2 => (
                f64::from(crate::num::f16_to_f32(a as u16)),
                f64::from(crate::num::f16_to_f32(b as u16)),
            ),
            Ty::Bf16 | Ty::Bf16x2 => (
                f64::from(crate::num::bf16_to_f32(a as u16)),
                f64::from(crate::num::bf16_to_f32(b as u16)),
            ),
            _ => (
                f64::from(f32::from_bits(a as u32)),
                f64::from(f32::from_bits(b as u32)),
            ),
        };
        let un = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !un && x != y,
            Cmp::Lt | Cmp::Lo => x < y,
            Cmp::Le | Cmp::Ls => x <= y,
            Cmp::Gt | Cmp::Hi => x > y,
            Cmp::Ge | Cmp::Hs => x >= y,
            Cmp::Equ => un || x == y,
            Cmp::Neu => x != y,
            Cmp::Ltu => un || x < y,
            Cmp::Leu => un || x <= y,
            Cmp::Gtu => un || x > y,
            Cmp::Geu => un || x >= y,
            Cmp::Num => !un,
            Cmp::Nan => un,
        };
    }
    let w = ty.bits();
    if ty.is_signed() && !matches!(cmp, Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs) {
        let (x, y) = (sext(a, w), sext(b, w));
        return match cmp {
            Cmp::Eq | Cmp::Equ => x == y,
            Cmp::Ne | Cmp::Neu => x != y,
            Cmp::Lt | Cmp::Ltu => x < y,
            Cmp::Le | Cmp::Leu => x <= y,
            Cmp::Gt | Cmp::Gtu => x > y,
            Cmp::Ge | Cmp::Geu => x >= y,
            _ => false,
        };
    }
    let (x, y) = (zext(a, w), zext(b, w));
    match cmp {
        Cmp::Eq | Cmp::Equ => x == y,
        Cmp::Ne | Cmp::Neu => x != y,
        Cmp::Lt | Cmp::Lo | Cmp::Ltu => x < y,
        Cmp::Le | Cmp::Ls | Cmp::Leu => x <= y,
        Cmp::Gt | Cmp::Hi | Cmp::Gtu => x > y,
        Cmp::Ge | Cmp::Hs | Cmp::Geu => x >= y,
        _ => false,
    }
}

macro_rules! cmp_bits {
    ($a:expr, $b:expr, $f:expr) => {{
        let mut bits = 0u32;
        for l in 0..32 {
            bits |= u32::from($f($a[l], $b[l])) << l;
        }
        bits
    }};
}

fn cmp_mask(cx: &Ctx<'_, '_>, cmp: Cmp, ty: Ty, a: Src, b: Src) -> u32 {
    let (av, bv) = (cx.src(a), cx.src(b));
    match (cmp, ty) {
        (Cmp::Lt, Ty::S32) => cmp_bits!(av, bv, |x: u64, y: u64| (x as i32) < (y as i32)),
        (Cmp::Ge, Ty::S32) => cmp_bits!(av, bv, |x: u64, y: u64| (x as i32) >= (y as i32)),
        (Cmp::Gt, Ty::S32) => cmp_bits!(av, bv, |x: u64, y: u64| (x as i32) > (y as i32)),
        (Cmp::Eq, Ty::S32 | Ty::U32 | Ty::B32) => {
            cmp_bits!(av, bv, |x: u64, y: u64| x as u32 == y as u32)
        }
        (Cmp::Ne, Ty::S32 | Ty::U32 | Ty::B32) => {
            cmp_bits!(av, bv, |x: u64, y: u64| x as u32 != y as u32)
        }
        (Cmp::Lt, Ty::U32) => cmp_bits!(av, bv, |x: u64, y: u64| (x as u32) < (y as u32)),
        (Cmp::Ge, Ty::U32) => cmp_bits!(av, bv, |x: u64, y: u64| (x as u32) >= (y as u32)),
        _ => cmp_bits!(av, bv, |x, y| compare(cmp, ty, x, y)),
    }
}

fn combine(cx: &Ctx<'_, '_>, v: u32, comb: Option<(BoolOp, PSrc)>) -> u32 {
    match comb {
        None => v,
        Some((op, c)) => {
            let c = cx.psrc(c);
            match op {
                BoolOp::And => v & c,
                BoolOp::Or => v | c,
                BoolOp::Xor => v ^ c,
            }
        }
    }
}

pub(crate) fn exec(op: &CmpOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        CmpOp::Setp {
            cmp,
            ty,
            comb,
            p,
            q,
            a,
            b,
        } => {
            let v = cmp_mask(cx, cmp, ty, a, b);
            let pv = combine(cx, v, comb);
            let qv = combine(cx, !v, comb);
            cx.pset(p, pv, m);
            if let Some(q) = q {
                cx.pset(q, qv, m);
            }
        }
        CmpOp::Set {
            cmp,
            ty,
            float_out,
            comb,
            d,
            a,
            b,
        } => {
            let v = combine(cx, cmp_mask(cx, cmp, ty, a, b), comb);
            let one = if float_out {
                u64::from(1.0f32.to_bits())
            } else {
                0xffff_ffff
            };
            let mut o = [0u64; 32];
            for (l, x) in o.iter_mut().enumerate() {
                *x = if v >> l & 1 != 0 { one } else { 0 };
            }
            cx.set(d, o, m);
        }
        CmpOp::Selp { d, a, b, c } => {
            let c = cx.psrc(c);
            if c & m == m {
                let v = cx.src(a);
                cx.set(d, v, m);
            } else if c & m == 0 {
                let v = cx.src(b);
                cx.set(d, v, m);
            } else {
                let (av, bv) = (cx.src(a), cx.src(b));
                let mut o = [0u64; 32];
                for l in 0..32 {
                    o[l] = if c >> l & 1 != 0 { av[l] } else { bv[l] };
                }
                cx.set(d, o, m);
            }
        }
        CmpOp::Slct { float, d, a, b, c } => {
            let (av, bv, cv) = (cx.src(a), cx.src(b), cx.src(c));
            let mut o = [0u64; 32];
            for l in 0..32 {
                let take_a = if float {
                    f32::from_bits(cv[l] as u32) >= 0.0
                } else {
                    cv[l] as i32 >= 0
                };
                o[l] = if take_a { av[l] } else { bv[l] };
            }
            cx.set(d, o, m);
        }
        CmpOp::PredLogic { op, d, a, b } => {
            let (x, y) = (cx.psrc(a), cx.psrc(b));
            let v = match op {
                PLogic::And => x & y,
                PLogic::Or => x | y,
                PLogic::Xor => x ^ y,
                PLogic::Not => !x & FULL,
            };
            cx.pset(d, v, m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::eval;

    #[test]
    fn comparisons() {
        let nan = u64::from(f32::NAN.to_bits());
        let one = u64::from(1.0f32.to_bits());
        assert!(!compare(Cmp::Eq, Ty::F32, nan, nan));
        assert!(!compare(Cmp::Ne, Ty::F32, nan, one));
        assert!(compare(Cmp::Neu, Ty::F32, nan, one));
        assert!(compare(Cmp::Ltu, Ty::F32, nan, one));
        assert!(!compare(Cmp::Lt, Ty::F32, nan, one));
        assert!(compare(Cmp::Nan, Ty::F32, nan, one));
        assert!(compare(Cmp::Num, Ty::F32, one, one));
        assert!(compare(Cmp::Lt, Ty::S32, (-1i32) as u64, 0));
        assert!(!compare(Cmp::Lt, Ty::U32, (-1i32) as u64, 0));
        assert!(compare(Cmp::Hi, Ty::S32, (-1i32) as u64, 0));
        assert!(compare(Cmp::Gt, Ty::S64, 5, (-1i64) as u64));
        assert!(compare(
            Cmp::Le,
            Ty::F64,
            1.0f64.to_bits(),
            1.0f64.to_bits()
        ));
    }

    #[test]
    fn setp_selp_set_slct_and_pred_logic() {
        let r = eval(
            "mov.u32 %r1, 5; setp.gt.and.s32 %p1|%p2, %r1, 3, 1; selp.u64 %rd1, 1, 0, %p1; selp.u64 %rd2, 1, 0, %p2;\
             set.lt.u32.s32 %r2, %r1, 10; cvt.u64.u32 %rd3, %r2;\
             slct.u32.s32 %r3, 7, 8, -1; cvt.u64.u32 %rd4, %r3;\
             setp.eq.s32 %p3, %r1, 5; not.pred %p4, %p3; or.pred %p5, %p4, %p1; xor.pred %p6, %p5, %p3; selp.u64 %rd5, 1, 0, %p6;",
            5,
        );
        assert_eq!(r, vec![1, 0, 0xffff_ffff, 8, 0]);
    }
}
