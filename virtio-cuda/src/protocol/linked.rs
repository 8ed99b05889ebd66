//! The linked module image: several module images that load as one module (PROTOCOL.md §5,
//! "Module images"). The driver API has two sources of them, and both go through this format
//! so that one place (the executor's image module) decides what runs:
//!
//! * cudart's registration of relocatable device code (`nvcc -rdc=true`): a version-2 fatbin
//!   wrapper points at the device-linked image (SASS only) *and* at the prelinked image of
//!   every translation unit (relocatable SASS and PTX). Part 0 is the linked image, parts 1..
//!   are the prelinked ones;
//! * the driver's linker (`cuLinkCreate`…`cuLinkComplete`): part 0 is empty, parts 1.. are the
//!   linker's inputs in order.
//!
//! A backend runs part 0 when it can (a GPU whose SASS it is); otherwise the PTX of parts 1..
//! joined into one module.
//!
//! ```text
//! +0  u32 magic 0x4B4C4356 ("VCLK")   +4 u32 version (1)
//! +8  u32 count (1..=MAX_PARTS)        +12 u32 reserved (0)
//! +16 count × u64 part length
//! then the parts in order, each starting 8-aligned
//! ```

/// First four bytes of a linked image.
pub const MAGIC: u32 = 0x4B4C_4356;
/// Most parts one linked image holds.
pub const MAX_PARTS: usize = 4096;
const HEADER: usize = 16;

/// Why bytes are no linked image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkedError {
    #[error("linked image truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: u64, available: usize },
    #[error("not a linked image (magic {0:#x})")]
    Magic(u32),
    #[error("linked image version {0} (this build reads 1)")]
    Version(u32),
    #[error("linked image with {0} parts (1 to {MAX_PARTS})")]
    Count(u32),
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn pad8(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

/// Encodes `parts` (at most [`MAX_PARTS`]; callers bound their inputs).
pub fn encode(parts: &[&[u8]]) -> Vec<u8> {
    let count = parts.len().min(MAX_PARTS);
    let mut out = Vec::with_capacity(
        HEADER
            + 8 * count
            + parts
                .iter()
                .map(|p| pad8(p.len() as u64) as usize)
                .sum::<usize>(),
    );
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for p in &parts[..count] {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
    }
    for p in &parts[..count] {
        out.extend_from_slice(p);
        out.resize(pad8(out.len() as u64) as usize, 0);
    }
    out
}

/// How many bytes the linked image starting with `prefix` occupies; `Truncated` when the
/// prefix is too short to tell (read `needed` bytes and call again).
pub fn len(prefix: &[u8]) -> Result<u64, LinkedError> {
    let truncated = |needed: u64| LinkedError::Truncated {
        needed,
        available: prefix.len(),
    };
    let magic = u32_at(prefix, 0).ok_or(truncated(HEADER as u64))?;
    if magic != MAGIC {
        return Err(LinkedError::Magic(magic));
    }
    let version = u32_at(prefix, 4).ok_or(truncated(HEADER as u64))?;
    if version != 1 {
        return Err(LinkedError::Version(version));
    }
    let count = u32_at(prefix, 8).ok_or(truncated(HEADER as u64))?;
    if count == 0 || count as usize > MAX_PARTS {
        return Err(LinkedError::Count(count));
    }
    let table_end = HEADER as u64 + 8 * u64::from(count);
    let mut total = table_end;
    for i in 0..count as usize {
        let l = u64_at(prefix, HEADER + 8 * i).ok_or(truncated(table_end))?;
        total = total.saturating_add(pad8(l));
    }
    Ok(total)
}

/// The parts of a complete linked image (bytes after its end are ignored).
pub fn decode(bytes: &[u8]) -> Result<Vec<&[u8]>, LinkedError> {
    let total = len(bytes)?;
    if total > bytes.len() as u64 {
        return Err(LinkedError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let count = u32_at(bytes, 8).unwrap_or(0) as usize;
    let mut off = HEADER + 8 * count;
    let mut parts = Vec::with_capacity(count);
    for i in 0..count {
        // Both bounded by `total`, which fits `bytes`.
        let l = u64_at(bytes, HEADER + 8 * i).unwrap_or(0) as usize;
        parts.push(&bytes[off..off + l]);
        off += pad8(l as u64) as usize;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_lengths_are_checked() {
        let parts: [&[u8]; 3] = [b"", b"first", b"second part!"];
        let bytes = encode(&parts);
        assert_eq!(len(&bytes).unwrap(), bytes.len() as u64);
        assert_eq!(decode(&bytes).unwrap(), parts.to_vec());
        // Any proper prefix is truncated, never a panic or a wrong answer.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut lying = bytes.clone();
        lying[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&lying), Err(LinkedError::Truncated { .. })));
        let mut many = bytes.clone();
        many[8..12].copy_from_slice(&(MAX_PARTS as u32 + 1).to_le_bytes());
        assert_eq!(decode(&many), Err(LinkedError::Count(MAX_PARTS as u32 + 1)));
        assert!(matches!(
            decode(b"VCLX0000000000000000"),
            Err(LinkedError::Magic(_))
        ));
    }
}
