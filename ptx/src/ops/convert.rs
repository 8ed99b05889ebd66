//! Conversions: `cvt` (int↔int with saturation, int↔float and float↔float with `.rn/.rz/.rm/.rp`
//! and `.rni/.rzi/.rmi/.rpi`, `.ftz`, `.sat`, f16/bf16 incl. packed `x2`, tf32) and `cvta` (generic ↔
//! state-space addresses, see the windows in [`crate::exec`]).

use crate::ast::{Instruction, StateSpace, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, LowerErr, Mods, LR};
use crate::ir::{Reg, Src};
use crate::memory::{LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW};
use crate::num::{
    bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, mask, round_to_f32, sext, zext, Rnd,
};
use crate::ops::Ctx;

/// Rounding of `cvt.tf32.f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tf32Rnd {
    /// To nearest, ties away from zero (`.rna`).
    Rna,
    /// To nearest, ties to even (`.rn`).
    Rn,
    /// Toward zero (`.rz`).
    Rz,
}

/// f32 bits → tf32 bits (sign, 8 exponent bits, 10 mantissa bits, 13 zero bits).
pub(crate) fn f32_to_tf32(bits: u32, rnd: Tf32Rnd, satfinite: bool) -> u32 {
    const LOW: u32 = (1 << 13) - 1;
    const MAX_FINITE: u32 = 0x7f7f_e000;
    let sign = bits & 0x8000_0000;
    let mag = bits & 0x7fff_ffff;
    if mag > 0x7f80_0000 {
        return 0x7fff_ffff; // NaN: the canonical one
    }
    if mag == 0x7f80_0000 {
        return if satfinite { sign | MAX_FINITE } else { bits };
    }
    let rounded = match rnd {
        Tf32Rnd::Rz => mag & !LOW,
        Tf32Rnd::Rna => (mag + (1 << 12)) & !LOW,
        Tf32Rnd::Rn => (mag + ((1 << 12) - 1) + ((mag >> 13) & 1)) & !LOW,
    };
    if rounded >= 0x7f80_0000 {
        return sign | if satfinite { MAX_FINITE } else { 0x7f80_0000 };
    }
    sign | rounded
}

