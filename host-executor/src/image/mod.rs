//! Module images: the bytes that `cuModuleLoadData[Ex]`, `cuModuleLoadFatBinary`,
//! `cuLibraryLoadData` and cudart's `__cudaRegisterFatBinary` hand to the driver.
//!
//! Images come from untrusted guests, so everything here is panic-free and checks every
//! length and offset against the bytes actually given ([`parse`] is proptested with arbitrary
//! and mutated inputs).
//!
//! # Formats
//!
//! | first bytes | format | what [`parse`] returns |
//! | --- | --- | --- |
//! | `50 ed 55 ba` (0xBA55ED50) | fatbin container | one [`Entry`] per embedded image, decompressed |
//! | `7f 45 4c 46` (`\x7fELF`) | cubin (SASS for one sm) | one [`EntryKind::Elf`] entry with its arch |
//! | `b1 43 62 46` (0x466243B1) | fatbin wrapper | [`ImageError::Wrapper`]: it holds a pointer |
//! | anything textual | PTX, up to its NUL | one [`EntryKind::Ptx`] entry |
//! | `56 43 4c 4b` (`VCLK`) | linked image (`virtio_cuda::protocol::linked`) | part 0's entries, parts 1.. as [`Image::parts`] |
//!
//! **Fatbin container** (nvcc `-fatbin`, the `.nv_fatbin` section of host executables), all
//! little-endian, as measured on nvcc 13.0 output (see `fixtures/`):
//!
//! ```text
//! header (16 bytes): u32 magic 0xBA55ED50, u16 version (1), u16 header_size (16), u64 fat_size
//! then entries until header_size + fat_size, each:
//!   +0  u16 kind              1 = PTX, 2 = ELF cubin (others are skipped over and kept as Other)
//!   +2  u16 version           0x0101
//!   +4  u32 header_size       64 for ELF, 80 for PTX (bytes 64..80: an options record)
//!   +8  u64 payload_size      payload bytes after the header, padded to 8
//!   +16 u32 compressed_size   exact size of a compressed payload (0 when uncompressed)
//!   +20 u32 options_offset
//!   +24 u16 minor, +26 u16 major   PTX ISA version for PTX entries (9.0 for nvcc 13)
//!   +28 u32 arch              sm number: 75 for sm_75 / compute_75
//!   +32 u32 name_offset, +36 u32 name_len
//!   +40 u64 flags             0x1 64-bit, 0x10 linux host, 0x2000 LZ4, 0x8000 ZSTD
//!   +48 u64 reserved
//!   +56 u64 uncompressed_size
//! ```
//!
//! nvcc 13 compresses PTX entries by default (ZSTD, payload starts `28 b5 2f fd`) and, with
//! `-Xfatbin -compress-all`, the SASS too. Toolkits before 12.4 used LZ4 (a raw LZ4 block)
//! with flag 0x2000. Both are decoded in pure Rust (`ruzstd`, `lz4_flex`), each entry bounded
//! by [`MAX_IMAGE_SIZE`] in all whatever the headers claim.
//!
//! **Fatbin wrapper** (`__fatBinC_Wrapper_t`, what `__cudaRegisterFatBinary` and often
//! `cuLibraryLoadData`/`cuModuleLoadData` receive): `{u32 magic 0x466243B1, u32 version,
//! u64 data, u64 filename_or_fatbins}`. `data` points at a fatbin container in the *client's*
//! address space, so only the shim can follow it: it calls [`FatbinWrapper::parse`], reads the
//! container at `data` (its length from [`image_len`]) and forwards that.
//!
//! **ELF cubins** carry SASS for one GPU generation, which the cpu backend cannot run; their
//! arch comes from `e_flags` (byte 1 for EI_ABIVERSION ≥ 8, as nvcc 13 writes; byte 0 before).
//!
//! # Choosing what to run
//!
//! [`Image::best_ptx`] picks the PTX the cpu backend should interpret: among PTX entries the
//! one with the highest arch ≤ [`CPU_PTX_MAX_ARCH`] (sm_80: the newest feature level the
//! interpreter implements, and newer PTX only adds instructions it may lack), else — if every
//! PTX entry targets something newer — the lowest arch, which needs the fewest features.
//!
//! # Sizing an image given only a pointer
//!
//! `cuModuleLoadData` passes no length. [`image_len`] tells from an image's beginning how many
//! bytes it occupies; when the prefix is too short to decide it returns
//! [`ImageError::Truncated`] with the number of bytes it needs next, so the shim reads that
//! much and asks again (at most three rounds for an ELF: header, header tables, done).

