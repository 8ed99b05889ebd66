//! The frames `guest/drm-draw/drm_draw.c` draws, for tests that capture them (QEMU with the
//! vhost-user GPU, and `vcuda run --display png-last:DIR` with a real Linux guest): pattern A
//! on the whole mode, then the centre rectangle redrawn with B = A ^ 0xffffff.

/// Pattern A at (x, y) of a `w`×`h` mode, as 0x00RRGGBB.
pub fn pattern_a(w: u32, h: u32, x: u32, y: u32) -> u32 {
    let r = x * 255 / (w - 1);
    let g = y * 255 / (h - 1);
    let b = if (x / 16 + y / 16) & 1 == 1 { 0xff } else { 0 };
    (r << 16) | (g << 8) | b
}

/// The final frame: A, with B in [w/4, 3w/4) × [h/4, 3h/4).
pub fn pattern_final(w: u32, h: u32, x: u32, y: u32) -> u32 {
    let inside = (w / 4..3 * w / 4).contains(&x) && (h / 4..3 * h / 4).contains(&y);
    if inside {
        pattern_a(w, h, x, y) ^ 0x00ff_ffff
    } else {
        pattern_a(w, h, x, y)
    }
}

/// Compares a `w`×`h` RGBA8 capture with `pattern`; returns the number of wrong pixels and a
/// description of the first.
pub fn mismatches(
    rgba: &[u8],
    w: u32,
    h: u32,
    pattern: fn(u32, u32, u32, u32) -> u32,
) -> (usize, Option<String>) {
    let mut bad = 0;
    let mut first = None;
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 4) as usize;
            let Some(got) = rgba.get(i..i + 4) else {
                bad += 1;
                continue;
            };
            let p = pattern(w, h, x, y);
            let want = [(p >> 16) as u8, (p >> 8) as u8, p as u8, 0xff];
            if got != want {
                bad += 1;
                first.get_or_insert_with(|| format!("({x},{y}): got {got:?}, want {want:?}"));
            }
        }
    }
    (bad, first)
}
