//! `mov`: register copies, immediates, symbol addresses, special registers, vector pack/unpack.

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, LowerErr, Mods, LR};
use crate::ir::{PReg, PSrc, Reg, Src};
use crate::ops::Ctx;

#[derive(Debug, Clone)]
pub(crate) enum DataOp {
    /// `mov d, s` (64-bit copy; readers truncate to their type).
    Mov { d: Reg, s: Src },
    /// `mov.pred`.
    MovPred { d: PReg, s: PSrc },
    /// `mov.b64 d, {a, b}`: parts of `bits` each, lowest first.
    Pack { d: Reg, parts: Vec<Src>, bits: u32 },
    /// `mov.b64 {a, b}, s`.
    Unpack {
        ds: Vec<Option<Reg>>,
        s: Src,
        bits: u32,
    },
}

/// Lowers `mov`; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<DataOp>> {
    if i.opcode != "mov" {
        return Ok(None);
    }
    lower_mov(i, cx).map(Some)
}

fn lower_mov(i: &Instruction, cx: &mut FnCx<'_>) -> LR<DataOp> {
    arity(cx, i, 2)?;
    let mut m = Mods::new(&i.mods);
    let ty = m.ty()?;
    m.finish()?;
    if ty == Ty::Pred {
        return Ok(DataOp::MovPred {
            d: cx.pdst(&i.operands[0])?,
            s: cx.psrc(&i.operands[1])?,
        });
    }
    match (&i.operands[0], &i.operands[1]) {
        (Operand::Vector(ds), s) => {
            let bits = ty.bits() / ds.len().max(1) as u32;
            if ds.len() < 2 || bits < 8 {
                return Err(cx.err("bad vector in mov"));
            }
            let ds = ds
                .iter()
                .map(|d| match d {
                    Operand::Name(n) if n == "_" => Ok(None),
                    d => cx.dst(d).map(Some),
                })
                .collect::<LR<Vec<_>>>()?;
            Ok(DataOp::Unpack {
                ds,
                s: cx.src(s, ty)?,
                bits,
            })
        }
        (d, Operand::Vector(parts)) => {
            let bits = ty.bits() / parts.len().max(1) as u32;
            if parts.len() < 2 || bits < 8 {
                return Err(cx.err("bad vector in mov"));
            }
            let int = match bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => Ty::B64,
            };
            let parts = parts
                .iter()
                .map(|p| cx.src(p, int))
                .collect::<LR<Vec<_>>>()?;
            Ok(DataOp::Pack {
                d: cx.dst(d)?,
                parts,
                bits,
            })
        }
        (d, s) => {
            if ty.bits() > 64 {
                return Err(LowerErr::Unsupported("128-bit mov".into()));
            }
            Ok(DataOp::Mov {
                d: cx.dst(d)?,
                s: cx.src(s, ty)?,
            })
        }
    }
}

fn mask_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub(crate) fn exec(op: &DataOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match op {
        DataOp::Mov { d, s } => cx.map1(*d, *s, m, |x| x),
        DataOp::MovPred { d, s } => {
            let v = cx.psrc(*s);
            cx.pset(*d, v, m);
        }
        DataOp::Pack { d, parts, bits } => {
            let mut o = [0u64; 32];
            for (k, p) in parts.iter().enumerate() {
                let v = cx.src(*p);
                let sh = k as u32 * bits;
                for l in 0..32 {
                    o[l] |= (v[l] & mask_bits(*bits)).checked_shl(sh).unwrap_or(0);
                }
            }
            cx.set(*d, o, m);
        }
        DataOp::Unpack { ds, s, bits } => {
            let v = cx.src(*s);
            for (k, d) in ds.iter().enumerate() {
                if let Some(d) = d {
                    let sh = k as u32 * bits;
                    let mut o = [0u64; 32];
                    for l in 0..32 {
                        o[l] = v[l].checked_shr(sh).unwrap_or(0) & mask_bits(*bits);
                    }
                    cx.set(*d, o, m);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ops::testutil::eval;

    #[test]
    fn pack_unpack_and_immediates() {
        let r = eval(
            "mov.u32 %r1, 0x11223344; mov.u32 %r2, -1; mov.b64 %rd1, {%r1, %r2};\
             mov.b64 {%r3, %r4}, %rd1; cvt.u64.u32 %rd2, %r4;\
             mov.f32 %f1, 0f3F800000; mov.b32 %r5, %f1; cvt.u64.u32 %rd3, %r5;\
             mov.u64 %rd4, 0xFFFFFFFFFFFFFFFF;",
            4,
        );
        assert_eq!(
            r,
            vec![0xFFFF_FFFF_1122_3344, 0xFFFF_FFFF, 0x3F80_0000, u64::MAX]
        );
    }
}
