//! Loads and stores: `ld`, `ldu`, `st` in every state space (global, const, shared, local, param,
//! generic), scalar and `.v2/.v4`, with cache/ordering qualifiers accepted; `prefetch` (no-op) and
//! `isspacep`. Accesses must be naturally aligned (to the whole vector) or the launch fails with
//! `MisalignedAddress`; addresses outside memory give `IllegalAddress`.

use std::sync::atomic::Ordering::Relaxed;

use crate::ast::{Instruction, Operand, Ty};
use crate::error::ExecError;
use crate::fncx::{arity, FnCx, LowerErr, Mods, LR};
use crate::ir::{MemSpace, PReg, Reg, Src};
use crate::memory::{LOCAL_WINDOW, SHARED_WINDOW, WINDOW_BASE};
use crate::num::sext;
use crate::ops::Ctx;
use crate::warp::FULL;

#[derive(Debug, Clone)]
pub(crate) enum MemOp {
    Ld {
        space: MemSpace,
        size: u32,
        signed: bool,
        n: u8,
        ds: [Option<Reg>; 4],
        addr: Src,
        off: i64,
    },
    St {
        space: MemSpace,
        size: u32,
        n: u8,
        srcs: [Src; 4],
        addr: Src,
        off: i64,
    },
    Isspacep {
        space: MemSpace,
        d: PReg,
        a: Src,
    },
    /// `createpolicy`: a cache policy for `.L2::cache_hint` accesses, which take it as a hint
    /// only; every policy is 0.
    Policy {
        d: Reg,
    },
    Nop,
}

fn space_mod(m: &mut Mods<'_>) -> MemSpace {
    match m.one_of(&["global", "const", "shared", "local", "param"]) {
        Some("global") => MemSpace::Global,
        Some("const") => MemSpace::Const,
        Some("shared") => MemSpace::Shared,
        Some("local") => MemSpace::Local,
        Some("param") => MemSpace::KParam,
        _ => MemSpace::Generic,
    }
}

/// Lowers loads, stores, prefetches, `createpolicy` and `isspacep`; `None` for any other opcode.
pub(crate) fn lower(i: &Instruction, cx: &mut FnCx<'_>) -> LR<Option<MemOp>> {
    let mut m = Mods::new(&i.mods);
    let o = &i.operands;
    m.ignore_hints();
    let r = match i.opcode.as_str() {
        "prefetch" | "prefetchu" => {
            space_mod(&mut m);
            m.one_of(&["L1", "L2"]);
            MemOp::Nop
        }
        "createpolicy" => {
            // `.fractional` (d, fraction) or `.range` (d, [a], primary, total); the
            // `L2::evict_*` kinds are taken by `ignore_hints`.
            m.one_of(&["fractional", "range"]);
            m.ty()?;
            if !(2..=4).contains(&o.len()) {
                return Err(cx.err("createpolicy takes 2 to 4 operands"));
            }
            MemOp::Policy { d: cx.dst(&o[0])? }
        }
        "isspacep" => {
            arity(cx, i, 2)?;
            let space = space_mod(&mut m);
            MemOp::Isspacep {
                space,
                d: cx.pdst(&o[0])?,
                a: cx.src(&o[1], Ty::U64)?,
            }
        }
        op @ ("ld" | "st" | "ldu") => {
            // `.L2::cache_hint` takes a 64-bit cache policy as a third operand: a hint, checked
            // and ignored (there is no cache to steer).
            if i.mods.iter().any(|m| m == "L2::cache_hint") {
                arity(cx, i, 3)?;
                cx.src(&o[2], Ty::U64)?;
            } else {
                arity(cx, i, 2)?;
            }
            let space = space_mod(&mut m);
            let n: u8 = match m.one_of(&["v2", "v4"]) {
                Some("v2") => 2,
                Some("v4") => 4,
                _ => 1,
            };
            let ty = m.ty()?;
            if ty.bits() > 64 || ty == Ty::Pred {
                return Err(LowerErr::Unsupported(format!("{op} of {ty:?}")));
            }
            let (mo, vo) = if op == "st" {
                (&o[0], &o[1])
            } else {
                (&o[1], &o[0])
            };
            let (space, addr, off) = cx.mem(mo, space)?;
            let vals: Vec<&Operand> = match vo {
                Operand::Vector(v) => v.iter().collect(),
                v => vec![v],
            };
            if vals.len() != n as usize {
                return Err(cx.err(format!("expected {n} values, found {}", vals.len())));
            }
            if op == "st" {
                let mut srcs = [Src::Imm(0); 4];
                for (k, v) in vals.iter().enumerate() {
                    srcs[k] = cx.src(v, ty)?;
                }
                MemOp::St {
                    space,
                    size: ty.size(),
                    n,
                    srcs,
                    addr,
                    off,
                }
            } else {
                let mut ds = [None; 4];
                for (k, v) in vals.iter().enumerate() {
                    ds[k] = match v {
                        Operand::Name(n) if n == "_" => None,
                        v => Some(cx.dst(v)?),
                    };
                }
                MemOp::Ld {
                    space,
                    size: ty.size(),
                    signed: ty.is_signed(),
                    n,
                    ds,
                    addr,
                    off,
                }
            }
        }
        _ => return Ok(None),
    };
    m.finish()?;
    Ok(Some(r))
}

