//! Atomics: `atom` and `red` on global, shared and generic addresses: add (u32/s32/u64/s64/f32/f64),
//! min/max, inc/dec, and/or/xor, exch, cas. Scopes (`.cta/.gpu/.sys`) and orderings are accepted.
//! Global memory uses real host atomics (see [`crate::memory`]); shared memory belongs to one block,
//! which runs on one host thread, so plain read-modify-write is atomic there.

use std::sync::atomic::Ordering;

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{FnCx, LowerErr, Mods, LR};
use crate::ir::{MemSpace, Reg, Src};
use crate::num::{sext, zext};
use crate::ops::Ctx;
use crate::warp::{read_le, write_le};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Debug, Clone)]
pub(crate) struct AtomOp {
    op: AOp,
    ty: Ty,
    space: MemSpace,
    d: Option<Reg>,
    addr: Src,
    off: i64,
    b: Src,
    c: Src,
}

/// Lowers `atom` and `red`; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<AtomOp>> {
    let is_red = match i.opcode.as_str() {
        "atom" => false,
        "red" => true,
        _ => return Ok(None),
    };
    let mut m = Mods::new(&i.mods);
    m.ignore_hints();
    let space = match m.one_of(&["global", "shared"]) {
        Some("global") => MemSpace::Global,
        Some(_) => MemSpace::Shared,
        None => MemSpace::Generic,
    };
    let op = match m.one_of(&[
        "add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas",
    ]) {
        Some("add") => AOp::Add,
        Some("min") => AOp::Min,
        Some("max") => AOp::Max,
        Some("inc") => AOp::Inc,
        Some("dec") => AOp::Dec,
        Some("and") => AOp::And,
        Some("or") => AOp::Or,
        Some("xor") => AOp::Xor,
        Some("exch") => AOp::Exch,
        Some(_) => AOp::Cas,
        None => return Err(cx.err("atom needs an operation")),
    };
    m.has("noftz");
    let ty = m.ty()?;
    if !matches!(ty.bits(), 32 | 64) || ty == Ty::F32 && op != AOp::Add && op != AOp::Exch {
        return Err(LowerErr::Unsupported(format!("atom {op:?} on {ty:?}")));
    }
    m.finish()?;
    let o = &i.operands;
    let want = if is_red {
        2
    } else if op == AOp::Cas {
        4
    } else {
        3
    };
    if o.len() != want {
        return Err(cx.err(format!(
            "`{}` takes {want} operands, found {}",
            i.opcode,
            o.len()
        )));
    }
    let (d, rest) = if is_red {
        (None, &o[..])
    } else {
        (Some(cx.dst(&o[0])?), &o[1..])
    };
    let (space, addr, off) = cx.mem(&rest[0], space)?;
    let b = cx.src(&rest[1], ty)?;
    let c = match rest.get(2) {
        Some(c @ (Operand::Name(_) | Operand::Int(_) | Operand::F32(_) | Operand::F64(_))) => {
            cx.src(c, ty)?
        }
        _ => Src::Imm(0),
    };
    Ok(Some(AtomOp {
        op,
        ty,
        space,
        d,
        addr,
        off,
        b,
        c,
    }))
}

/// The new value stored by an atomic, given the old one.
pub(crate) fn apply(op: AOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let w = ty.bits();
    match op {
        AOp::Add => match ty {
            Ty::F32 => u64::from((f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits()),
            Ty::F64 => (f64::from_bits(old) + f64::from_bits(b)).to_bits(),
            _ => old.wrapping_add(b),
        },
        AOp::Min | AOp::Max => {
            let less = if ty.is_signed() {
                sext(b, w) < sext(old, w)
            } else {
                zext(b, w) < zext(old, w)
            };
            if (op == AOp::Min) == less {
                b
            } else {
                old
            }
        }
        AOp::Inc => {
            if zext(old, w) >= zext(b, w) {
                0
            } else {
                old.wrapping_add(1)
            }
        }
        AOp::Dec => {
            if zext(old, w) == 0 || zext(old, w) > zext(b, w) {
                b
            } else {
                old.wrapping_sub(1)
            }
        }
        AOp::And => old & b,
        AOp::Or => old | b,
        AOp::Xor => old ^ b,
        AOp::Exch => b,
        AOp::Cas => {
            if zext(old, w) == zext(b, w) {
                c
            } else {
                old
            }
        }
    }
}

fn global_rmw(
    cx: &mut Ctx<'_, '_>,
    a: &AtomOp,
    addr: u64,
    b: u64,
    c: u64,
) -> Result<u64, ExecError> {
    let size = a.ty.size();
    let (store, off) = cx.global(addr, u64::from(size))?;
    let illegal = || ExecError::IllegalAddress { addr };
    let (op, ty) = (a.op, a.ty);
    if size == 4 {
        let cell = store.a32(off).ok_or_else(illegal)?;
        let old = match op {
            AOp::Add if !ty.is_float() => cell.fetch_add(b as u32, Ordering::Relaxed),
            AOp::Exch => cell.swap(b as u32, Ordering::Relaxed),
            AOp::Cas => match cell.compare_exchange(
                b as u32,
                c as u32,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(v) | Err(v) => v,
            },
            _ => match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(apply(op, ty, u64::from(o), b, c) as u32)
            }) {
                Ok(v) | Err(v) => v,
            },
        };
        Ok(u64::from(old))
    } else {
        let cell = store.a64(off).ok_or_else(illegal)?;
        let old = match op {
            AOp::Add if !ty.is_float() => cell.fetch_add(b, Ordering::Relaxed),
            AOp::Exch => cell.swap(b, Ordering::Relaxed),
            AOp::Cas => match cell.compare_exchange(b, c, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(v) | Err(v) => v,
            },
            _ => match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(apply(op, ty, o, b, c))
            }) {
                Ok(v) | Err(v) => v,
            },
        };
        Ok(old)
    }
}

