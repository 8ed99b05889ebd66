//! Bit-exact numeric helpers the instruction families share: IEEE rounding directions and
//! directed rounding, half and bfloat16 conversions, integer widths. A leaf: it knows no
//! instruction.

// ---- rounding ---------------------------------------------------------------------------------

/// IEEE rounding direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rnd {
    Rn,
    Rz,
    Rm,
    Rp,
}

pub(crate) fn next_up64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub(crate) fn next_down64(x: f64) -> f64 {
    -next_up64(-x)
}

pub(crate) fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub(crate) fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

/// Rounds `r` (the round-to-nearest result) in direction `rnd`, given the sign of `exact - r`.
pub(crate) fn adjust64(r: f64, err: f64, rnd: Rnd) -> f64 {
    if r.is_nan() || rnd == Rnd::Rn {
        return r;
    }
    if err == 0.0 || err.is_nan() || r.is_infinite() {
        return r;
    }
    match rnd {
        Rnd::Rp if err > 0.0 => next_up64(r),
        Rnd::Rm if err < 0.0 => next_down64(r),
        Rnd::Rz if r > 0.0 && err < 0.0 => next_down64(r),
        Rnd::Rz if r < 0.0 && err > 0.0 => next_up64(r),
        Rnd::Rz if r == 0.0 => r,
        _ => r,
    }
}

/// Rounds the exact value `hi + err` (where only the sign of `err` matters and `hi` is the f64
/// nearest to it) to f32 in direction `rnd`.
pub(crate) fn round_to_f32(hi: f64, err: f64, rnd: Rnd) -> f32 {
    let f = hi as f32;
    if rnd == Rnd::Rn || hi.is_nan() || hi.is_infinite() {
        return f;
    }
    let fd = f64::from(f);
    let below = if fd == hi { err > 0.0 } else { fd < hi }; // exact value is above f
    let above = if fd == hi { err < 0.0 } else { fd > hi };
    let r = match rnd {
        Rnd::Rp if below => next_up32(f),
        Rnd::Rm if above => next_down32(f),
        Rnd::Rz if hi > 0.0 && above => next_down32(f),
        Rnd::Rz if hi < 0.0 && below => next_up32(f),
        _ => f,
    };
    if r == 0.0 && f != 0.0 {
        0.0f32.copysign(f)
    } else {
        r
    }
}

// ---- half and bfloat16 ------------------------------------------------------------------------

/// f32 → IEEE half, round to nearest even.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign
            | 0x7c00
            | if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 112;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let r = if rem > halfway || (rem == halfway && half & 1 == 1) {
            half + 1
        } else {
            half
        };
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

/// IEEE half → f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    if exp == 0 {
        let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
        return if sign != 0 { -v } else { v };
    }
    if exp == 0x1f {
        return f32::from_bits(sign | 0x7f80_0000 | (man << 13));
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (man << 13))
}

/// f32 → bfloat16, round to nearest even.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bfloat16 → f32 (exact).
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

// ---- integer widths ---------------------------------------------------------------------------

#[inline(always)]
pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Sign-extends the low `bits` of `v`.
#[inline(always)]
pub(crate) fn sext(v: u64, bits: u32) -> i64 {
    let sh = 64 - bits.clamp(1, 64);
    ((v << sh) as i64) >> sh
}

/// Zero-extends the low `bits` of `v`.
#[inline(always)]
pub(crate) fn zext(v: u64, bits: u32) -> u64 {
    v & mask(bits)
}
