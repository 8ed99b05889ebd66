//! Floating-point arithmetic: add sub mul fma mad div min max abs neg copysign (f32, f64, f16, bf16,
//! packed x2), rcp sqrt rsqrt, the `.approx` transcendental functions, and testp.
//!
//! Rounding: `.rn` uses the host's IEEE operations (correctly rounded). The directed modes
//! `.rz/.rm/.rp` are emulated exactly: f32 results are computed in f64 together with the sign of the
//! remaining error (error-free transformations: TwoSum, FMA-based TwoProduct, division and square-root
//! residuals) and then rounded in the requested direction; f64 results use the same transformations
//! directly. `.ftz` flushes f32 subnormal inputs and results to signed zero; `.sat` clamps to [0, 1].
//!
//! `.approx` functions (sin, cos, lg2, ex2, tanh, rsqrt, rcp/sqrt/div `.approx`) return the host
//! libm's (correctly rounded or near so) result, which is at least as accurate as the GPU's hardware
//! approximation; programs relying on the exact hardware error will see small differences.

use crate::ast::{Instruction, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, Mods, LR};
use crate::ir::{PReg, Reg, Src};
use crate::num::{adjust64, bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, round_to_f32, Rnd};
use crate::ops::Ctx;
use crate::warp::Lanes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FBin {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    MinNan,
    MaxNan,
    Copysign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FUn {
    Abs,
    Neg,
    Rcp,
    Sqrt,
    Rsqrt,
    Sin,
    Cos,
    Lg2,
    Ex2,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestKind {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

/// Flags shared by the float operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FMode {
    pub(crate) rnd: Rnd,
    pub(crate) ftz: bool,
    pub(crate) sat: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum FloatOp {
    Bin {
        op: FBin,
        ty: Ty,
        md: FMode,
        d: Reg,
        a: Src,
        b: Src,
    },
    Fma {
        ty: Ty,
        md: FMode,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Un {
        op: FUn,
        ty: Ty,
        md: FMode,
        d: Reg,
        a: Src,
    },
    Testp {
        kind: TestKind,
        ty: Ty,
        d: PReg,
        a: Src,
    },
}

/// Lowers the floating-point arithmetic of one float type; `None` for any other instruction
/// (an `add` on integers is int's, a `setp.f32` compare's).
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<FloatOp>> {
    let mut m = Mods::new(&i.mods);
    let o = &i.operands;
    let Ok(ty) = m.ty() else {
        return Ok(None);
    };
    if !matches!(
        ty,
        Ty::F32 | Ty::F64 | Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2
    ) {
        return Ok(None);
    }
    let rnd = m.rnd();
    let approx = m.has("approx");
    let full = m.has("full");
    let md = FMode {
        rnd: rnd.unwrap_or(Rnd::Rn),
        ftz: m.has("ftz"),
        sat: m.has("sat"),
    };
    let _ = (approx, full);
    let op = i.opcode.as_str();
    let r = match op {
        "add" | "sub" | "mul" | "div" | "min" | "max" | "copysign" => {
            arity(cx, i, 3)?;
            let nan = m.has("NaN");
            m.has("xorsign");
            m.has("abs");
            let b = match op {
                "add" => FBin::Add,
                "sub" => FBin::Sub,
                "mul" => FBin::Mul,
                "div" => FBin::Div,
                "min" if nan => FBin::MinNan,
                "max" if nan => FBin::MaxNan,
                "min" => FBin::Min,
                "max" => FBin::Max,
                _ => FBin::Copysign,
            };
            if b == FBin::Div && ty == Ty::F64 && rnd.is_none() && !approx {
                return Err(cx.err("div.f64 needs a rounding modifier"));
            }
            FloatOp::Bin {
                op: b,
                ty,
                md,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
            }
        }
        "fma" | "mad" => {
            arity(cx, i, 4)?;
            FloatOp::Fma {
                ty,
                md,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], ty)?,
            }
        }
        "abs" | "neg" | "rcp" | "sqrt" | "rsqrt" | "sin" | "cos" | "lg2" | "ex2" | "tanh" => {
            arity(cx, i, 2)?;
            let u = match op {
                "abs" => FUn::Abs,
                "neg" => FUn::Neg,
                "rcp" => FUn::Rcp,
                "sqrt" => FUn::Sqrt,
                "rsqrt" => FUn::Rsqrt,
                "sin" => FUn::Sin,
                "cos" => FUn::Cos,
                "lg2" => FUn::Lg2,
                "ex2" => FUn::Ex2,
                _ => FUn::Tanh,
            };
            FloatOp::Un {
                op: u,
                ty,
                md,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
            }
        }
        "testp" => {
            arity(cx, i, 2)?;
            let k = match m.one_of(&[
                "finite",
                "infinite",
                "number",
                "notanumber",
                "normal",
                "subnormal",
            ]) {
                Some("finite") => TestKind::Finite,
                Some("infinite") => TestKind::Infinite,
                Some("number") => TestKind::Number,
                Some("notanumber") => TestKind::NotANumber,
                Some("normal") => TestKind::Normal,
                Some(_) => TestKind::Subnormal,
                None => return Err(cx.err("testp needs a test")),
            };
            FloatOp::Testp {
                kind: k,
                ty,
                d: cx.pdst(&o[0])?,
                a: cx.src(&o[1], ty)?,
            }
        }
        _ => return Ok(None),
    };
    m.finish()?;
    Ok(Some(r))
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// A directed-rounding result that overflowed to infinity from finite operands stops at the
/// largest finite value when rounding toward zero (or away from that infinity).
fn overflow64(r: f64, rnd: Rnd, finite_inputs: bool) -> f64 {
    let toward_zero = match rnd {
        Rnd::Rz => true,
        Rnd::Rm => r > 0.0,
        Rnd::Rp => r < 0.0,
        Rnd::Rn => false,
    };
    if r.is_infinite() && finite_inputs && toward_zero {
        f64::MAX.copysign(r)
    } else {
        r
    }
}

#[inline(always)]
fn f32_of(x: u64) -> f32 {
    f32::from_bits(x as u32)
}
#[inline(always)]
fn bits32(x: f32) -> u64 {
    u64::from(x.to_bits())
}
#[inline(always)]
fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}
fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}
fn sat64(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// f32 binary operation with all modes.
pub(crate) fn bin32(op: FBin, md: FMode, a: f32, b: f32) -> f32 {
    let (a, b) = if md.ftz { (ftz32(a), ftz32(b)) } else { (a, b) };
    let r = match op {
        FBin::Add | FBin::Sub | FBin::Mul | FBin::Div if md.rnd != Rnd::Rn => {
            let (x, y) = (
                f64::from(a),
                f64::from(if op == FBin::Sub { -b } else { b }),
            );
            match op {
                FBin::Add | FBin::Sub => {
                    let (s, t) = two_sum(x, y);
                    round_to_f32(s, t, md.rnd)
                }
                FBin::Mul => round_to_f32(x * y, 0.0, md.rnd),
                _ => {
                    let q = x / y;
                    let rem = (-q).mul_add(y, x);
                    round_to_f32(q, sign(rem) * sign(y), md.rnd)
                }
            }
        }
        FBin::Add => a + b,
        FBin::Sub => a - b,
        FBin::Mul => a * b,
        FBin::Div => a / b,
        FBin::Min => a.min(b),
        FBin::Max => a.max(b),
        FBin::MinNan => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.min(b)
            }
        }
        FBin::MaxNan => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        }
        FBin::Copysign => b.copysign(a),
    };
    finish32(r, md)
}