/// Integer rounding of a float (`.rni` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IRnd {
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Debug, Clone)]
pub(crate) enum CvtOp {
    Cvt {
        dty: Ty,
        sty: Ty,
        irnd: Option<IRnd>,
        frnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvt.rn.f16x2.f32 d, a, b` and bf16x2: a → upper half, b → lower half.
    Pack2 { bf16: bool, d: Reg, a: Src, b: Src },
    /// `cvt.{rna,rn,rz}{.satfinite}.tf32.f32 d, a`: an f32 rounded to tf32's 10 mantissa bits,
    /// kept in a 32-bit register with the low 13 bits zero.
    Tf32 {
        rnd: Tf32Rnd,
        satfinite: bool,
        d: Reg,
        a: Src,
    },
    /// Generic ↔ space: `d = a + add` (wrapping), truncated to 32 bits if `narrow`.
    Cvta {
        add: u64,
        narrow: bool,
        d: Reg,
        a: Src,
    },
}

/// Lowers `cvta` and `cvt`; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<CvtOp>> {
    let cvta = match i.opcode.as_str() {
        "cvta" => true,
        "cvt" => false,
        _ => return Ok(None),
    };
    let mut m = Mods::new(&i.mods);
    let o = &i.operands;
    let r = if cvta {
        arity(cx, i, 2)?;
        let to = m.has("to");
        let space = match m.one_of(&["global", "shared", "local", "const", "param"]) {
            Some("shared") => StateSpace::Shared,
            Some("local") => StateSpace::Local,
            Some("param") => StateSpace::Param,
            Some(_) => StateSpace::Global,
            None => return Err(cx.err("cvta needs a state space")),
        };
        m.has("cta");
        let ty = m.ty()?;
        let base = match space {
            StateSpace::Shared => SHARED_WINDOW,
            StateSpace::Local => LOCAL_WINDOW,
            StateSpace::Param => PARAM_WINDOW,
            _ => 0,
        };
        let narrow = ty.bits() == 32;
        if narrow && !to && base != 0 {
            return Err(LowerErr::Unsupported("32-bit generic addresses".into()));
        }
        CvtOp::Cvta {
            add: if to { base.wrapping_neg() } else { base },
            narrow,
            d: cx.dst(&o[0])?,
            a: cx.src(&o[1], ty)?,
        }
    } else {
        let irnd = match m.one_of(&["rni", "rzi", "rmi", "rpi"]) {
            Some("rni") => Some(IRnd::Rni),
            Some("rzi") => Some(IRnd::Rzi),
            Some("rmi") => Some(IRnd::Rmi),
            Some("rpi") => Some(IRnd::Rpi),
            _ => None,
        };
        let rna = m.has("rna");
        let satfinite = m.has("satfinite");
        let frnd = m.rnd().unwrap_or(Rnd::Rn);
        let ftz = m.has("ftz");
        let sat = m.has("sat");
        m.has("relu");
        let t = m.types();
        let [dty, sty] = t[..] else {
            return Err(cx.err("cvt needs destination and source types"));
        };
        if dty == Ty::Tf32 {
            arity(cx, i, 2)?;
            if sty != Ty::F32 {
                return Err(LowerErr::Unsupported(format!("cvt tf32 <- {sty:?}")));
            }
            let rnd = match (rna, frnd) {
                (true, _) => Tf32Rnd::Rna,
                (false, Rnd::Rz) => Tf32Rnd::Rz,
                (false, Rnd::Rn) => Tf32Rnd::Rn,
                (false, other) => {
                    return Err(LowerErr::Unsupported(format!(
                        "cvt.tf32 rounding {other:?}"
                    )))
                }
            };
            CvtOp::Tf32 {
                rnd,
                satfinite,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], sty)?,
            }
        } else if rna || satfinite {
            return Err(LowerErr::Unsupported(
                ".rna/.satfinite outside cvt.tf32".into(),
            ));
        } else if matches!(dty, Ty::F16x2 | Ty::Bf16x2) {
            arity(cx, i, 3)?;
            if sty != Ty::F32 {
                return Err(LowerErr::Unsupported("packed cvt from non-f32".into()));
            }
            CvtOp::Pack2 {
                bf16: dty == Ty::Bf16x2,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], sty)?,
                b: cx.src(&o[2], sty)?,
            }
        } else {
            arity(cx, i, 2)?;
            if dty.bits() > 64 || sty.bits() > 64 || dty == Ty::Pred || sty == Ty::Pred {
                return Err(LowerErr::Unsupported(format!("cvt {dty:?} <- {sty:?}")));
            }
            CvtOp::Cvt {
                dty,
                sty,
                irnd,
                frnd,
                ftz,
                sat,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], sty)?,
            }
        }
    };
    m.finish()?;
    Ok(Some(r))
}

fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn round_int(x: f64, r: IRnd) -> f64 {
    match r {
        IRnd::Rni => x.round_ties_even(),
        IRnd::Rzi => x.trunc(),
        IRnd::Rmi => x.floor(),
        IRnd::Rpi => x.ceil(),
    }
}

fn int_range(t: Ty) -> (i128, i128) {
    let w = t.bits();
    if t.is_signed() {
        (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1)
    } else {
        (0, (1i128 << w) - 1)
    }
}

/// One `cvt` on raw bits.
pub(crate) fn cvt(
    dty: Ty,
    sty: Ty,
    irnd: Option<IRnd>,
    frnd: Rnd,
    ftz: bool,
    sat: bool,
    x: u64,
) -> u64 {
    // Source value: exact integer or exact float.
    let fval = match sty {
        Ty::F32 => {
            let v = f32::from_bits(x as u32);
            Some(f64::from(if ftz { ftz32(v) } else { v }))
        }
        Ty::F64 => Some(f64::from_bits(x)),
        Ty::F16 => Some(f64::from(f16_to_f32(x as u16))),
        Ty::Bf16 => Some(f64::from(bf16_to_f32(x as u16))),
        _ => None,
    };
    let ival: i128 = if sty.is_signed() {
        i128::from(sext(x, sty.bits()))
    } else {
        i128::from(zext(x, sty.bits()))
    };
    if !dty.is_float() {
        let v: i128 = match fval {
            Some(f) => {
                if f.is_nan() {
                    0
                } else {
                    let r = round_int(f, irnd.unwrap_or(IRnd::Rzi));
                    let (lo, hi) = int_range(dty);
                    (r as i128).clamp(lo, hi)
                }
            }
            None => {
                if sat {
                    let (lo, hi) = int_range(dty);
                    ival.clamp(lo, hi)
                } else {
                    ival
                }
            }
        };
        let w = dty.bits();
        return if dty.is_signed() {
            (sext(v as u64, w)) as u64
        } else {
            (v as u64) & mask(w)
        };
    }
    // Float destination.
    let clamp01 = |f: f64| {
        if sat {
            if f.is_nan() {
                0.0
            } else {
                f.clamp(0.0, 1.0)
            }
        } else {
            f
        }
    };
    match dty {
        Ty::F64 => {
            let v = match fval {
                Some(f) => irnd.map_or(f, |r| round_int(f, r)),
                None => {
                    let r = ival as f64;
                    let err = ival - r as i128;
                    crate::num::adjust64(r, err as f64, frnd)
                }
            };
            clamp01(v).to_bits()
        }
        Ty::F32 => {
            let v = match fval {
                Some(f) => match irnd {
                    Some(r) => round_int(f, r) as f32,
                    None => round_to_f32(f, 0.0, frnd),
                },
                None => {
                    if frnd == Rnd::Rn {
                        ival as f32
                    } else {
                        let hi = ival as f64;
                        round_to_f32(hi, (ival - hi as i128) as f64, frnd)
                    }
                }
            };
            let v = if ftz { ftz32(v) } else { v };
            let v = if sat {
                if v.is_nan() {
                    0.0
                } else {
                    v.clamp(0.0, 1.0)
                }
            } else {
                v
            };
            u64::from(v.to_bits())
        }
        Ty::F16 | Ty::Bf16 => {
            let f = match fval {
                Some(f) => irnd.map_or(f, |r| round_int(f, r)),
                None => ival as f64,
            };
            let f = clamp01(f) as f32;
            u64::from(if dty == Ty::F16 {
                f32_to_f16(f)
            } else {
                f32_to_bf16(f)
            })
        }
        _ => 0,
    }
}

pub(crate) fn exec(op: &CvtOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        CvtOp::Cvt {
            dty,
            sty,
            irnd,
            frnd,
            ftz,
            sat,
            d,
            a,
        } => match (dty, sty, sat, ftz) {
            (Ty::U64, Ty::U32, false, _) => cx.map1(d, a, m, |x| x & 0xffff_ffff),
            (Ty::S64, Ty::S32, false, _) => cx.map1(d, a, m, |x| i64::from(x as i32) as u64),
            (Ty::F32, Ty::S32, false, false) if frnd == Rnd::Rn => {
                cx.map1(d, a, m, |x| u64::from((x as i32 as f32).to_bits()))
            }
            (Ty::F32, Ty::U32, false, false) if frnd == Rnd::Rn => {
                cx.map1(d, a, m, |x| u64::from((x as u32 as f32).to_bits()))
            }
            _ => cx.map1(d, a, m, |x| cvt(dty, sty, irnd, frnd, ftz, sat, x)),
        },
        CvtOp::Pack2 { bf16, d, a, b } => cx.map2(d, a, b, m, |x, y| {
            let conv = |v: u64| {
                let f = f32::from_bits(v as u32);
                u64::from(if bf16 { f32_to_bf16(f) } else { f32_to_f16(f) })
            };
            conv(x) << 16 | conv(y)
        }),
        CvtOp::Tf32 {
            rnd,
            satfinite,
            d,
            a,
        } => cx.map1(d, a, m, |x| {
            u64::from(f32_to_tf32(x as u32, rnd, satfinite))
        }),
        CvtOp::Cvta { add, narrow, d, a } => cx.map1(d, a, m, |x| {
            let v = x.wrapping_add(add);
            if narrow {
                v & 0xffff_ffff
            } else {
                v
            }
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounding() {
        use Tf32Rnd::*;
        let t = |bits: u32, r| f32_to_tf32(bits, r, false);
        // 1 + 2^-11 exactly half an ulp of tf32 (ulp 2^-10): ties away / to even / toward zero.
        assert_eq!(t(0x3f80_1000, Rna), 0x3f80_2000);
        assert_eq!(t(0x3f80_1000, Rn), 0x3f80_0000);
        assert_eq!(t(0x3f80_3000, Rn), 0x3f80_4000);
        assert_eq!(t(0x3f80_1fff, Rz), 0x3f80_0000);
        assert_eq!(t(0x3f80_1001, Rn), 0x3f80_2000);
        assert_eq!(t(0xbf80_1000, Rna), 0xbf80_2000);
        // Rounding into the next binade, and past the largest finite value.
        assert_eq!(t(0x3fff_f000, Rna), 0x4000_0000);
        assert_eq!(t(0x7f7f_f000, Rna), 0x7f80_0000);
        assert_eq!(f32_to_tf32(0x7f7f_f000, Rna, true), 0x7f7f_e000);
        assert_eq!(f32_to_tf32(0xff80_0000, Rn, true), 0xff7f_e000);
        assert_eq!(t(0x7fc0_0001, Rn), 0x7fff_ffff);
        assert_eq!(t(0x0000_1000, Rna), 0x0000_2000);
    }

    #[test]
    fn tf32_in_a_kernel() {
        let r = crate::ops::testutil::eval(
            "mov.b32 %f1, 0x3F801000; cvt.rna.tf32.f32 %r1, %f1; cvt.u64.u32 %rd1, %r1;\
             cvt.rn.tf32.f32 %r2, %f1; cvt.u64.u32 %rd2, %r2;\
             mov.b32 %f2, 0x7F7FF000; cvt.rna.satfinite.tf32.f32 %r3, %f2; cvt.u64.u32 %rd3, %r3;",
            3,
        );
        assert_eq!(r, [0x3f80_2000, 0x3f80_0000, 0x7f7f_e000]);
    }

    fn c(dty: Ty, sty: Ty, irnd: Option<IRnd>, frnd: Rnd, sat: bool, x: u64) -> u64 {
        cvt(dty, sty, irnd, frnd, false, sat, x)
    }

    #[test]
    fn int_to_int() {
        assert_eq!(
            c(
                Ty::S64,
                Ty::S32,
                None,
                Rnd::Rn,
                false,
                (-5i32) as u32 as u64
            ) as i64,
            -5
        );
        assert_eq!(
            c(
                Ty::U64,
                Ty::S32,
                None,
                Rnd::Rn,
                false,
                (-5i32) as u32 as u64
            ) as i64,
            -5
        );
        assert_eq!(c(Ty::U8, Ty::S32, None, Rnd::Rn, true, 300), 255);
        assert_eq!(c(Ty::U8, Ty::S32, None, Rnd::Rn, true, (-3i32) as u64), 0);
        assert_eq!(
            c(Ty::S8, Ty::S32, None, Rnd::Rn, true, (-300i32) as u64) as i8,
            -128
        );
        assert_eq!(c(Ty::U16, Ty::U32, None, Rnd::Rn, false, 0x12345), 0x2345);
        assert_eq!(c(Ty::U32, Ty::S64, None, Rnd::Rn, true, (-1i64) as u64), 0);
    }

    #[test]
    fn float_to_int() {
        let f = |v: f32| u64::from(v.to_bits());
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rni), Rnd::Rn, false, f(2.5)) as i32,
            2
        );
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rni), Rnd::Rn, false, f(3.5)) as i32,
            4
        );
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rzi), Rnd::Rn, false, f(-2.7)) as i32,
            -2
        );
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rmi), Rnd::Rn, false, f(-2.2)) as i32,
            -3
        );
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rpi), Rnd::Rn, false, f(2.2)) as i32,
            3
        );
        assert_eq!(
            c(Ty::S32, Ty::F32, Some(IRnd::Rzi), Rnd::Rn, false, f(1e20)) as i32,
            i32::MAX
        );
        assert_eq!(
            c(Ty::U32, Ty::F32, Some(IRnd::Rzi), Rnd::Rn, false, f(-5.0)) as u32,
            0
        );
        assert_eq!(
            c(
                Ty::S32,
                Ty::F32,
                Some(IRnd::Rzi),
                Rnd::Rn,
                false,
                f(f32::NAN)
            ),
            0
        );
        assert_eq!(
            c(
                Ty::U64,
                Ty::F64,
                Some(IRnd::Rzi),
                Rnd::Rn,
                false,
                1e30f64.to_bits()
            ),
            u64::MAX
        );
    }

    #[test]
    fn to_float() {
        let big = (1u64 << 24) + 1;
        let g = |r: Rnd| f32::from_bits(c(Ty::F32, Ty::U64, None, r, false, big) as u32);
        assert_eq!(g(Rnd::Rn), 16_777_216.0);
        assert_eq!(g(Rnd::Rz), 16_777_216.0);
        assert_eq!(g(Rnd::Rp), 16_777_218.0);
        let d = f64::from_bits(c(Ty::F64, Ty::U64, None, Rnd::Rz, false, u64::MAX));
        assert_eq!(d, 18_446_744_073_709_549_568.0);
        let third = (1.0f64 / 3.0).to_bits();
        assert_eq!(
            f32::from_bits(c(Ty::F32, Ty::F64, None, Rnd::Rz, false, third) as u32),
            0.333_333_3
        );
        assert_eq!(
            f32::from_bits(c(Ty::F32, Ty::F64, None, Rnd::Rp, false, third) as u32),
            0.333_333_34
        );
        assert_eq!(
            f32::from_bits(c(
                Ty::F32,
                Ty::F32,
                Some(IRnd::Rni),
                Rnd::Rn,
                false,
                u64::from(2.5f32.to_bits())
            ) as u32),
            2.0
        );
        assert_eq!(
            f32::from_bits(c(
                Ty::F32,
                Ty::F32,
                None,
                Rnd::Rn,
                true,
                u64::from(1.5f32.to_bits())
            ) as u32),
            1.0
        );
    }

    #[test]
    fn halves() {
        for v in [0.0f32, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 1e-3, 1.23456] {
            let h = f32_to_f16(v);
            let back = f16_to_f32(h);
            assert!(
                (back - v).abs() <= v.abs() * 1e-3 + 6e-8,
                "{v} -> {h:#x} -> {back}"
            );
        }
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(f32::from_bits(0x3380_0000)), 1);
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