mod elf;
mod fatbin;
mod ptx;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use virtio_cuda::protocol::linked;

pub use fatbin::FatbinWrapper;

/// The newest sm whose PTX the cpu backend prefers (see [`Image::best_ptx`]).
pub const CPU_PTX_MAX_ARCH: u32 = 80;

/// Upper bound on any image length we accept and on the total decompressed size of one image's
/// entries (so a small fatbin of many compressed entries cannot claim unbounded memory).
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;

/// Fatbin container magic (`50 ed 55 ba` on disk).
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Fatbin wrapper (`__fatBinC_Wrapper_t`) magic.
pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;

/// What kind of image a byte string starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A fatbin container (0xBA55ED50).
    Fatbin,
    /// A fatbin wrapper holding a pointer to a container (0x466243B1).
    Wrapper,
    /// An ELF cubin.
    Elf,
    /// PTX source text.
    Ptx,
    /// Several images loaded as one module (relocatable device code, the driver's linker).
    Linked,
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// PTX text.
    Ptx,
    /// An ELF cubin (SASS).
    Elf,
    /// An entry kind this parser does not know (e.g. LTO IR); its payload is kept as is.
    Other(u16),
}

/// How an entry was stored in its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Lz4,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        })
    }
}

/// A PTX ISA version (`.version major.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PtxVersion {
    pub major: u16,
    pub minor: u16,
}

/// One image inside a module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// The sm number it targets (75 for sm_75/compute_75); 0 when unknown.
    pub arch: u32,
    /// The PTX ISA version, for PTX entries whose header or text says it.
    pub ptx_version: Option<PtxVersion>,
    /// How it was stored; `data` is always decompressed.
    pub compression: Compression,
    /// The decompressed payload: PTX text without its NUL terminator, an ELF trimmed to its
    /// extent, or an unknown entry's payload as stored.
    pub data: Vec<u8>,
}

impl Entry {
    /// The entry's PTX text, if it is a PTX entry holding UTF-8.
    pub fn ptx(&self) -> Option<&str> {
        match self.kind {
            EntryKind::Ptx => std::str::from_utf8(&self.data).ok(),
            _ => None,
        }
    }
}

/// A parsed module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub format: Format,
    /// The entries of the image (of part 0, for a linked image).
    pub entries: Vec<Entry>,
    /// A linked image's parts 1..: the prelinked translation units or the linker's inputs.
    pub parts: Vec<Image>,
}

impl Image {
    /// The PTX the cpu backend should run: the PTX entry with the highest arch ≤
    /// [`CPU_PTX_MAX_ARCH`], else the one with the lowest arch; for a linked image without PTX
    /// of its own, the chosen PTX of each part, joined into one module. `None` if there is
    /// no PTX.
    pub fn best_ptx(&self) -> Option<Cow<'_, str>> {
        self.best_ptx_for(CPU_PTX_MAX_ARCH)
    }

    /// [`Image::best_ptx`] for a backend whose newest supported arch is `max_arch`.
    pub fn best_ptx_for(&self, max_arch: u32) -> Option<Cow<'_, str>> {
        let ptx = || self.entries.iter().filter(|e| e.ptx().is_some());
        let own = ptx()
            .filter(|e| e.arch <= max_arch)
            .max_by_key(|e| e.arch)
            .or_else(|| ptx().min_by_key(|e| e.arch))
            .and_then(Entry::ptx);
        if let Some(text) = own {
            return Some(Cow::Borrowed(text));
        }
        let parts: Vec<Cow<'_, str>> = self
            .parts
            .iter()
            .filter_map(|p| p.best_ptx_for(max_arch))
            .collect();
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => {
                let texts: Vec<&str> = parts.iter().map(|c| c.as_ref()).collect();
                Some(Cow::Owned(ptx::join(&texts)))
            }
        }
    }

    /// Joins PTX texts into one module (the driver linker's PTX rule; see [`Image::best_ptx`]).
    pub fn join_ptx(modules: &[&str]) -> String {
        ptx::join(modules)
    }

    /// The archs of the entries of `kind`, in image order.
    pub fn archs(&self, kind: EntryKind) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.arch)
            .collect()
    }
}