/// Little-endian load of 4 or 8 bytes from a byte buffer.
#[inline(always)]
fn buf_load(buf: &[u8], o: u64, size: u32) -> Option<u64> {
    let o = usize::try_from(o).ok()?;
    if size == 4 {
        let b: [u8; 4] = buf.get(o..o.checked_add(4)?)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(b)))
    } else {
        let b: [u8; 8] = buf.get(o..o.checked_add(8)?)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// Whole-warp unit-stride access (every lane active, lane `l` at `a0 + l * size`, the 32 accesses
/// below the generic windows): `a0`.
#[inline(always)]
fn unit_stride(base: &[u64; 32], off: i64, size: u32, m: u32) -> Option<u64> {
    if m != FULL {
        return None;
    }
    let s = u64::from(size);
    let mut ok = true;
    for (l, &b) in base.iter().enumerate() {
        ok &= b == base[0].wrapping_add(l as u64 * s);
    }
    let a0 = base[0].wrapping_add(off as u64);
    (ok && a0.checked_add(32 * s).is_some_and(|e| e <= WINDOW_BASE)).then_some(a0)
}

/// Whole-warp `N`-byte shared-memory load (every lane active) in one fused loop; faults as on
/// the lane-by-lane path (first faulting lane, misalignment before bounds).
#[inline(always)]
fn shared_load<const N: usize>(
    sh: &[u8],
    base: &[u64; 32],
    off: i64,
    out: &mut [u64; 32],
) -> Result<(), ExecError> {
    for l in 0..32 {
        let a = base[l].wrapping_add(off as u64);
        if a & (N as u64 - 1) != 0 {
            return Err(ExecError::MisalignedAddress { addr: a });
        }
        let b = usize::try_from(a)
            .ok()
            .and_then(|o| sh.get(o..o.checked_add(N)?))
            .ok_or(ExecError::IllegalAddress { addr: a })?;
        let mut w = [0u8; 8];
        w[..N].copy_from_slice(b);
        out[l] = u64::from_le_bytes(w);
    }
    Ok(())
}

/// Whole-warp `N`-byte shared-memory store (every lane active), lane by lane like the general
/// path (a fault stops at the first faulting lane).
#[inline(always)]
fn shared_store<const N: usize>(
    sh: &mut [u8],
    base: &[u64; 32],
    off: i64,
    v: &[u64; 32],
) -> Result<(), ExecError> {
    for l in 0..32 {
        let a = base[l].wrapping_add(off as u64);
        if a & (N as u64 - 1) != 0 {
            return Err(ExecError::MisalignedAddress { addr: a });
        }
        let b = usize::try_from(a)
            .ok()
            .and_then(|o| sh.get_mut(o..o.checked_add(N)?))
            .ok_or(ExecError::IllegalAddress { addr: a })?;
        b.copy_from_slice(&v[l].to_le_bytes()[..N]);
    }
    Ok(())
}

/// Scalar 4/8-byte loads with one space for all lanes: the hot path.
#[inline(always)]
fn load_fast(
    cx: &mut Ctx<'_, '_>,
    space: MemSpace,
    size: u32,
    base: &[u64; 32],
    off: i64,
    m: u32,
) -> Result<[u64; 32], ExecError> {
    let mut out = [0u64; 32];
    let mut bits = m;
    match space {
        MemSpace::Shared => {
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                if a & u64::from(size - 1) != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                out[l] = buf_load(cx.shared, a, size)
                    .ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
            }
        }
        MemSpace::KParam if bits != 0 => {
            let l = bits.trailing_zeros() as usize;
            let a = base[l].wrapping_add(off as u64);
            if a & u64::from(size - 1) != 0 {
                return Err(ExecError::MisalignedAddress { addr: a });
            }
            let v = buf_load(cx.env.params, a, size)
                .ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
            if base.iter().all(|&b| b == base[l]) {
                return Ok([v; 32]);
            }
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out[l] = cx.load(space, base[l].wrapping_add(off as u64), size, l)?;
            }
        }
        MemSpace::Global | MemSpace::Const | MemSpace::Generic if bits != 0 => {
            if let Some(a0) = unit_stride(base, off, size, m) {
                if let Ok((store, o)) = cx.global(a0, 32 * u64::from(size)) {
                    if size == 4 {
                        if let Some(w) = store.words32(o, 32) {
                            for (v, w) in out.iter_mut().zip(w) {
                                *v = u64::from(w.load(Relaxed));
                            }
                            return Ok(out);
                        }
                    } else if let Some(w) = store.words64(o, 32) {
                        for (v, w) in out.iter_mut().zip(w) {
                            *v = w.load(Relaxed);
                        }
                        return Ok(out);
                    }
                }
            }
            if let Some((store, sbase)) = warp_range(cx, size, base, off, m) {
                while bits != 0 {
                    let l = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let a = base[l].wrapping_add(off as u64);
                    let o = a.wrapping_sub(sbase);
                    let v = if size == 4 {
                        store.a32(o).map(|x| u64::from(x.load(Relaxed)))
                    } else {
                        store.a64(o).map(|x| x.load(Relaxed))
                    };
                    out[l] = v.ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
                }
                return Ok(out);
            }
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                if a & u64::from(size - 1) != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                out[l] = cx.load(space, a, size, l)?;
            }
        }
        _ => {
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                if a & u64::from(size - 1) != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                out[l] = cx.load(space, a, size, l)?;
            }
        }
    }
    Ok(out)
}

