//! ELF cubins: just enough of ELF to report the arch and the file's extent.

use super::{need, read_u16, read_u32, read_u64, Compression, Entry, EntryKind, ImageError};

pub(super) const MAGIC: &[u8] = b"\x7fELF";

const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const DATA_LE: u8 = 1;
const SHT_NOBITS: u32 = 8;
/// Cap on an extended (`e_shnum == 0`) section count; cubins have a few dozen sections.
const MAX_SECTIONS: u64 = 1 << 20;

/// The fields of an ELF header this module uses, class-independent.
struct Header {
    is64: bool,
    abi_version: u8,
    flags: u32,
    ph: Table,
    sh: Table,
}

/// A header table: offset, entry size, entry count.
#[derive(Clone, Copy)]
struct Table {
    offset: u64,
    entsize: u64,
    count: u64,
}

impl Table {
    fn end(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        self.offset
            .saturating_add(self.entsize.saturating_mul(self.count))
    }

    /// The offset of entry `i` (< count, with the table within `bytes`).
    fn entry(&self, i: u64) -> usize {
        usize::try_from(self.offset.saturating_add(self.entsize.saturating_mul(i)))
            .unwrap_or(usize::MAX)
    }
}

fn header(bytes: &[u8]) -> Result<Header, ImageError> {
    need(bytes, 16)?;
    let (class, encoding) = (bytes[4], bytes[5]);
    if encoding != DATA_LE || (class != CLASS_32 && class != CLASS_64) {
        return Err(ImageError::ElfUnsupported { class, encoding });
    }
    let is64 = class == CLASS_64;
    need(bytes, if is64 { 64 } else { 52 })?;
    let u16_at = |o| u64::from(read_u16(bytes, o).unwrap_or(0));
    let u32_at = |o| read_u32(bytes, o).unwrap_or(0);
    let word_at = |o| {
        if is64 {
            read_u64(bytes, o).unwrap_or(0)
        } else {
            u32_at(o).into()
        }
    };
    // Offsets of e_phoff, e_shoff, e_flags, e_phentsize in each class; the u16 fields after
    // e_phentsize follow at +2, +4, +6.
    let (phoff, shoff, flags, phentsize) = if is64 {
        (32, 40, 48, 54)
    } else {
        (28, 32, 36, 42)
    };
    Ok(Header {
        is64,
        abi_version: bytes[8],
        flags: u32_at(flags),
        ph: Table {
            offset: word_at(phoff),
            entsize: u16_at(phentsize),
            count: u16_at(phentsize + 2),
        },
        sh: Table {
            offset: word_at(shoff),
            entsize: u16_at(phentsize + 4),
            count: u16_at(phentsize + 6),
        },
    })
}

/// The sm an ELF cubin targets, from `e_flags`.
fn arch(h: &Header) -> u32 {
    if h.abi_version >= 8 {
        (h.flags >> 8) & 0xff
    } else {
        h.flags & 0xff
    }
}

pub(super) fn image_len(bytes: &[u8]) -> Result<usize, ImageError> {
    let mut h = header(bytes)?;
    let ehsize: u64 = if h.is64 { 64 } else { 52 };
    // Extended numbering: e_shnum 0 with a section table stores the count in section 0's
    // sh_size.
    if h.sh.count == 0 && h.sh.offset != 0 {
        let one = Table { count: 1, ..h.sh };
        need(bytes, one.end().max(ehsize))?;
        let count = section(bytes, &h, 0).1;
        if count > MAX_SECTIONS {
            return Err(ImageError::OutOfBounds {
                what: "ELF section count",
                offset: h.sh.offset,
                len: count,
                limit: MAX_SECTIONS,
            });
        }
        h.sh.count = count;
    }
    let tables_end = h.ph.end().max(h.sh.end()).max(ehsize);
    need(bytes, tables_end)?;
    let mut end = tables_end;
    for i in 0..h.sh.count {
        let (kind, section_end) = section(bytes, &h, i);
        if kind != SHT_NOBITS {
            end = end.max(section_end);
        }
    }
    for i in 0..h.ph.count {
        end = end.max(segment_end(bytes, &h, i));
    }
    // Checks `end` against the size limit; the bytes themselves need not all be present.
    match need(bytes, end) {
        Ok(()) | Err(ImageError::Truncated { .. }) => {
            Ok(usize::try_from(end).unwrap_or(usize::MAX))
        }
        Err(e) => Err(e),
    }
}

/// Section `i`'s type and end offset (section 0's "end" is its sh_size: see image_len).
fn section(bytes: &[u8], h: &Header, i: u64) -> (u32, u64) {
    let at = h.sh.entry(i);
    let kind = read_u32(bytes, at.saturating_add(4)).unwrap_or(0);
    let (offset, size) = if h.is64 {
        (
            read_u64(bytes, at.saturating_add(24)),
            read_u64(bytes, at.saturating_add(32)),
        )
    } else {
        (
            read_u32(bytes, at.saturating_add(16)).map(u64::from),
            read_u32(bytes, at.saturating_add(20)).map(u64::from),
        )
    };
    let (offset, size) = (offset.unwrap_or(0), size.unwrap_or(0));
    if i == 0 {
        return (kind, size);
    }
    (kind, offset.saturating_add(size))
}

fn segment_end(bytes: &[u8], h: &Header, i: u64) -> u64 {
    let at = h.ph.entry(i);
    let (offset, filesz) = if h.is64 {
        (
            read_u64(bytes, at.saturating_add(8)),
            read_u64(bytes, at.saturating_add(32)),
        )
    } else {
        (
            read_u32(bytes, at.saturating_add(4)).map(u64::from),
            read_u32(bytes, at.saturating_add(16)).map(u64::from),
        )
    };
    offset.unwrap_or(0).saturating_add(filesz.unwrap_or(0))
}

/// A standalone cubin: one ELF entry trimmed to the file's extent.
pub(super) fn parse(bytes: &[u8]) -> Result<Entry, ImageError> {
    let h = header(bytes)?;
    let len = image_len(bytes)?;
    need(bytes, len as u64)?;
    Ok(Entry {
        kind: EntryKind::Elf,
        arch: arch(&h),
        ptx_version: None,
        compression: Compression::None,
        data: bytes.get(..len).unwrap_or(bytes).to_vec(),
    })
}