pub(crate) fn exec(a: &AtomOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    let base = cx.src(a.addr);
    let bv = cx.src(a.b);
    let cv = cx.src(a.c);
    let size = a.ty.size();
    let mut out = [0u64; 32];
    let mut bits = m;
    while bits != 0 {
        let l = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let addr = base[l].wrapping_add(a.off as u64);
        if addr % u64::from(size) != 0 {
            return Err(ExecError::MisalignedAddress { addr });
        }
        let illegal = || ExecError::IllegalAddress { addr };
        out[l] = match Ctx::resolve(a.space, addr) {
            (MemSpace::Global, g) => global_rmw(cx, a, g, bv[l], cv[l])?,
            (MemSpace::Shared, s) => {
                let old = read_le(cx.shared, s, size).ok_or_else(illegal)?;
                write_le(cx.shared, s, size, apply(a.op, a.ty, old, bv[l], cv[l]))
                    .ok_or_else(illegal)?;
                old
            }
            _ => return Err(illegal()),
        };
    }
    if let Some(d) = a.d {
        cx.set(d, out, m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::run_kernel;

    #[test]
    fn rmw_semantics() {
        assert_eq!(apply(AOp::Inc, Ty::U32, 5, 5, 0), 0);
        assert_eq!(apply(AOp::Inc, Ty::U32, 4, 5, 0), 5);
        assert_eq!(apply(AOp::Dec, Ty::U32, 0, 5, 0), 5);
        assert_eq!(apply(AOp::Dec, Ty::U32, 7, 5, 0), 5);
        assert_eq!(apply(AOp::Dec, Ty::U32, 3, 5, 0), 2);
        assert_eq!(
            apply(AOp::Min, Ty::S32, 3, (-1i32) as u32 as u64, 0) as i32,
            -1
        );
        assert_eq!(apply(AOp::Min, Ty::U32, 3, (-1i32) as u32 as u64, 0), 3);
        assert_eq!(apply(AOp::Cas, Ty::B32, 3, 3, 9), 9);
        assert_eq!(apply(AOp::Cas, Ty::B32, 4, 3, 9), 4);
    }

    #[test]
    fn warp_wide_atomics_global_and_shared() {
        let r = run_kernel(
            ".shared .align 4 .b32 s;\
             mov.u32 %r1, %tid.x; st.shared.u32 [s], 0; bar.sync 0;\
             atom.shared.add.u32 %r2, [s], 1; bar.sync 0; ld.shared.u32 %r3, [s];\
             atom.global.add.u32 %r4, [%rd_out], %r1; red.global.max.s32 [%rd_out+4], %r1;\
             atom.global.add.f32 %f1, [%rd_out+8], 0f3F000000;\
             setp.eq.s32 %p1, %r1, 0; @%p1 st.global.u32 [%rd_out+12], %r3;\
             atom.global.cas.b32 %r5, [%rd_out+16], %r1, 100;",
            64,
            3,
        )
        .unwrap();
        assert_eq!(r[0] as u32, (0..64).sum::<u32>());
        assert_eq!((r[0] >> 32) as u32, 63);
        assert_eq!(f32::from_bits(r[1] as u32), 32.0);
        assert_eq!((r[1] >> 32) as u32, 64);
        assert_eq!(r[2] as u32, 100);
    }
}