/// When every active lane's access is aligned and lies in one global allocation: that allocation's
/// store and base address, so the lane loop needs no lookup.
#[inline(always)]
fn warp_range<'c>(
    cx: &'c mut Ctx<'_, '_>,
    size: u32,
    base: &[u64; 32],
    off: i64,
    m: u32,
) -> Option<(&'c crate::memory::Store, u64)> {
    let (mut lo, mut hi, mut or) = (u64::MAX, 0u64, 0u64);
    let mut bits = m;
    while bits != 0 {
        let l = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let a = base[l].wrapping_add(off as u64);
        lo = lo.min(a);
        hi = hi.max(a);
        or |= a;
    }
    if or & u64::from(size - 1) != 0 || hi >= WINDOW_BASE || lo > hi {
        return None;
    }
    let (store, o) = cx.global(lo, hi - lo + u64::from(size)).ok()?;
    Some((store, lo - o))
}

/// Scalar 4/8-byte stores with one space for all lanes.
#[inline(always)]
fn store_fast(
    cx: &mut Ctx<'_, '_>,
    space: MemSpace,
    size: u32,
    base: &[u64; 32],
    off: i64,
    v: &[u64; 32],
    m: u32,
) -> Result<(), ExecError> {
    let mut bits = m;
    if matches!(space, MemSpace::Global | MemSpace::Generic) {
        if let Some(a0) = unit_stride(base, off, size, m) {
            if let Ok((store, o)) = cx.global(a0, 32 * u64::from(size)) {
                if size == 4 {
                    if let Some(w) = store.words32(o, 32) {
                        for (v, w) in v.iter().zip(w) {
                            w.store(*v as u32, Relaxed);
                        }
                        return Ok(());
                    }
                } else if let Some(w) = store.words64(o, 32) {
                    for (v, w) in v.iter().zip(w) {
                        w.store(*v, Relaxed);
                    }
                    return Ok(());
                }
            }
        }
        if let Some((store, sbase)) = warp_range(cx, size, base, off, m) {
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                let o = a.wrapping_sub(sbase);
                let ok = if size == 4 {
                    store.a32(o).map(|x| x.store(v[l] as u32, Relaxed))
                } else {
                    store.a64(o).map(|x| x.store(v[l], Relaxed))
                };
                ok.ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
            }
            return Ok(());
        }
    }
    while bits != 0 {
        let l = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let a = base[l].wrapping_add(off as u64);
        if a & u64::from(size - 1) != 0 {
            return Err(ExecError::MisalignedAddress { addr: a });
        }
        match space {
            MemSpace::Shared => {
                let o = usize::try_from(a).ok();
                let dst = o.and_then(|o| cx.shared.get_mut(o..o.checked_add(size as usize)?));
                let dst = dst.ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
                dst.copy_from_slice(&v[l].to_le_bytes()[..size as usize]);
            }
            MemSpace::Global | MemSpace::Generic if a < WINDOW_BASE => {
                let (s, o) = cx.global(a, u64::from(size))?;
                let ok = if size == 4 {
                    s.a32(o).map(|x| x.store(v[l] as u32, Relaxed))
                } else {
                    s.a64(o).map(|x| x.store(v[l], Relaxed))
                };
                ok.ok_or_else(|| ExecError::IllegalAddress { addr: a })?;
            }
            _ => cx.store(space, a, size, l, v[l])?,
        }
    }
    Ok(())
}

