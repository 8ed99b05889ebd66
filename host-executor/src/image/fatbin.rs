//! Fatbin containers and wrappers (layout in the module docs).

use std::io::Read;

use super::{
    elf, need, read_u16, read_u32, read_u64, Compression, Entry, EntryKind, ImageError, PtxVersion,
    MAX_IMAGE_SIZE, WRAPPER_MAGIC,
};

const HEADER_MIN: u16 = 16;
const ENTRY_HEADER_MIN: u32 = 64;

const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;

const FLAG_LZ4: u64 = 0x2000;
const FLAG_ZSTD: u64 = 0x8000;

const ZSTD_MIN_WINDOW_LIMIT: u64 = 1 << 20;
const LZ4_MAX_RATIO: u64 = 255;
/// The most a zstd entry may claim to expand. zstd itself goes past 30 000-fold (a run of
/// zeros), so without a bound a 32 KiB image inflates to the 1 GiB image limit before anything
/// checks it; real PTX and SASS entries compress a few-fold to a few dozen-fold.
const ZSTD_MAX_RATIO: u64 = 1024;

/// Size of `__fatBinC_Wrapper_t` on a 64-bit client.
pub(super) const WRAPPER_SIZE: usize = 24;

/// `__fatBinC_Wrapper_t`: what cudart registers; `data` is a pointer in the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatbinWrapper {
    /// 1: `data` points at a fatbin container; 2: also `filename_or_fatbins` points at a
    /// NULL-terminated array of prelinked containers (relocatable device code).
    pub version: u32,
    /// Client address of the fatbin container.
    pub data: u64,
    /// Client address of a file name (version 1) or of the prelinked fatbin array (version 2).
    pub filename_or_fatbins: u64,
}

impl FatbinWrapper {
    /// Reads a wrapper from the first [`WRAPPER_SIZE`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        need(bytes, WRAPPER_SIZE as u64)?;
        let field = |offset| read_u64(bytes, offset).unwrap_or(0);
        if read_u32(bytes, 0) != Some(WRAPPER_MAGIC) {
            return Err(ImageError::UnknownFormat(
                bytes.iter().take(8).copied().collect(),
            ));
        }
        Ok(Self {
            version: read_u32(bytes, 4).unwrap_or(0),
            data: field(8),
            filename_or_fatbins: field(16),
        })
    }
}

/// Container header: (header_size, fat_size), validated against nothing but themselves.
fn header(bytes: &[u8]) -> Result<(usize, u64), ImageError> {
    need(bytes, u64::from(HEADER_MIN))?;
    let version = read_u16(bytes, 4).unwrap_or(0);
    if version != 1 {
        return Err(ImageError::FatbinVersion(version));
    }
    let header_size = read_u16(bytes, 6).unwrap_or(0);
    if header_size < HEADER_MIN {
        return Err(ImageError::HeaderSize {
            what: "fatbin",
            size: header_size.into(),
            min: HEADER_MIN.into(),
        });
    }
    Ok((header_size.into(), read_u64(bytes, 8).unwrap_or(0)))
}

pub(super) fn container_len(bytes: &[u8]) -> Result<usize, ImageError> {
    let (header_size, fat_size) = header(bytes)?;
    let total = fat_size.saturating_add(header_size as u64);
    if total > MAX_IMAGE_SIZE {
        return Err(ImageError::OutOfBounds {
            what: "fatbin",
            offset: 0,
            len: total,
            limit: MAX_IMAGE_SIZE,
        });
    }
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}

pub(super) fn parse_container(bytes: &[u8]) -> Result<Vec<Entry>, ImageError> {
    let (header_size, _) = header(bytes)?;
    let end = container_len(bytes)?;
    need(bytes, end as u64)?;
    let mut entries = Vec::new();
    let mut offset = header_size;
    let mut budget = MAX_IMAGE_SIZE;
    // Each entry is at least ENTRY_HEADER_MIN bytes, so this loop is bounded by `end`.
    while offset < end {
        let (entry, next, charge) = parse_entry(&bytes[..end], offset, budget)?;
        budget = budget.saturating_sub(charge);
        entries.push(entry);
        offset = next;
    }
    Ok(entries)
}