#[inline(always)]
fn finish32(r: f32, md: FMode) -> f32 {
    let r = if md.ftz { ftz32(r) } else { r };
    if md.sat {
        sat32(r)
    } else {
        r
    }
}

/// f64 binary operation with all modes.
pub(crate) fn bin64(op: FBin, md: FMode, a: f64, b: f64) -> f64 {
    let r = match op {
        FBin::Add | FBin::Sub => {
            let b = if op == FBin::Sub { -b } else { b };
            let (s, t) = two_sum(a, b);
            adjust64(s, t, md.rnd)
        }
        FBin::Mul => {
            let p = a * b;
            adjust64(p, a.mul_add(b, -p), md.rnd)
        }
        FBin::Div => {
            let q = a / b;
            let rem = (-q).mul_add(b, a);
            adjust64(q, sign(rem) * sign(b), md.rnd)
        }
        FBin::Min => a.min(b),
        FBin::Max => a.max(b),
        FBin::MinNan => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }
        FBin::MaxNan => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        }
        FBin::Copysign => b.copysign(a),
    };
    let r = overflow64(r, md.rnd, a.is_finite() && b.is_finite());
    if md.sat {
        sat64(r)
    } else {
        r
    }
}

pub(crate) fn fma32(md: FMode, a: f32, b: f32, c: f32) -> f32 {
    let (a, b, c) = if md.ftz {
        (ftz32(a), ftz32(b), ftz32(c))
    } else {
        (a, b, c)
    };
    let r = if md.rnd == Rnd::Rn {
        a.mul_add(b, c)
    } else {
        let p = f64::from(a) * f64::from(b);
        let (s, t) = two_sum(p, f64::from(c));
        round_to_f32(s, t, md.rnd)
    };
    finish32(r, md)
}

