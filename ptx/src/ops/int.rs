//! Integer arithmetic and bit manipulation: add sub mul mad (lo/hi/wide/sat), carry chains
//! (`.cc`, addc, subc, madc), mul24 mad24 sad div rem abs neg min max, and or xor not cnot shl shr,
//! lop3 shf prmt bfe bfi popc clz brev bfind.
//!
//! Registers keep a value in their low bits; operations whose result depends on the high input
//! bits (division, right shifts, comparisons, hi products) normalise their inputs first.
//! Division by zero gives all ones (quotient) or the dividend (remainder): PTX leaves it unspecified.

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, LowerErr, Mods, LR};
use crate::ir::{PReg, Reg, Src};
use crate::num::{mask, sext, zext};
use crate::ops::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IBin {
    Add,
    Sub,
    AddSat,
    SubSat,
    MulLo,
    MulHi,
    MulWide,
    Mul24Lo,
    Mul24Hi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    /// `min`/`max` of each 16-bit half (`.s16x2`/`.u16x2`), `.relu` clamping at 0.
    MinMax16x2 {
        max: bool,
        signed: bool,
        relu: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IUn {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
    Bfind,
    BfindShift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MadKind {
    Lo,
    Hi,
    HiSat,
    Wide,
    Lo24,
    Hi24,
    Sad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarryKind {
    Add,
    Sub,
    MadLo,
    MadHi,
}

#[derive(Debug, Clone)]
pub(crate) enum IntOp {
    Bin {
        op: IBin,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    Un {
        op: IUn,
        ty: Ty,
        d: Reg,
        a: Src,
    },
    Mad {
        kind: MadKind,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Carry {
        kind: CarryKind,
        cin: bool,
        cout: bool,
        ty: Ty,
        cc: PReg,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Lop3 {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        lut: u8,
    },
    Shf {
        left: bool,
        wrap: bool,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Prmt {
        mode: u8,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Bfe {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Bfi {
        ty: Ty,
        d: Reg,
        f: Src,
        b: Src,
        pos: Src,
        len: Src,
    },
}

/// Lowers the integer operations; `None` for any other instruction (the dispatch asks this
/// family last, so an untyped or unknown opcode is nobody's).
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<IntOp>> {
    let mut m = Mods::new(&i.mods);
    let o = &i.operands;
    let op = i.opcode.as_str();
    let Some(&ty) = m.types().last() else {
        return Ok(None);
    };
    if ty.bits() > 64 || ty == Ty::Pred {
        return Err(LowerErr::Unsupported(format!("`{op}` on {ty:?}")));
    }
    let carry_in = matches!(op, "addc" | "subc" | "madc");
    let cc_out = m.has("cc");
    let r = match op {
        "add" | "sub" if !cc_out => {
            arity(cx, i, 3)?;
            let sat = m.has("sat");
            let bop = match (op, sat) {
                ("add", false) => IBin::Add,
                ("add", true) => IBin::AddSat,
                ("sub", false) => IBin::Sub,
                _ => IBin::SubSat,
            };
            IntOp::Bin {
                op: bop,
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
            }
        }
        "add" | "sub" | "addc" | "subc" => {
            arity(cx, i, 3)?;
            let kind = if op.starts_with("add") {
                CarryKind::Add
            } else {
                CarryKind::Sub
            };
            let cc = cx.carry()?;
            IntOp::Carry {
                kind,
                cin: carry_in,
                cout: cc_out,
                ty,
                cc,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: Src::Imm(0),
            }
        }
        "mad" | "madc" if cc_out || carry_in => {
            arity(cx, i, 4)?;
            let kind = if m.has("hi") {
                CarryKind::MadHi
            } else if m.has("lo") {
                CarryKind::MadLo
            } else {
                return Err(LowerErr::Unsupported("mad.cc needs .lo or .hi".into()));
            };
            let cc = cx.carry()?;
            IntOp::Carry {
                kind,
                cin: carry_in,
                cout: cc_out,
                ty,
                cc,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], ty)?,
            }
        }
        "mul" | "mul24" => {
            arity(cx, i, 3)?;
            let bop = match (op, m.one_of(&["lo", "hi", "wide"])) {
                ("mul", Some("hi")) => IBin::MulHi,
                ("mul", Some("wide")) => IBin::MulWide,
                ("mul", _) => IBin::MulLo,
                (_, Some("hi")) => IBin::Mul24Hi,
                _ => IBin::Mul24Lo,
            };
            IntOp::Bin {
                op: bop,
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
            }
        }
        "mad" | "mad24" | "sad" => {
            arity(cx, i, 4)?;
            let kind = match (op, m.one_of(&["lo", "hi", "wide"])) {
                ("sad", _) => MadKind::Sad,
                ("mad", Some("hi")) if m.has("sat") => MadKind::HiSat,
                ("mad", Some("hi")) => MadKind::Hi,
                ("mad", Some("wide")) => MadKind::Wide,
                ("mad", _) => MadKind::Lo,
                (_, Some("hi")) => MadKind::Hi24,
                _ => MadKind::Lo24,
            };
            let cty = if kind == MadKind::Wide {
                wide_ty(ty)
            } else {
                ty
            };
            IntOp::Mad {
                kind,
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], cty)?,
            }
        }
        "min" | "max" if matches!(ty, Ty::S16x2 | Ty::U16x2) => {
            arity(cx, i, 3)?;
            let op = IBin::MinMax16x2 {
                max: op == "max",
                signed: ty == Ty::S16x2,
                relu: m.has("relu"),
            };
            IntOp::Bin {
                op,
                ty: Ty::B32,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], Ty::B32)?,
                b: cx.src(&o[2], Ty::B32)?,
            }
        }
        "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" => {
            arity(cx, i, 3)?;
            let bop = match op {
                "div" => IBin::Div,
                "rem" => IBin::Rem,
                "min" => IBin::Min,
                "max" => IBin::Max,
                "and" => IBin::And,
                "or" => IBin::Or,
                "xor" => IBin::Xor,
                "shl" => IBin::Shl,
                _ => IBin::Shr,
            };
            let bty = if matches!(bop, IBin::Shl | IBin::Shr) {
                Ty::U32
            } else {
                ty
            };
            IntOp::Bin {
                op: bop,
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], bty)?,
            }
        }
        "abs" | "neg" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" => {
            arity(cx, i, 2)?;
            let u = match op {
                "abs" => IUn::Abs,
                "neg" => IUn::Neg,
                "not" => IUn::Not,
                "cnot" => IUn::Cnot,
                "popc" => IUn::Popc,
                "clz" => IUn::Clz,
                "brev" => IUn::Brev,
                _ if m.has("shiftamt") => IUn::BfindShift,
                _ => IUn::Bfind,
            };
            IntOp::Un {
                op: u,
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
            }
        }
        "lop3" => {
            arity(cx, i, 5)?;
            let Operand::Int(lut) = o[4] else {
                return Err(cx.err("lop3 needs an immediate LUT"));
            };
            IntOp::Lop3 {
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], ty)?,
                lut: lut as u8,
            }
        }
        "shf" => {
            arity(cx, i, 4)?;
            let left = match m.one_of(&["l", "r"]) {
                Some("l") => true,
                Some(_) => false,
                None => return Err(cx.err("shf needs .l or .r")),
            };
            let wrap = m.one_of(&["wrap", "clamp"]) == Some("wrap");
            IntOp::Shf {
                left,
                wrap,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], Ty::U32)?,
            }
        }
        "prmt" => {
            arity(cx, i, 4)?;
            let mode = match m.one_of(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]) {
                None => 0,
                Some("f4e") => 1,
                Some("b4e") => 2,
                Some("rc8") => 3,
                Some("ecl") => 4,
                Some("ecr") => 5,
                Some(_) => 6,
            };
            IntOp::Prmt {
                mode,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                c: cx.src(&o[3], Ty::U32)?,
            }
        }
        "bfe" => {
            arity(cx, i, 4)?;
            IntOp::Bfe {
                ty,
                d: cx.dst(&o[0])?,
                a: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], Ty::U32)?,
                c: cx.src(&o[3], Ty::U32)?,
            }
        }
        "bfi" => {
            arity(cx, i, 5)?;
            IntOp::Bfi {
                ty,
                d: cx.dst(&o[0])?,
                f: cx.src(&o[1], ty)?,
                b: cx.src(&o[2], ty)?,
                pos: cx.src(&o[3], Ty::U32)?,
                len: cx.src(&o[4], Ty::U32)?,
            }
        }
        _ => return Ok(None),
    };
    if let IntOp::Bin {
        op: IBin::MulWide,
        ty,
        ..
    } = &r
    {
        if ty.bits() > 32 {
            return Err(LowerErr::Unsupported("mul.wide on 64-bit".into()));
        }
    }
    m.finish()?;
    Ok(Some(r))
}

