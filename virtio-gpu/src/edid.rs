//! A 128-byte EDID 1.3 base block advertising one preferred mode (answer to GET_EDID).
//!
//! Linux reads it through `drm_do_get_edid` and takes the detailed timing descriptor as the
//! preferred mode; the monitor name shows up in `/sys/class/drm/*/edid` and `modetest`.

/// Horizontal and vertical blanking used for the detailed timing (CVT reduced blanking).
const H_BLANK: u32 = 160;
const V_BLANK: u32 = 35;
const REFRESH_HZ: u32 = 60;

/// Builds the EDID for a `width`×`height` display (each clamped to the 12-bit EDID field).
pub fn edid(width: u32, height: u32) -> [u8; 128] {
    let w = width.clamp(1, 4095);
    let h = height.clamp(1, 4095);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "VCD" in 5-bit letters, product 0x0001, serial 1, week 1 of 2025.
    let pnp = |c: u8| u16::from(c - b'A' + 1);
    let id = (pnp(b'V') << 10) | (pnp(b'C') << 5) | pnp(b'D');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes());
    e[12..16].copy_from_slice(&1u32.to_le_bytes());
    e[16] = 1;
    e[17] = (2025 - 1990) as u8;
    e[18] = 1; // EDID 1.3
    e[19] = 3;
    e[20] = 0x80; // digital input
                  // Physical size in cm at ~96 DPI.
    e[21] = ((w * 254 / 96) / 1000).clamp(1, 255) as u8;
    e[22] = ((h * 254 / 96) / 1000).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x0a; // RGB colour, preferred timing is the first descriptor
                  // sRGB chromaticity.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused (0x0101).
    for i in 0..8 {
        e[38 + 2 * i] = 1;
        e[39 + 2 * i] = 1;
    }
    detailed_timing(&mut e[54..72], w, h);
    text_descriptor(&mut e[72..90], 0xfc, b"vcuda");
    // Display range limits: 50-75 Hz vertical, 30-160 kHz horizontal, 600 MHz max clock.
    e[90..108].copy_from_slice(&[
        0, 0, 0, 0xfd, 0, 50, 75, 30, 160, 60, 0, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    ]);
    text_descriptor(&mut e[108..126], 0xfe, b"virtio-gpu");
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

fn detailed_timing(d: &mut [u8], w: u32, h: u32) {
    let clock_10khz = ((w + H_BLANK) * (h + V_BLANK) * REFRESH_HZ / 10_000).min(0xffff);
    d[0..2].copy_from_slice(&(clock_10khz as u16).to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (H_BLANK & 0xff) as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((H_BLANK >> 8) & 0xf)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (V_BLANK & 0xff) as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((V_BLANK >> 8) & 0xf)) as u8;
    // Front porch 48, sync 32 (horizontal); front porch 3, sync 5 (vertical).
    d[8] = 48;
    d[9] = 32;
    d[10] = (3 << 4) | 5;
    d[11] = 0;
    let (mm_w, mm_h) = (w * 254 / 960, h * 254 / 960);
    d[12] = (mm_w & 0xff) as u8;
    d[13] = (mm_h & 0xff) as u8;
    d[14] = (((mm_w >> 8) & 0xf) << 4 | ((mm_h >> 8) & 0xf)) as u8;
    d[15] = 0;
    d[16] = 0;
    d[17] = 0x1e; // digital separate sync, +hsync +vsync
}

fn text_descriptor(d: &mut [u8], tag: u8, text: &[u8]) {
    d[..5].copy_from_slice(&[0, 0, 0, tag, 0]);
    let field = &mut d[5..18];
    field.fill(0x20);
    let n = text.len().min(13);
    field[..n].copy_from_slice(&text[..n]);
    if n < 13 {
        field[n] = 0x0a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edid_has_header_checksum_and_the_preferred_mode() {
        let e = edid(1920, 1080);
        assert_eq!(&e[..8], &[0, 255, 255, 255, 255, 255, 255, 0]);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let w = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
        let h = u32::from(e[59]) | (u32::from(e[61] >> 4) << 8);
        assert_eq!((w, h), (1920, 1080));
    }

    #[test]
    fn huge_modes_are_clamped_not_wrapped() {
        let e = edid(u32::MAX, 0);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