pub(crate) fn fma64(md: FMode, a: f64, b: f64, c: f64) -> f64 {
    let r = a.mul_add(b, c);
    let r = if md.rnd == Rnd::Rn {
        r
    } else {
        let p = a * b;
        let e1 = a.mul_add(b, -p);
        let (s, t) = two_sum(p, c);
        overflow64(
            adjust64(r, (s - r) + t + e1, md.rnd),
            md.rnd,
            a.is_finite() && b.is_finite() && c.is_finite(),
        )
    };
    if md.sat {
        sat64(r)
    } else {
        r
    }
}

pub(crate) fn un32(op: FUn, md: FMode, a: f32) -> f32 {
    let a = if md.ftz { ftz32(a) } else { a };
    let directed = md.rnd != Rnd::Rn;
    let r = match op {
        FUn::Abs => a.abs(),
        FUn::Neg => -a,
        FUn::Rcp if directed => {
            let x = f64::from(a);
            let q = 1.0 / x;
            let rem = (-q).mul_add(x, 1.0);
            round_to_f32(q, sign(rem) * sign(x), md.rnd)
        }
        FUn::Rcp => 1.0 / a,
        FUn::Sqrt if directed => {
            let x = f64::from(a);
            let s = x.sqrt();
            round_to_f32(s, sign((-s).mul_add(s, x)), md.rnd)
        }
        FUn::Sqrt => a.sqrt(),
        FUn::Rsqrt => (1.0 / f64::from(a).sqrt()) as f32,
        FUn::Sin => a.sin(),
        FUn::Cos => a.cos(),
        FUn::Lg2 => a.log2(),
        FUn::Ex2 => a.exp2(),
        FUn::Tanh => a.tanh(),
    };
    finish32(r, md)
}

pub(crate) fn un64(op: FUn, md: FMode, a: f64) -> f64 {
    let r = match op {
        FUn::Abs => a.abs(),
        FUn::Neg => -a,
        FUn::Rcp => {
            let q = 1.0 / a;
            let rem = (-q).mul_add(a, 1.0);
            adjust64(q, sign(rem) * sign(a), md.rnd)
        }
        FUn::Sqrt => {
            let s = a.sqrt();
            adjust64(s, sign((-s).mul_add(s, a)), md.rnd)
        }
        FUn::Rsqrt => 1.0 / a.sqrt(),
        FUn::Sin => a.sin(),
        FUn::Cos => a.cos(),
        FUn::Lg2 => a.log2(),
        FUn::Ex2 => a.exp2(),
        FUn::Tanh => a.tanh(),
    };
    if md.sat {
        sat64(r)
    } else {
        r
    }
}