fn wide_ty(t: Ty) -> Ty {
    match t {
        Ty::S16 => Ty::S32,
        Ty::U16 => Ty::U32,
        Ty::S32 => Ty::S64,
        _ => Ty::U64,
    }
}

#[inline(always)]
fn sat_s(v: i128, bits: u32) -> u64 {
    let max = (1i128 << (bits - 1)) - 1;
    let min = -(1i128 << (bits - 1));
    v.clamp(min, max) as u64
}

pub(crate) fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u64;
    for i in 0..8 {
        if lut >> i & 1 != 0 {
            let x = if i & 4 != 0 { a } else { !a };
            let y = if i & 2 != 0 { b } else { !b };
            let z = if i & 1 != 0 { c } else { !c };
            r |= x & y & z;
        }
    }
    r
}

pub(crate) fn prmt(mode: u8, a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b as u32 as u64) << 32 | a as u32 as u64).to_le_bytes();
    let sel = (c & 3) as usize;
    let mut out = [0u8; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = match mode {
            0 => {
                let s = (c >> (4 * i)) as usize & 0xf;
                let v = bytes[s & 7];
                if s & 8 != 0 {
                    if v & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    v
                }
            }
            1 => bytes[(sel + i) & 7],
            2 => bytes[(sel + 8 - i) & 7],
            3 => bytes[sel],
            4 => bytes[i.max(sel)],
            5 => bytes[i.min(sel)],
            _ => bytes[(sel & 1) * 2 + (i & 1)],
        };
    }
    u64::from(u32::from_le_bytes(out))
}

fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let w = ty.bits() as u64;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let a = zext(a, w as u32);
    let sbit = if !ty.is_signed() || len == 0 {
        0
    } else {
        let b = (pos + len - 1).min(w - 1);
        a >> b & 1
    };
    let mut d = 0u64;
    for i in 0..w {
        let bit = if i < len && pos + i < w {
            a >> (pos + i) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

fn bfi(ty: Ty, f: u64, b: u64, pos: u64, len: u64) -> u64 {
    let w = u64::from(ty.bits());
    let pos = pos & 0xff;
    let len = len & 0xff;
    let mut d = b;
    let mut i = 0;
    while i < len && pos + i < w {
        let bit = f >> i & 1;
        d = (d & !(1 << (pos + i))) | bit << (pos + i);
        i += 1;
    }
    d
}

fn unary(op: IUn, ty: Ty, a: u64) -> u64 {
    let w = ty.bits();
    match op {
        IUn::Neg => a.wrapping_neg(),
        IUn::Abs => sext(a, w).wrapping_abs() as u64,
        IUn::Not => !a,
        IUn::Cnot => u64::from(zext(a, w) == 0),
        IUn::Popc => u64::from(zext(a, w).count_ones()),
        IUn::Clz => u64::from(zext(a, w).leading_zeros() - (64 - w)),
        IUn::Brev => zext(a, w).reverse_bits() >> (64 - w),
        IUn::Bfind | IUn::BfindShift => {
            let v = if ty.is_signed() && sext(a, w) < 0 {
                zext(!a, w)
            } else {
                zext(a, w)
            };
            if v == 0 {
                0xffff_ffff
            } else {
                let pos = 63 - u64::from(v.leading_zeros());
                if op == IUn::BfindShift {
                    u64::from(w) - 1 - pos
                } else {
                    pos
                }
            }
        }
    }
}

/// The binary integer operation on one lane (used by the generic path and by tests).
#[inline(always)]
fn binary(op: IBin, ty: Ty, a: u64, b: u64) -> u64 {
    let w = ty.bits();
    let s = ty.is_signed();
    match op {
        IBin::Add => a.wrapping_add(b),
        IBin::Sub => a.wrapping_sub(b),
        IBin::AddSat => sat_s(i128::from(sext(a, w)) + i128::from(sext(b, w)), w),
        IBin::SubSat => sat_s(i128::from(sext(a, w)) - i128::from(sext(b, w)), w),
        IBin::MulLo => a.wrapping_mul(b),
        IBin::MulHi => {
            if s {
                ((i128::from(sext(a, w)) * i128::from(sext(b, w))) >> w) as u64
            } else {
                ((u128::from(zext(a, w)) * u128::from(zext(b, w))) >> w) as u64
            }
        }
        IBin::MulWide => {
            if s {
                (sext(a, w).wrapping_mul(sext(b, w))) as u64
            } else {
                zext(a, w).wrapping_mul(zext(b, w))
            }
        }
        IBin::Mul24Lo | IBin::Mul24Hi => {
            let p = if s {
                (sext(a, 24) * sext(b, 24)) as u64
            } else {
                zext(a, 24) * zext(b, 24)
            };
            if op == IBin::Mul24Hi {
                p >> 16
            } else {
                p
            }
        }
        IBin::Div => {
            if s {
                let (x, y) = (sext(a, w), sext(b, w));
                if y == 0 {
                    u64::MAX
                } else {
                    x.wrapping_div(y) as u64
                }
            } else {
                zext(a, w).checked_div(zext(b, w)).unwrap_or(u64::MAX)
            }
        }
        IBin::Rem => {
            if s {
                let (x, y) = (sext(a, w), sext(b, w));
                if y == 0 {
                    x as u64
                } else {
                    x.wrapping_rem(y) as u64
                }
            } else {
                let (x, y) = (zext(a, w), zext(b, w));
                x.checked_rem(y).unwrap_or(x)
            }
        }
        IBin::MinMax16x2 { max, signed, relu } => {
            let mut r = 0u64;
            for k in [0u32, 16] {
                let (x, y) = ((a >> k) & 0xffff, (b >> k) & 0xffff);
                let v = if signed {
                    let (x, y) = (x as u16 as i16, y as u16 as i16);
                    let v = if max { x.max(y) } else { x.min(y) };
                    u64::from((if relu { v.max(0) } else { v }) as u16)
                } else if max {
                    x.max(y)
                } else {
                    x.min(y)
                };
                r |= v << k;
            }
            r
        }
        IBin::Min => {
            if s {
                sext(a, w).min(sext(b, w)) as u64
            } else {
                zext(a, w).min(zext(b, w))
            }
        }
        IBin::Max => {
            if s {
                sext(a, w).max(sext(b, w)) as u64
            } else {
                zext(a, w).max(zext(b, w))
            }
        }
        IBin::And => a & b,
        IBin::Or => a | b,
        IBin::Xor => a ^ b,
        IBin::Shl => {
            let sh = b as u32;
            if sh >= w {
                0
            } else {
                a << sh
            }
        }
        IBin::Shr => {
            let sh = (b as u32).min(w);
            if s {
                (sext(a, w) >> sh.min(w - 1)) as u64
            } else if sh >= w {
                0
            } else {
                zext(a, w) >> sh
            }
        }
    }
}

fn mad(kind: MadKind, ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    let w = ty.bits();
    match kind {
        MadKind::Lo => a.wrapping_mul(b).wrapping_add(c),
        MadKind::Hi => binary(IBin::MulHi, ty, a, b).wrapping_add(c),
        MadKind::HiSat => {
            let p = (i128::from(sext(a, w)) * i128::from(sext(b, w))) >> w;
            sat_s(p + i128::from(sext(c, w)), w)
        }
        MadKind::Wide => binary(IBin::MulWide, ty, a, b).wrapping_add(c),
        MadKind::Lo24 => binary(IBin::Mul24Lo, ty, a, b).wrapping_add(c),
        MadKind::Hi24 => binary(IBin::Mul24Hi, ty, a, b).wrapping_add(c),
        MadKind::Sad => {
            let d = if ty.is_signed() {
                sext(a, w).abs_diff(sext(b, w))
            } else {
                zext(a, w).abs_diff(zext(b, w))
            };
            d.wrapping_add(c)
        }
    }
}

macro_rules! bin_fast {
    ($cx:expr, $d:expr, $a:expr, $b:expr, $m:expr, $op:expr, $ty:expr, [$($t:path),*]) => {
        match $ty {
            $($t => $cx.map2($d, $a, $b, $m, |x, y| binary($op, $t, x, y)),)*
            t => $cx.map2($d, $a, $b, $m, |x, y| binary($op, t, x, y)),
        }
    };
}

pub(crate) fn exec(op: &IntOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        IntOp::Bin { op, ty, d, a, b } => match op {
            IBin::Add => cx.map2(d, a, b, m, |x, y| x.wrapping_add(y)),
            IBin::Sub => cx.map2(d, a, b, m, |x, y| x.wrapping_sub(y)),
            IBin::MulLo => cx.map2(d, a, b, m, |x, y| x.wrapping_mul(y)),
            IBin::And => cx.map2(d, a, b, m, |x, y| x & y),
            IBin::Or => cx.map2(d, a, b, m, |x, y| x | y),
            IBin::Xor => cx.map2(d, a, b, m, |x, y| x ^ y),
            IBin::MulWide => match ty {
                Ty::S32 => cx.map2(d, a, b, m, |x, y| {
                    (i64::from(x as i32) * i64::from(y as i32)) as u64
                }),
                Ty::U32 => cx.map2(d, a, b, m, |x, y| u64::from(x as u32) * u64::from(y as u32)),
                t => cx.map2(d, a, b, m, |x, y| binary(IBin::MulWide, t, x, y)),
            },
            IBin::Shl => match ty.bits() {
                32 => cx.map2(d, a, b, m, |x, y| {
                    if (y as u32) < 32 {
                        x << (y as u32)
                    } else {
                        0
                    }
                }),
                64 => cx.map2(d, a, b, m, |x, y| {
                    if (y as u32) < 64 {
                        x << (y as u32)
                    } else {
                        0
                    }
                }),
                _ => cx.map2(d, a, b, m, |x, y| binary(IBin::Shl, ty, x, y)),
            },
            _ => bin_fast!(
                cx,
                d,
                a,
                b,
                m,
                op,
                ty,
                [Ty::S32, Ty::U32, Ty::B32, Ty::S64, Ty::U64, Ty::B64]
            ),
        },
        IntOp::Un { op, ty, d, a } => cx.map1(d, a, m, |x| unary(op, ty, x)),
        IntOp::Mad {
            kind,
            ty,
            d,
            a,
            b,
            c,
        } => match (kind, ty) {
            (MadKind::Lo, _) => cx.map3(d, a, b, c, m, |x, y, z| x.wrapping_mul(y).wrapping_add(z)),
            (MadKind::Wide, Ty::S32) => cx.map3(d, a, b, c, m, |x, y, z| {
                ((i64::from(x as i32) * i64::from(y as i32)) as u64).wrapping_add(z)
            }),
            (MadKind::Wide, Ty::U32) => cx.map3(d, a, b, c, m, |x, y, z| {
                (u64::from(x as u32) * u64::from(y as u32)).wrapping_add(z)
            }),
            _ => cx.map3(d, a, b, c, m, |x, y, z| mad(kind, ty, x, y, z)),
        },
        IntOp::Carry {
            kind,
            cin,
            cout,
            ty,
            cc,
            d,
            a,
            b,
            c,
        } => {
            let (av, bv, cv) = (cx.src(a), cx.src(b), cx.src(c));
            let flags = cx.psrc(crate::ir::PSrc::Reg(cc, false));
            let w = ty.bits();
            let mut o = [0u64; 32];
            let mut carry = 0u32;
            for l in 0..32 {
                let ci = if cin { u128::from(flags >> l & 1) } else { 0 };
                let (x, y, z) = (
                    u128::from(zext(av[l], w)),
                    u128::from(zext(bv[l], w)),
                    u128::from(zext(cv[l], w)),
                );
                let (r, co) = match kind {
                    CarryKind::Add => {
                        let r = x + y + ci;
                        (r, r >> w & 1)
                    }
                    CarryKind::Sub => {
                        let r = x.wrapping_sub(y).wrapping_sub(ci);
                        (r, u128::from(x < y + ci))
                    }
                    CarryKind::MadLo | CarryKind::MadHi => {
                        let p = x * y;
                        let p = if kind == CarryKind::MadHi {
                            p >> w
                        } else {
                            p & u128::from(mask(w))
                        };
                        let r = p + z + ci;
                        (r, r >> w & 1)
                    }
                };
                o[l] = zext(r as u64, w);
                carry |= (co as u32) << l;
            }
            cx.set(d, o, m);
            if cout {
                cx.pset(cc, carry, m);
            }
        }
        IntOp::Lop3 { d, a, b, c, lut } => cx.map3(d, a, b, c, m, |x, y, z| lop3(x, y, z, lut)),
        IntOp::Shf {
            left,
            wrap,
            d,
            a,
            b,
            c,
        } => cx.map3(d, a, b, c, m, |x, y, z| {
            let n = if wrap {
                (z & 31) as u32
            } else {
                (z as u32).min(32)
            };
            let v = (y & 0xffff_ffff) << 32 | (x & 0xffff_ffff);
            if left {
                (v << n) >> 32
            } else {
                (v >> n) & 0xffff_ffff
            }
        }),
        IntOp::Prmt { mode, d, a, b, c } => cx.map3(d, a, b, c, m, |x, y, z| prmt(mode, x, y, z)),
        IntOp::Bfe { ty, d, a, b, c } => cx.map3(d, a, b, c, m, |x, y, z| bfe(ty, x, y, z)),
        IntOp::Bfi {
            ty,
            d,
            f,
            b,
            pos,
            len,
        } => {
            let (fv, bv, pv, lv) = (cx.src(f), cx.src(b), cx.src(pos), cx.src(len));
            let mut o = [0u64; 32];
            for l in 0..32 {
                o[l] = bfi(ty, fv[l], bv[l], pv[l], lv[l]);
            }
            cx.set(d, o, m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::eval;

    #[test]
    fn packed_16x2_min_max() {
        // Halves: a = (-3, 7), b = (2, -9), high half first.
        let r = eval(
            "mov.b32 %r1, 0xFFFD0007; mov.b32 %r2, 0x0002FFF7;\
             min.s16x2 %r3, %r1, %r2; cvt.u64.u32 %rd1, %r3;\
             max.s16x2 %r4, %r1, %r2; cvt.u64.u32 %rd2, %r4;\
             min.u16x2 %r5, %r1, %r2; cvt.u64.u32 %rd3, %r5;\
             max.relu.s16x2 %r6, %r1, %r1; cvt.u64.u32 %rd4, %r6;",
            4,
        );
        assert_eq!(r, [0xFFFD_FFF7, 0x0002_0007, 0x0002_0007, 0x0000_0007]);
    }

    #[test]
    fn lane_semantics() {
        assert_eq!(
            binary(IBin::Div, Ty::S32, (-7i32) as u32 as u64, 2) as i32,
            -3
        );
        assert_eq!(binary(IBin::Div, Ty::U32, 7, 0) as u32, u32::MAX);
        assert_eq!(binary(IBin::Rem, Ty::S32, (-7i32) as u64, 0) as i32, -7);
        assert_eq!(
            binary(IBin::Div, Ty::S32, i32::MIN as u64, (-1i32) as u64) as i32,
            i32::MIN
        );
        assert_eq!(binary(IBin::Shr, Ty::S32, (-16i32) as u64, 40) as i32, -1);
        assert_eq!(
            binary(IBin::Shr, Ty::U32, 0xffff_ffff_8000_0000, 31) as u32,
            1
        );
        assert_eq!(binary(IBin::Shl, Ty::B32, 1, 32) as u32, 0);
        assert_eq!(
            binary(IBin::AddSat, Ty::S32, i32::MAX as u64, 1) as i32,
            i32::MAX
        );
        assert_eq!(
            binary(IBin::SubSat, Ty::S32, i32::MIN as u64, 1) as i32,
            i32::MIN
        );
        assert_eq!(
            binary(IBin::MulHi, Ty::U32, 0x9e37_79b9, 0xffff_ffff) as u32,
            0x9e37_79b8
        );
        assert_eq!(binary(IBin::MulHi, Ty::S64, (-1i64) as u64, 5) as i64, -1);
        assert_eq!(
            binary(IBin::Mul24Hi, Ty::U32, 0xff_ffff, 0xff_ffff) as u32,
            0xffff_fe00
        );
        assert_eq!(binary(IBin::Min, Ty::S32, (-1i32) as u64, 3) as i32, -1);
        assert_eq!(binary(IBin::Min, Ty::U32, (-1i32) as u64, 3) as u32, 3);
        assert_eq!(unary(IUn::Clz, Ty::B32, 1), 31);
        assert_eq!(unary(IUn::Clz, Ty::B64, 0), 64);
        assert_eq!(unary(IUn::Brev, Ty::B32, 1), 0x8000_0000);
        assert_eq!(unary(IUn::Bfind, Ty::U32, 0x10), 4);
        assert_eq!(unary(IUn::Bfind, Ty::S32, (-1i32) as u64), 0xffff_ffff);
        assert_eq!(unary(IUn::BfindShift, Ty::U32, 0x10), 27);
        assert_eq!(unary(IUn::Popc, Ty::B32, 0xffff_ffff_0000_000f), 4);
        assert_eq!(
            mad(
                MadKind::HiSat,
                Ty::S32,
                i32::MAX as u64,
                i32::MAX as u64,
                i32::MAX as u64
            ) as i32,
            i32::MAX
        );
        assert_eq!(mad(MadKind::Sad, Ty::S32, (-3i32) as u64, 4, 1), 8);
    }

    #[test]
    fn bitfields_and_permutes() {
        assert_eq!(bfe(Ty::U32, 0xabcd_1234, 8, 8), 0x12);
        assert_eq!(bfe(Ty::S32, 0x0000_8000, 8, 8) as u32, 0xffff_ff80);
        assert_eq!(bfe(Ty::U32, 0xffff_ffff, 40, 8), 0);
        assert_eq!(bfi(Ty::B32, 0xf, 0, 4, 4), 0xf0);
        assert_eq!(prmt(0, 0x4433_2211, 0x8877_6655, 0x3210), 0x4433_2211);
        assert_eq!(prmt(0, 0x4433_2211, 0x8877_6655, 0x7654), 0x8877_6655);
        assert_eq!(prmt(0, 0x4433_2211, 0x8877_6655, 0x0008), 0x1111_1100);
        assert_eq!(prmt(1, 0x4433_2211, 0x8877_6655, 1), 0x5544_3322);
        assert_eq!(prmt(2, 0x4433_2211, 0x8877_6655, 0), 0x6677_8811);
        assert_eq!(prmt(3, 0x4433_2211, 0x8877_6655, 2), 0x3333_3333);
        assert_eq!(lop3(0xf0, 0xcc, 0xaa, 0x96) & 0xff, 0xf0 ^ 0xcc ^ 0xaa);
        assert_eq!(lop3(0xf0, 0xcc, 0xaa, 0x80) & 0xff, 0xf0 & 0xcc & 0xaa);
    }

    #[test]
    fn carry_chain_and_kernel_ops() {
        // 64-bit add from 32-bit halves: 0x1_ffffffff + 1 = 0x2_00000000.
        let r = eval(
            "mov.u32 %r1, 0xffffffff; mov.u32 %r2, 1; mov.u32 %r3, 1; mov.u32 %r4, 0;\
             add.cc.u32 %r5, %r1, %r3; addc.u32 %r6, %r2, %r4; mov.b64 %rd1, {%r5, %r6};\
             sub.cc.u32 %r7, %r4, %r3; subc.u32 %r8, %r4, %r4; mov.b64 %rd2, {%r7, %r8};\
             mov.u32 %r9, 7; mul.wide.s32 %rd3, %r9, -3;\
             shf.l.wrap.b32 %r10, %r1, %r3, 4; cvt.u64.u32 %rd4, %r10;\
             mad.lo.cc.u32 %r11, %r1, %r1, %r1; madc.hi.u32 %r12, %r1, %r1, 0; mov.b64 %rd5, {%r11, %r12};",
            5,
        );
        assert_eq!(r[0], 0x2_0000_0000);
        assert_eq!(r[1], u64::MAX);
        assert_eq!(r[2] as i64, -21);
        assert_eq!(r[3], 0x1f);
        let x = 0xffff_ffffu64;
        assert_eq!(r[4], x * x + x);
    }

    #[test]
    fn malformed_operands_are_errors() {
        let e = crate::Module::parse(".version 8.0\n.target sm_80\n.entry k()\n{\n.reg .b32 %r<2>;\nadd.s32 %r1, %r9, 1;\nret;\n}")
            .err()
            .unwrap();
        assert_eq!(e.line, 6);
        assert!(e.message.contains("undeclared register `%r9`"), "{e}");
    }
}