/// Why an image was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No bytes at all.
    #[error("empty module image")]
    Empty,
    /// The bytes end before the structure they start does; `needed` is how many bytes the
    /// parser needs to get further (for PTX with no NUL yet: one more than given).
    #[error("module image truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    /// The first bytes are none of the known formats.
    #[error("unrecognised module image (starts with {0:02x?})")]
    UnknownFormat(Vec<u8>),
    /// A fatbin wrapper: it points at the real image, which only the client can read.
    #[error(
        "module image is a fatbin wrapper (version {}) pointing at {:#x} in the client; \
         the client must send the container it points to",
        .0.version, .0.data
    )]
    Wrapper(FatbinWrapper),
    /// A fatbin container version other than 1.
    #[error("unsupported fatbin version {0}")]
    FatbinVersion(u16),
    /// A header size field below the structure's minimum.
    #[error("{what} header size {size} is below the minimum {min}")]
    HeaderSize {
        what: &'static str,
        size: u64,
        min: u64,
    },
    /// A size or offset beyond the image (or beyond [`MAX_IMAGE_SIZE`]).
    #[error("{what} at offset {offset} spans {len} bytes, beyond the {limit} available")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// A compressed entry's ZSTD frame could not be read.
    #[error("fatbin entry at offset {offset}: bad zstd frame")]
    Zstd {
        offset: usize,
        #[source]
        source: ruzstd::decoding::errors::FrameDecoderError,
    },
    /// A compressed entry's ZSTD data could not be decoded.
    #[error("fatbin entry at offset {offset}: zstd decoding failed")]
    ZstdData {
        offset: usize,
        #[source]
        source: std::io::Error,
    },
    /// A compressed entry's LZ4 block could not be decoded.
    #[error("fatbin entry at offset {offset}: lz4 decoding failed")]
    Lz4 {
        offset: usize,
        #[source]
        source: lz4_flex::block::DecompressError,
    },
    /// A compressed entry's data does not fit the uncompressed size its header declares.
    #[error(
        "fatbin entry at offset {offset}: {codec} data does not fit the declared uncompressed size {declared}"
    )]
    DecompressedSize {
        offset: usize,
        codec: Compression,
        declared: u64,
    },
    /// An ELF this parser does not handle (class/endianness).
    #[error("unsupported ELF (class {class}, data encoding {encoding}); cubins are little-endian ELF32/ELF64")]
    ElfUnsupported { class: u8, encoding: u8 },
    /// PTX that is not UTF-8.
    #[error("PTX text is not UTF-8 (invalid byte at offset {0})")]
    PtxNotUtf8(usize),
    /// Text without a `.version` directive.
    #[error("PTX text has no .version directive")]
    PtxNoVersion,
    /// A malformed linked image.
    #[error("linked image: {0}")]
    Linked(linked::LinkedError),
    /// A linked image inside a linked image.
    #[error("a linked image's part is itself a linked image")]
    NestedLinked,
}

/// Tells which format `prefix` starts with (needs 4 bytes for the binary magics).
pub fn format(prefix: &[u8]) -> Result<Format, ImageError> {
    let first = *prefix.first().ok_or(ImageError::Empty)?;
    if let Some(magic) = read_u32(prefix, 0) {
        match magic {
            FATBIN_MAGIC => return Ok(Format::Fatbin),
            WRAPPER_MAGIC => return Ok(Format::Wrapper),
            linked::MAGIC => return Ok(Format::Linked),
            _ if prefix.starts_with(elf::MAGIC) => return Ok(Format::Elf),
            _ => {}
        }
    }
    if first.is_ascii_graphic() || first.is_ascii_whitespace() {
        return Ok(Format::Ptx);
    }
    if prefix.len() < 4 {
        // Too short to rule out a binary magic.
        return Err(ImageError::Truncated {
            needed: 4,
            available: prefix.len(),
        });
    }
    Err(ImageError::UnknownFormat(
        prefix.iter().take(8).copied().collect(),
    ))
}