pub(crate) fn exec(op: &MemOp, cx: &mut Ctx<'_, '_>, m: u32) -> Result<(), ExecError> {
    match *op {
        MemOp::Ld {
            space,
            size,
            n: 1,
            ds: [d, ..],
            addr,
            off,
            ..
        } if size >= 4 && space != MemSpace::Local => {
            if space == MemSpace::KParam && !matches!(addr, Src::Reg(_) | Src::Special(_)) {
                // Warp-uniform parameter address: one load for the warp.
                let a = cx.src(addr)[0].wrapping_add(off as u64);
                if a & u64::from(size - 1) != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                let v = buf_load(cx.env.params, a, size)
                    .ok_or(ExecError::IllegalAddress { addr: a })?;
                if let Some(d) = d {
                    cx.set(d, [v; 32], m);
                }
                return Ok(());
            }
            if space == MemSpace::Shared && m == FULL {
                if let Src::Reg(r) = addr {
                    if let Some(base) = cx.regs.get(r as usize) {
                        let mut out = [0u64; 32];
                        if size == 4 {
                            shared_load::<4>(cx.shared, base, off, &mut out)?;
                        } else {
                            shared_load::<8>(cx.shared, base, off, &mut out)?;
                        }
                        if let Some(d) = d {
                            cx.set(d, out, m);
                        }
                        return Ok(());
                    }
                }
            }
            let base = cx.src(addr);
            let v = load_fast(cx, space, size, &base, off, m)?;
            if let Some(d) = d {
                cx.set(d, v, m);
            }
        }
        MemOp::St {
            space,
            size,
            n: 1,
            srcs: [s, ..],
            addr,
            off,
        } if size >= 4 && space != MemSpace::Local => {
            if space == MemSpace::Shared && m == FULL {
                if let (Src::Reg(r), Src::Reg(q)) = (addr, s) {
                    if let (Some(base), Some(v)) =
                        (cx.regs.get(r as usize), cx.regs.get(q as usize))
                    {
                        return if size == 4 {
                            shared_store::<4>(cx.shared, base, off, v)
                        } else {
                            shared_store::<8>(cx.shared, base, off, v)
                        };
                    }
                }
            }
            let base = cx.src(addr);
            let v = cx.src(s);
            store_fast(cx, space, size, &base, off, &v, m)?;
        }
        MemOp::Ld {
            space,
            size,
            signed,
            n,
            ds,
            addr,
            off,
        } => {
            let base = cx.src(addr);
            let mut out = [[0u64; 32]; 4];
            let align = u64::from(size) * u64::from(n);
            let mut bits = m;
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                if a % align != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                for (k, o) in out.iter_mut().enumerate().take(n as usize) {
                    let v = cx.load(space, a.wrapping_add(k as u64 * u64::from(size)), size, l)?;
                    o[l] = if signed { sext(v, size * 8) as u64 } else { v };
                }
            }
            for (k, d) in ds.iter().enumerate().take(n as usize) {
                if let Some(d) = d {
                    cx.set(*d, out[k], m);
                }
            }
        }
        MemOp::St {
            space,
            size,
            n,
            srcs,
            addr,
            off,
        } => {
            let base = cx.src(addr);
            let mut vals = [[0u64; 32]; 4];
            for k in 0..n as usize {
                vals[k] = cx.src(srcs[k]);
            }
            let align = u64::from(size) * u64::from(n);
            let mut bits = m;
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let a = base[l].wrapping_add(off as u64);
                if a % align != 0 {
                    return Err(ExecError::MisalignedAddress { addr: a });
                }
                for (k, v) in vals.iter().enumerate().take(n as usize) {
                    cx.store(
                        space,
                        a.wrapping_add(k as u64 * u64::from(size)),
                        size,
                        l,
                        v[l],
                    )?;
                }
            }
        }
        MemOp::Isspacep { space, d, a } => {
            let v = cx.src(a);
            let mut bits = 0u32;
            for (l, x) in v.iter().enumerate() {
                let r = match space {
                    MemSpace::Shared => (SHARED_WINDOW..LOCAL_WINDOW).contains(x),
                    MemSpace::Local => (LOCAL_WINDOW..LOCAL_WINDOW + (1 << 32)).contains(x),
                    MemSpace::Global | MemSpace::Const => *x < WINDOW_BASE,
                    _ => false,
                };
                bits |= u32::from(r) << l;
            }
            cx.pset(d, bits, m);
        }
        MemOp::Policy { d } => cx.set(d, [0; 32], m),
        MemOp::Nop => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ops::testutil::{eval, run_kernel};
    use crate::ExecError;

    #[test]
    fn vectors_signedness_and_spaces() {
        let r = eval(
            ".local .align 16 .b8 buf[32]; .shared .align 8 .b8 sh[16];\
             mov.u32 %r1, -2; mov.u32 %r2, 7; st.local.v2.u32 [buf+8], {%r1, %r2};\
             ld.local.s8 %r3, [buf+8]; cvt.s64.s32 %rd1, %r3; ld.local.u8 %r4, [buf+8]; cvt.u64.u32 %rd2, %r4;\
             ld.local.v2.u32 {%r5, _}, [buf+8]; cvt.u64.u32 %rd3, %r5;\
             mov.u64 %rd9, sh; cvta.shared.u64 %rd10, %rd9; st.u32 [%rd10+4], %r2; ld.shared.u32 %r6, [sh+4]; cvt.u64.u32 %rd4, %r6;\
             mov.u64 %rd11, buf; cvta.local.u64 %rd12, %rd11; ld.u32 %r7, [%rd12+12]; cvt.u64.u32 %rd5, %r7;",
            5,
        );
        assert_eq!(r, vec![(-2i64) as u64, 0xfe, 0xffff_fffe, 7, 7]);
    }

    #[test]
    fn cache_hint_operand_is_taken_and_ignored() {
        let r = eval(
            "createpolicy.fractional.L2::evict_last.b64 %rd9, 1.0;\
             mov.u32 %r1, 41; st.global.L2::cache_hint.u32 [%rd_out], %r1, %rd9;\
             ld.global.L2::cache_hint.u32 %r2, [%rd_out], %rd9; add.u32 %r2, %r2, 1; cvt.u64.u32 %rd1, %r2;",
            1,
        );
        assert_eq!(r, vec![42]);
    }

    #[test]
    fn faults() {
        let oob = run_kernel("st.global.u32 [%rd_out+4096], 1;", 1, 1).unwrap_err();
        assert!(matches!(oob, ExecError::IllegalAddress { .. }), "{oob:?}");
        let mis = run_kernel("st.global.u32 [%rd_out+2], 1;", 1, 1).unwrap_err();
        assert_eq!(
            mis,
            ExecError::MisalignedAddress {
                addr: mis_addr(&mis)
            }
        );
        let null = run_kernel("mov.u64 %rd1, 0; ld.global.u32 %r1, [%rd1];", 32, 1).unwrap_err();
        assert_eq!(null, ExecError::IllegalAddress { addr: 0 });
        let sh = run_kernel(".shared .b8 s[4]; ld.shared.u32 %r1, [s+64];", 1, 1).unwrap_err();
        assert!(matches!(sh, ExecError::IllegalAddress { .. }));
        let cst = run_kernel("st.param.u64 [out], %rd_out;", 1, 1).unwrap_err();
        assert!(matches!(cst, ExecError::IllegalAddress { .. }));
    }

    /// Whole-warp fast paths (unit-stride global, shared, in-place ALU) agree with the lane-by-lane
    /// paths used for partially active warps.
    #[test]
    fn whole_warp_fast_paths_match_partial_warps() {
        // out[t] = 3 * t + 5 via a unit-stride u32 round trip through shared and global memory;
        // `add %r3, %r3, %r3` checks in-place aliasing, the u64 store the 8-byte path.
        let body = ".shared .align 8 .b8 sh[256];\
             mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 2; mov.u32 %r9, sh; add.s32 %r2, %r2, %r9;\
             mad.lo.s32 %r3, %r1, 3, 5; st.shared.u32 [%r2], %r3; ld.shared.u32 %r4, [%r2];\
             mul.wide.u32 %rd1, %r1, 4; add.s64 %rd2, %rd_out, %rd1; st.global.u32 [%rd2+1024], %r4;\
             ld.global.u32 %r5, [%rd2+1024]; add.s32 %r5, %r5, %r5; shr.u32 %r5, %r5, 1;\
             cvt.u64.u32 %rd3, %r5; mul.wide.u32 %rd4, %r1, 8; add.s64 %rd5, %rd_out, %rd4;\
             st.global.u64 [%rd5], %rd3; ld.global.u64 %rd6, [%rd5]; st.global.u64 [%rd5], %rd6;";
        for threads in [32, 64, 20, 45] {
            let r = run_kernel(body, threads, 256).unwrap();
            for t in 0..64u64 {
                let want = if t < u64::from(threads) { 3 * t + 5 } else { 0 };
                assert_eq!(r[t as usize], want, "threads {threads}, lane {t}");
            }
        }
    }

    /// Faults inside the whole-warp fast paths are errors naming the first faulting lane.
    #[test]
    fn faults_in_fast_paths() {
        // Unit-stride store running off the end of the 8-byte buffer: lane 2 is the first outside.
        let e = run_kernel(
            "mov.u32 %r1, %tid.x; mul.wide.u32 %rd1, %r1, 4; add.s64 %rd2, %rd_out, %rd1; st.global.u32 [%rd2], %r1;",
            32,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, ExecError::IllegalAddress { .. }), "{e:?}");
        let e = run_kernel(
            "mov.u32 %r1, %tid.x; mul.wide.u32 %rd1, %r1, 4; add.s64 %rd2, %rd_out, %rd1; ld.global.u32 %r2, [%rd2];",
            32,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, ExecError::IllegalAddress { .. }), "{e:?}");
        // Shared: lane 16 out of bounds, then lane 1 misaligned.
        let e = run_kernel(
            ".shared .align 4 .b8 s[64]; mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 2; mov.u32 %r9, s; add.s32 %r2, %r2, %r9; ld.shared.u32 %r3, [%r2];",
            32,
            1,
        )
        .unwrap_err();
        assert_eq!(e, ExecError::IllegalAddress { addr: 64 });
        let e = run_kernel(
            ".shared .align 4 .b8 s[256]; mov.u32 %r1, %tid.x; mov.u32 %r9, s; add.s32 %r1, %r1, %r9; st.shared.u32 [%r1], %r1;",
            32,
            1,
        )
        .unwrap_err();
        assert_eq!(e, ExecError::MisalignedAddress { addr: 1 });
        let e = run_kernel(
            ".shared .align 8 .b8 s[256]; mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 3; mov.u32 %r9, s; add.s32 %r2, %r2, %r9; add.s32 %r2, %r2, 4; ld.shared.u64 %rd1, [%r2];",
            32,
            1,
        )
        .unwrap_err();
        assert_eq!(e, ExecError::MisalignedAddress { addr: 4 });
    }

    fn mis_addr(e: &ExecError) -> u64 {
        match e {
            ExecError::MisalignedAddress { addr } => *addr,
            _ => 0,
        }
    }
}