/// Applies `f` to each 16-bit half of a (packed) half-precision value.
fn halves(ty: Ty, x: [u64; 3], f: impl Fn([f32; 3]) -> f32) -> u64 {
    type Conv = (fn(u16) -> f32, fn(f32) -> u16);
    let (to, from): Conv = match ty {
        Ty::Bf16 | Ty::Bf16x2 => (bf16_to_f32, f32_to_bf16),
        _ => (f16_to_f32, f32_to_f16),
    };
    let n = if matches!(ty, Ty::F16x2 | Ty::Bf16x2) {
        2
    } else {
        1
    };
    let mut out = 0u64;
    for h in 0..n {
        let v = x.map(|w| to((w >> (16 * h)) as u16));
        out |= u64::from(from(f(v))) << (16 * h);
    }
    out
}

fn test(kind: TestKind, ty: Ty, x: u64) -> bool {
    let v = if ty == Ty::F64 {
        f64::from_bits(x)
    } else {
        f64::from(f32_of(x))
    };
    let sub = if ty == Ty::F64 {
        v.is_subnormal()
    } else {
        f32_of(x).is_subnormal()
    };
    match kind {
        TestKind::Finite => v.is_finite(),
        TestKind::Infinite => v.is_infinite(),
        TestKind::Number => !v.is_nan(),
        TestKind::NotANumber => v.is_nan(),
        TestKind::Normal => v.is_normal() && !sub,
        TestKind::Subnormal => sub,
    }
}

const RN: FMode = FMode {
    rnd: Rnd::Rn,
    ftz: false,
    sat: false,
};
const RN_FTZ: FMode = FMode {
    rnd: Rnd::Rn,
    ftz: true,
    sat: false,
};

/// `fma.rn.f32` over 32 lanes: with the host's FMA instructions where the CPU has them (the
/// default x86-64 target lacks them, and `mul_add` then calls a slow software `fmaf`). Both are
/// correctly rounded, so the results are bit-identical.
#[inline(always)]
fn fma32_lanes(x: &Lanes, y: &Lanes, z: &Lanes) -> Lanes {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `fma32_lanes_fma` only requires the `fma` target feature, detected just above.
        return unsafe { fma32_lanes_fma(x, y, z) };
    }
    fma32_lanes_any(x, y, z)
}