/// Parses the entry at `offset` of `container` (already cut to the container's end), which may
/// decompress to at most `budget` bytes; returns it, the next entry's offset and what it
/// charges to the budget (a compressed entry its declared size, so lying headers cannot add up).
fn parse_entry(
    container: &[u8],
    offset: usize,
    budget: u64,
) -> Result<(Entry, usize, u64), ImageError> {
    let out_of_bounds = |what, len: u64| ImageError::OutOfBounds {
        what,
        offset: offset as u64,
        len,
        limit: (container.len().saturating_sub(offset)) as u64,
    };
    let head = container
        .get(offset..)
        .filter(|h| h.len() >= ENTRY_HEADER_MIN as usize)
        .ok_or_else(|| out_of_bounds("fatbin entry header", ENTRY_HEADER_MIN.into()))?;
    let u16_at = |o| read_u16(head, o).unwrap_or(0);
    let u32_at = |o| read_u32(head, o).unwrap_or(0);
    let u64_at = |o| read_u64(head, o).unwrap_or(0);

    let kind = u16_at(0);
    let header_size = u32_at(4);
    if header_size < ENTRY_HEADER_MIN {
        return Err(ImageError::HeaderSize {
            what: "fatbin entry",
            size: header_size.into(),
            min: ENTRY_HEADER_MIN.into(),
        });
    }
    let payload_size = u64_at(8);
    let span = u64::from(header_size).saturating_add(payload_size);
    if span > head.len() as u64 {
        return Err(out_of_bounds("fatbin entry", span));
    }
    // span ≤ head.len(), so these conversions and slices are in range.
    let payload = &head[header_size as usize..span as usize];
    let compressed_size = u32_at(16);
    let (minor, major) = (u16_at(24), u16_at(26));
    let arch = u32_at(28);
    let flags = u64_at(40);
    let uncompressed_size = u64_at(56);

    let compression = if flags & FLAG_ZSTD != 0 {
        Compression::Zstd
    } else if flags & FLAG_LZ4 != 0 {
        Compression::Lz4
    } else {
        Compression::None
    };
    let data = match compression {
        Compression::None => payload.to_vec(),
        _ => {
            let stored = match compressed_size {
                0 => payload,
                n => payload
                    .get(..n as usize)
                    .ok_or_else(|| out_of_bounds("compressed payload", n.into()))?,
            };
            decompress(compression, stored, uncompressed_size, offset, budget)?
        }
    };

    let entry = match kind {
        KIND_PTX => {
            let text_len = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            let mut data = data;
            data.truncate(text_len);
            Entry {
                kind: EntryKind::Ptx,
                arch,
                ptx_version: Some(PtxVersion { major, minor }),
                compression,
                data,
            }
        }
        KIND_ELF => {
            let mut data = data;
            if let Ok(len) = elf::image_len(&data) {
                data.truncate(len);
            }
            Entry {
                kind: EntryKind::Elf,
                arch,
                ptx_version: None,
                compression,
                data,
            }
        }
        other => Entry {
            kind: EntryKind::Other(other),
            arch,
            ptx_version: None,
            compression,
            data,
        },
    };
    let charge = match compression {
        Compression::None => entry.data.len() as u64,
        _ => uncompressed_size,
    };
    Ok((entry, offset.saturating_add(span as usize), charge))
}

fn decompress(
    codec: Compression,
    stored: &[u8],
    declared: u64,
    offset: usize,
    budget: u64,
) -> Result<Vec<u8>, ImageError> {
    if declared > budget {
        return Err(ImageError::OutOfBounds {
            what: "decompressed fatbin entries",
            offset: offset as u64,
            len: declared,
            limit: budget,
        });
    }
    let too_big = || ImageError::DecompressedSize {
        offset,
        codec,
        declared,
    };
    match codec {
        Compression::None => Ok(stored.to_vec()),
        Compression::Zstd => {
            if declared
                > (stored.len() as u64)
                    .saturating_mul(ZSTD_MAX_RATIO)
                    .saturating_add(64 << 10)
            {
                return Err(too_big());
            }
            // The window never needs to exceed the content; a small floor keeps tiny frames
            // with the format's minimum window (1 KiB) and above working.
            let max_window = declared.max(ZSTD_MIN_WINDOW_LIMIT);
            let decoder =
                ruzstd::decoding::StreamingDecoder::new_with_max_window_size(stored, max_window)
                    .map_err(|source| ImageError::Zstd { offset, source })?;
            let mut out = Vec::new();
            // Read one byte past the declared size to detect a lying header; never more.
            decoder
                .take(declared.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|source| ImageError::ZstdData { offset, source })?;
            if out.len() as u64 > declared {
                return Err(too_big());
            }
            Ok(out)
        }
        Compression::Lz4 => {
            // An LZ4 block expands at most ~255-fold: a larger claim is a lie, and allocating
            // for it would let a tiny image reserve a gigabyte.
            if declared
                > (stored.len() as u64)
                    .saturating_mul(LZ4_MAX_RATIO)
                    .saturating_add(64)
            {
                return Err(too_big());
            }
            // declared ≤ MAX_IMAGE_SIZE; lz4_flex never writes past the buffer it is given.
            let mut out = vec![0; declared as usize];
            let n = lz4_flex::block::decompress_into(stored, &mut out)
                .map_err(|source| ImageError::Lz4 { offset, source })?;
            out.truncate(n);
            Ok(out)
        }
    }
}