/// Parses a module image: a fatbin container, an ELF cubin or PTX text. Bytes after the
/// image's end are ignored. A fatbin wrapper is reported as [`ImageError::Wrapper`].
pub fn parse(bytes: &[u8]) -> Result<Image, ImageError> {
    let format = format(bytes)?;
    let entries = match format {
        Format::Fatbin => fatbin::parse_container(bytes)?,
        Format::Wrapper => return Err(ImageError::Wrapper(FatbinWrapper::parse(bytes)?)),
        Format::Elf => vec![elf::parse(bytes)?],
        Format::Ptx => vec![ptx::parse(bytes)?],
        Format::Linked => return parse_linked(bytes),
    };
    Ok(Image {
        format,
        entries,
        parts: Vec::new(),
    })
}

/// A linked image: part 0 (possibly empty) and the parts to link. Parts may not themselves be
/// linked images, and their decompressed sizes count against one [`MAX_IMAGE_SIZE`] in all.
fn parse_linked(bytes: &[u8]) -> Result<Image, ImageError> {
    let raw = linked::decode(bytes).map_err(ImageError::Linked)?;
    let mut images = Vec::with_capacity(raw.len());
    let mut total: u64 = 0;
    for (i, part) in raw.iter().enumerate() {
        if part.is_empty() && i == 0 {
            images.push(Image {
                format: Format::Linked,
                entries: Vec::new(),
                parts: Vec::new(),
            });
            continue;
        }
        if format(part)? == Format::Linked {
            return Err(ImageError::NestedLinked);
        }
        let img = parse(part)?;
        total = img
            .entries
            .iter()
            .fold(total, |t, e| t.saturating_add(e.data.len() as u64));
        if total > MAX_IMAGE_SIZE {
            return Err(ImageError::OutOfBounds {
                what: "linked image parts",
                offset: 0,
                len: total,
                limit: MAX_IMAGE_SIZE,
            });
        }
        images.push(img);
    }
    let mut images = images.into_iter();
    let primary = images.next().map(|i| i.entries).unwrap_or_default();
    Ok(Image {
        format: Format::Linked,
        entries: primary,
        parts: images.collect(),
    })
}

/// How many bytes the image starting with `prefix` occupies: header size + fat size for a
/// fatbin container, 24 for a wrapper, up to and including the NUL for PTX, the furthest end
/// of the header tables, sections and segments for an ELF. [`ImageError::Truncated`] when
/// `prefix` is too short to tell: read `needed` bytes and call again.
pub fn image_len(prefix: &[u8]) -> Result<usize, ImageError> {
    match format(prefix)? {
        Format::Fatbin => fatbin::container_len(prefix),
        Format::Wrapper => Ok(fatbin::WRAPPER_SIZE),
        Format::Linked => match linked::len(prefix) {
            Ok(l) if l <= MAX_IMAGE_SIZE => Ok(l as usize),
            Ok(l) => Err(ImageError::OutOfBounds {
                what: "linked image",
                offset: 0,
                len: l,
                limit: MAX_IMAGE_SIZE,
            }),
            Err(linked::LinkedError::Truncated { needed, available }) => {
                Err(ImageError::Truncated {
                    needed: needed as usize,
                    available,
                })
            }
            Err(e) => Err(ImageError::Linked(e)),
        },
        Format::Elf => elf::image_len(prefix),
        Format::Ptx => match prefix.iter().position(|&b| b == 0) {
            Some(nul) => Ok(nul + 1),
            None => Err(ImageError::Truncated {
                needed: prefix.len().saturating_add(1),
                available: prefix.len(),
            }),
        },
    }
}

fn read_bytes<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    read_bytes(bytes, offset).map(u16::from_le_bytes)
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    read_bytes(bytes, offset).map(u32::from_le_bytes)
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    read_bytes(bytes, offset).map(u64::from_le_bytes)
}

/// `bytes` must hold at least `needed` bytes.
fn need(bytes: &[u8], needed: u64) -> Result<(), ImageError> {
    if needed > MAX_IMAGE_SIZE {
        return Err(ImageError::OutOfBounds {
            what: "image",
            offset: 0,
            len: needed,
            limit: MAX_IMAGE_SIZE,
        });
    }
    // `needed` ≤ MAX_IMAGE_SIZE fits usize on every supported (64-bit) host.
    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
    if bytes.len() < needed {
        return Err(ImageError::Truncated {
            needed,
            available: bytes.len(),
        });
    }
    Ok(())
}