#[inline(always)]
fn fma32_lanes_any(x: &Lanes, y: &Lanes, z: &Lanes) -> Lanes {
    let mut o = [0u64; 32];
    for l in 0..32 {
        o[l] = bits32(f32_of(x[l]).mul_add(f32_of(y[l]), f32_of(z[l])));
    }
    o
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn fma32_lanes_fma(x: &Lanes, y: &Lanes, z: &Lanes) -> Lanes {
    fma32_lanes_any(x, y, z)
}

pub(crate) fn exec(op: &FloatOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        FloatOp::Bin {
            op,
            ty: Ty::F32,
            md,
            d,
            a,
            b,
        } => match (op, md) {
            (FBin::Add, RN) => cx.map2(d, a, b, m, |x, y| bits32(f32_of(x) + f32_of(y))),
            (FBin::Sub, RN) => cx.map2(d, a, b, m, |x, y| bits32(f32_of(x) - f32_of(y))),
            (FBin::Mul, RN) => cx.map2(d, a, b, m, |x, y| bits32(f32_of(x) * f32_of(y))),
            (FBin::Add, RN_FTZ) => cx.map2(d, a, b, m, |x, y| {
                bits32(ftz32(ftz32(f32_of(x)) + ftz32(f32_of(y))))
            }),
            (FBin::Mul, RN_FTZ) => cx.map2(d, a, b, m, |x, y| {
                bits32(ftz32(ftz32(f32_of(x)) * ftz32(f32_of(y))))
            }),
            _ => cx.map2(d, a, b, m, |x, y| {
                bits32(bin32(op, md, f32_of(x), f32_of(y)))
            }),
        },
        FloatOp::Bin {
            op,
            ty: Ty::F64,
            md,
            d,
            a,
            b,
        } => match (op, md) {
            (FBin::Add, RN) => cx.map2(d, a, b, m, |x, y| {
                (f64::from_bits(x) + f64::from_bits(y)).to_bits()
            }),
            (FBin::Mul, RN) => cx.map2(d, a, b, m, |x, y| {
                (f64::from_bits(x) * f64::from_bits(y)).to_bits()
            }),
            _ => cx.map2(d, a, b, m, |x, y| {
                bin64(op, md, f64::from_bits(x), f64::from_bits(y)).to_bits()
            }),
        },
        FloatOp::Bin {
            op,
            ty,
            md,
            d,
            a,
            b,
        } => cx.map2(d, a, b, m, |x, y| {
            halves(ty, [x, y, 0], |v| {
                bin32(op, FMode { ftz: false, ..md }, v[0], v[1])
            })
        }),
        FloatOp::Fma {
            ty: Ty::F32,
            md,
            d,
            a,
            b,
            c,
        } => match md {
            RN if m == crate::warp::FULL => {
                let (x, y, z) = (cx.src(a), cx.src(b), cx.src(c));
                cx.set(d, fma32_lanes(&x, &y, &z), m);
            }
            RN => cx.map3(d, a, b, c, m, |x, y, z| {
                bits32(f32_of(x).mul_add(f32_of(y), f32_of(z)))
            }),
            _ => cx.map3(d, a, b, c, m, |x, y, z| {
                bits32(fma32(md, f32_of(x), f32_of(y), f32_of(z)))
            }),
        },
        FloatOp::Fma {
            ty: Ty::F64,
            md,
            d,
            a,
            b,
            c,
        } => match md {
            RN => cx.map3(d, a, b, c, m, |x, y, z| {
                f64::from_bits(x)
                    .mul_add(f64::from_bits(y), f64::from_bits(z))
                    .to_bits()
            }),
            _ => cx.map3(d, a, b, c, m, |x, y, z| {
                fma64(md, f64::from_bits(x), f64::from_bits(y), f64::from_bits(z)).to_bits()
            }),
        },
        FloatOp::Fma { ty, md, d, a, b, c } => cx.map3(d, a, b, c, m, |x, y, z| {
            halves(ty, [x, y, z], |v| {
                fma32(FMode { ftz: false, ..md }, v[0], v[1], v[2])
            })
        }),
        FloatOp::Un {
            op,
            ty: Ty::F32,
            md,
            d,
            a,
        } => cx.map1(d, a, m, |x| bits32(un32(op, md, f32_of(x)))),
        FloatOp::Un {
            op,
            ty: Ty::F64,
            md,
            d,
            a,
        } => cx.map1(d, a, m, |x| un64(op, md, f64::from_bits(x)).to_bits()),
        FloatOp::Un { op, ty, md, d, a } => cx.map1(d, a, m, |x| {
            halves(ty, [x, 0, 0], |v| {
                un32(op, FMode { ftz: false, ..md }, v[0])
            })
        }),
        FloatOp::Testp { kind, ty, d, a } => {
            let v = cx.src(a);
            let mut bits = 0u32;
            for (l, x) in v.iter().enumerate() {
                bits |= u32::from(test(kind, ty, *x)) << l;
            }
            cx.pset(d, bits, m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::num::{next_down32, next_down64, next_up32, next_up64};

    /// `fma.rn.f32` on a whole warp (hardware FMA where available) matches `mul_add` on a
    /// partially active warp and the host's correctly rounded result.
    #[test]
    fn fma_whole_and_partial_warps() {
        let body = "mov.u32 %r1, %tid.x; cvt.rn.f32.u32 %f1, %r1; mov.f32 %f2, 0f3DCCCCCD; mov.f32 %f3, 0fBF800001;\
             fma.rn.f32 %f4, %f1, %f2, %f3; mov.b32 %r2, %f4; cvt.u64.u32 %rd1, %r2;\
             mul.wide.u32 %rd2, %r1, 8; add.s64 %rd3, %rd_out, %rd2; st.global.u64 [%rd3], %rd1;";
        for threads in [32, 7] {
            let r = crate::ops::testutil::run_kernel(body, threads, 32).unwrap();
            for t in 0..threads as usize {
                let want =
                    (t as f32).mul_add(f32::from_bits(0x3DCC_CCCD), f32::from_bits(0xBF80_0001));
                assert_eq!(
                    r[t],
                    u64::from(want.to_bits()),
                    "threads {threads} lane {t}"
                );
            }
        }
    }
    use crate::ops::testutil::eval;

    fn md(rnd: Rnd) -> FMode {
        FMode {
            rnd,
            ftz: false,
            sat: false,
        }
    }

    #[test]
    fn directed_rounding_f32() {
        let (a, b) = (1.0f32, 1e-10f32);
        assert_eq!(bin32(FBin::Add, md(Rnd::Rn), a, b), 1.0);
        assert_eq!(bin32(FBin::Add, md(Rnd::Rp), a, b), next_up32(1.0));
        assert_eq!(bin32(FBin::Add, md(Rnd::Rm), a, b), 1.0);
        assert_eq!(bin32(FBin::Add, md(Rnd::Rm), a, -b), next_down32(1.0));
        assert_eq!(bin32(FBin::Add, md(Rnd::Rz), a, -b), next_down32(1.0));
        assert_eq!(bin32(FBin::Add, md(Rnd::Rz), -a, b), -next_down32(1.0));
        assert_eq!(bin32(FBin::Div, md(Rnd::Rz), 1.0, 3.0), 0.333_333_3);
        assert_eq!(
            bin32(FBin::Div, md(Rnd::Rp), 1.0, 3.0),
            next_up32(0.333_333_3)
        );
        assert_eq!(bin32(FBin::Div, md(Rnd::Rm), 1.0, 3.0), 0.333_333_3);
        assert_eq!(bin32(FBin::Div, md(Rnd::Rn), 1.0, 3.0), 1.0 / 3.0);
        assert_eq!(bin32(FBin::Mul, md(Rnd::Rz), f32::MAX, 2.0), f32::MAX);
        assert_eq!(bin32(FBin::Mul, md(Rnd::Rn), f32::MAX, 2.0), f32::INFINITY);
        assert_eq!(un32(FUn::Sqrt, md(Rnd::Rp), 2.0), next_up32(2.0f32.sqrt()));
        assert_eq!(un32(FUn::Sqrt, md(Rnd::Rm), 2.0), 2.0f32.sqrt());
        assert_eq!(fma32(md(Rnd::Rp), 1.0, 1.0, 1e-30), next_up32(1.0));
        assert_eq!(fma32(md(Rnd::Rm), 1.0, 1.0, 1e-30), 1.0);
        assert_eq!(fma32(md(Rnd::Rm), 2.0, 3.0, 1.0), 7.0);
        // Exact results are unchanged by any mode.
        for r in [Rnd::Rn, Rnd::Rz, Rnd::Rm, Rnd::Rp] {
            assert_eq!(bin32(FBin::Add, md(r), 1.5, 2.25), 3.75);
        }
    }

    #[test]
    fn directed_rounding_f64() {
        let third = 1.0f64 / 3.0;
        assert_eq!(bin64(FBin::Div, md(Rnd::Rm), 1.0, 3.0), third);
        assert_eq!(bin64(FBin::Div, md(Rnd::Rp), 1.0, 3.0), next_up64(third));
        assert_eq!(bin64(FBin::Add, md(Rnd::Rp), 1.0, 1e-30), next_up64(1.0));
        assert_eq!(bin64(FBin::Add, md(Rnd::Rz), -1.0, -1e-30), -1.0);
        assert_eq!(
            bin64(FBin::Add, md(Rnd::Rm), -1.0, -1e-30),
            next_down64(-1.0)
        );
        assert_eq!(bin64(FBin::Mul, md(Rnd::Rp), third, 3.0), 1.0);
        assert_eq!(bin64(FBin::Mul, md(Rnd::Rz), f64::MAX, 2.0), f64::MAX);
        assert_eq!(fma64(md(Rnd::Rp), 1.0, 1.0, 1e-300), next_up64(1.0));
        assert_eq!(fma64(md(Rnd::Rz), 1.0, 1.0, -1e-300), next_down64(1.0));
        assert_eq!(fma64(md(Rnd::Rz), 1.5, 2.0, 1.0), 4.0);
        for (r, below) in [(Rnd::Rz, true), (Rnd::Rm, true), (Rnd::Rp, false)] {
            let s = un64(FUn::Sqrt, md(r), 2.0);
            let rem = (-s).mul_add(s, 2.0);
            assert!(if below { rem >= 0.0 } else { rem <= 0.0 }, "{r:?}");
        }
    }

    #[test]
    fn ftz_sat_minmax() {
        let tiny = f32::from_bits(1);
        let ftz = FMode {
            rnd: Rnd::Rn,
            ftz: true,
            sat: false,
        };
        assert_eq!(bin32(FBin::Add, ftz, tiny, 0.0), 0.0);
        assert_eq!(bin32(FBin::Add, md(Rnd::Rn), tiny, 0.0), tiny);
        let sat = FMode {
            rnd: Rnd::Rn,
            ftz: false,
            sat: true,
        };
        assert_eq!(bin32(FBin::Add, sat, 0.75, 0.5), 1.0);
        assert_eq!(bin32(FBin::Mul, sat, f32::NAN, 1.0), 0.0);
        assert_eq!(bin32(FBin::Min, md(Rnd::Rn), f32::NAN, 1.0), 1.0);
        assert!(bin32(FBin::MinNan, md(Rnd::Rn), f32::NAN, 1.0).is_nan());
        assert_eq!(bin32(FBin::Copysign, md(Rnd::Rn), -1.0, 2.0), -2.0);
    }

    #[test]
    fn in_kernel() {
        let r = eval(
            "mov.f32 %f1, 0f3F800000; mov.f32 %f2, 0f40400000; div.rz.f32 %f3, %f1, %f2; mov.b32 %r1, %f3; cvt.u64.u32 %rd1, %r1;\
             sqrt.rn.f64 %fd1, 0d4000000000000000; mov.b64 %rd2, %fd1;\
             testp.notanumber.f32 %p1, %f3; selp.u64 %rd3, 1, 0, %p1;\
             ex2.approx.ftz.f32 %f4, %f2; mov.b32 %r2, %f4; cvt.u64.u32 %rd4, %r2;\
             mov.b16 %h1, 0x3C00; add.f16 %h2, %h1, %h1; cvt.u64.u16 %rd5, %h2;",
            5,
        );
        assert_eq!(f32::from_bits(r[0] as u32), 0.333_333_3);
        assert_eq!(f64::from_bits(r[1]), 2.0f64.sqrt());
        assert_eq!(r[2], 0);
        assert_eq!(f32::from_bits(r[3] as u32), 8.0);
        assert_eq!(r[4], 0x4000);
    }
}
