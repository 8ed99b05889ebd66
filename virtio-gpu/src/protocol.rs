//! The virtio-gpu wire format (virtio 1.2 §5.7.6): command and response types, flags, formats
//! and the fixed-layout structs the device reads and writes.
//!
//! Everything is little-endian and decoded field by field from byte slices: a short or garbage
//! buffer is a [`DecodeError`], never a panic.

/// The virtio device id of a GPU.
pub const DEVICE_ID: u32 = 16;

/// Feature bits (virtio 1.2 §5.7.3).
pub mod features {
    /// 3D mode (virgl) is supported.
    pub const VIRTIO_GPU_F_VIRGL: u32 = 0;
    /// EDID is supported.
    pub const VIRTIO_GPU_F_EDID: u32 = 1;
    /// Resource UUIDs are supported.
    pub const VIRTIO_GPU_F_RESOURCE_UUID: u32 = 2;
    /// Blob resources are supported.
    pub const VIRTIO_GPU_F_RESOURCE_BLOB: u32 = 3;
    /// Multiple context types and sync timelines are supported.
    pub const VIRTIO_GPU_F_CONTEXT_INIT: u32 = 4;
}

/// Command and response types (`enum virtio_gpu_ctrl_type`).
pub mod cmd {
    // 2D commands
    pub const GET_DISPLAY_INFO: u32 = 0x0100;
    pub const RESOURCE_CREATE_2D: u32 = 0x0101;
    pub const RESOURCE_UNREF: u32 = 0x0102;
    pub const SET_SCANOUT: u32 = 0x0103;
    pub const RESOURCE_FLUSH: u32 = 0x0104;
    pub const TRANSFER_TO_HOST_2D: u32 = 0x0105;
    pub const RESOURCE_ATTACH_BACKING: u32 = 0x0106;
    pub const RESOURCE_DETACH_BACKING: u32 = 0x0107;
    pub const GET_CAPSET_INFO: u32 = 0x0108;
    pub const GET_CAPSET: u32 = 0x0109;
    pub const GET_EDID: u32 = 0x010a;
    pub const RESOURCE_ASSIGN_UUID: u32 = 0x010b;
    pub const RESOURCE_CREATE_BLOB: u32 = 0x010c;
    pub const SET_SCANOUT_BLOB: u32 = 0x010d;
    // 3D commands
    pub const CTX_CREATE: u32 = 0x0200;
    pub const CTX_DESTROY: u32 = 0x0201;
    pub const CTX_ATTACH_RESOURCE: u32 = 0x0202;
    pub const CTX_DETACH_RESOURCE: u32 = 0x0203;
    pub const RESOURCE_CREATE_3D: u32 = 0x0204;
    pub const TRANSFER_TO_HOST_3D: u32 = 0x0205;
    pub const TRANSFER_FROM_HOST_3D: u32 = 0x0206;
    pub const SUBMIT_3D: u32 = 0x0207;
    pub const RESOURCE_MAP_BLOB: u32 = 0x0208;
    pub const RESOURCE_UNMAP_BLOB: u32 = 0x0209;
    // cursor commands
    pub const UPDATE_CURSOR: u32 = 0x0300;
    pub const MOVE_CURSOR: u32 = 0x0301;
    // success responses
    pub const RESP_OK_NODATA: u32 = 0x1100;
    pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
    pub const RESP_OK_CAPSET_INFO: u32 = 0x1102;
    pub const RESP_OK_CAPSET: u32 = 0x1103;
    pub const RESP_OK_EDID: u32 = 0x1104;
    // error responses
    pub const RESP_ERR_UNSPEC: u32 = 0x1200;
    pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
    pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
    pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
    pub const RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
    pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;
}

/// `virtio_gpu_ctrl_hdr.flags`: the driver wants a fence for this command.
pub const FLAG_FENCE: u32 = 1;
/// `virtio_gpu_ctrl_hdr.flags`: `ring_idx` is valid (context-init fences).
pub const FLAG_INFO_RING_IDX: u32 = 2;

/// Maximum number of scanouts (`VIRTIO_GPU_MAX_SCANOUTS`).
pub const MAX_SCANOUTS: usize = 16;

/// Pending events in config space: the display configuration changed.
pub const EVENT_DISPLAY: u32 = 1;

/// Pixel formats (`enum virtio_gpu_formats`); all are 4 bytes per pixel, named by byte order in
/// memory.
pub mod format {
    pub const B8G8R8A8_UNORM: u32 = 1;
    pub const B8G8R8X8_UNORM: u32 = 2;
    pub const A8R8G8B8_UNORM: u32 = 3;
    pub const X8R8G8B8_UNORM: u32 = 4;
    pub const R8G8B8A8_UNORM: u32 = 67;
    pub const X8B8G8R8_UNORM: u32 = 68;
    pub const A8B8G8R8_UNORM: u32 = 121;
    pub const R8G8B8X8_UNORM: u32 = 134;

    /// Where red, green, blue (and alpha, if the format has it) sit in a pixel's 4 bytes.
    pub fn rgba_offsets(format: u32) -> Option<([usize; 3], Option<usize>)> {
        Some(match format {
            B8G8R8A8_UNORM => ([2, 1, 0], Some(3)),
            B8G8R8X8_UNORM => ([2, 1, 0], None),
            A8R8G8B8_UNORM => ([1, 2, 3], Some(0)),
            X8R8G8B8_UNORM => ([1, 2, 3], None),
            R8G8B8A8_UNORM => ([0, 1, 2], Some(3)),
            X8B8G8R8_UNORM => ([3, 2, 1], None),
            A8B8G8R8_UNORM => ([3, 2, 1], Some(0)),
            R8G8B8X8_UNORM => ([0, 1, 2], None),
            _ => return None,
        })
    }
}

/// Bytes per pixel of every virtio-gpu 2D format.
pub const BYTES_PER_PIXEL: u32 = 4;

/// Why a command buffer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the struct does.
    #[error("command is {got} bytes, needs {need}")]
    Short { need: usize, got: usize },
}

/// A little-endian cursor over a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let short = DecodeError::Short {
            need: self.pos.saturating_add(N),
            got: self.buf.len(),
        };
        let end = self.pos.checked_add(N).ok_or(short)?;
        let bytes = self.buf.get(self.pos..end).ok_or(short)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        let short = DecodeError::Short {
            need: self.pos.saturating_add(n),
            got: self.buf.len(),
        };
        let end = self.pos.checked_add(n).ok_or(short)?;
        if end > self.buf.len() {
            return Err(short);
        }
        self.pos = end;
        Ok(())
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// `struct virtio_gpu_ctrl_hdr` (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlHdr {
    pub type_: u32,
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

impl CtrlHdr {
    pub const LEN: usize = 24;

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let h = CtrlHdr {
            type_: r.u32()?,
            flags: r.u32()?,
            fence_id: r.u64()?,
            ctx_id: r.u32()?,
            ring_idx: r.u8()?,
        };
        r.skip(3)?;
        Ok(h)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.fence_id.to_le_bytes());
        out.extend_from_slice(&self.ctx_id.to_le_bytes());
        out.push(self.ring_idx);
        out.extend_from_slice(&[0; 3]);
    }

    /// The response header for a command with this header: `type_`, and the fence fields copied
    /// when the command asked for a fence (virtio 1.2 §5.7.6.7).
    pub fn response(&self, type_: u32) -> CtrlHdr {
        if self.flags & FLAG_FENCE != 0 {
            CtrlHdr {
                type_,
                flags: self.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX),
                fence_id: self.fence_id,
                ctx_id: self.ctx_id,
                ring_idx: self.ring_idx,
            }
        } else {
            CtrlHdr {
                type_,
                ..CtrlHdr::default()
            }
        }
    }
}

/// `struct virtio_gpu_rect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Rect {
            x: r.u32()?,
            y: r.u32()?,
            width: r.u32()?,
            height: r.u32()?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.x, self.y, self.width, self.height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Whether the rectangle lies inside a `w`×`h` surface (no arithmetic overflow possible).
    pub fn fits_in(&self, w: u32, h: u32) -> bool {
        u64::from(self.x) + u64::from(self.width) <= u64::from(w)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(h)
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The intersection of two rectangles (empty when they do not overlap).
    pub fn intersect(&self, o: &Rect) -> Rect {
        let x0 = self.x.max(o.x);
        let y0 = self.y.max(o.y);
        let x1 =
            (u64::from(self.x) + u64::from(self.width)).min(u64::from(o.x) + u64::from(o.width));
        let y1 =
            (u64::from(self.y) + u64::from(self.height)).min(u64::from(o.y) + u64::from(o.height));
        if x1 <= u64::from(x0) || y1 <= u64::from(y0) {
            return Rect::default();
        }
        Rect {
            x: x0,
            y: y0,
            width: (x1 - u64::from(x0)) as u32,
            height: (y1 - u64::from(y0)) as u32,
        }
    }
}

/// `struct virtio_gpu_mem_entry`: one piece of a resource's guest backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEntry {
    pub addr: u64,
    pub length: u32,
}

impl MemEntry {
    pub const LEN: usize = 16;
}

/// A decoded control or cursor command (the part after the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    GetDisplayInfo,
    GetEdid {
        scanout: u32,
    },
    GetCapsetInfo {
        index: u32,
    },
    GetCapset {
        id: u32,
        version: u32,
    },
    ResourceCreate2d {
        resource_id: u32,
        format: u32,
        width: u32,
        height: u32,
    },
    ResourceUnref {
        resource_id: u32,
    },
    SetScanout {
        rect: Rect,
        scanout_id: u32,
        resource_id: u32,
    },
    ResourceFlush {
        rect: Rect,
        resource_id: u32,
    },
    TransferToHost2d {
        rect: Rect,
        offset: u64,
        resource_id: u32,
    },
    ResourceAttachBacking {
        resource_id: u32,
        entries: Vec<MemEntry>,
    },
    ResourceDetachBacking {
        resource_id: u32,
    },
    UpdateCursor(CursorCmd),
    MoveCursor(CursorCmd),
    /// A command type this device does not implement (answered with ERR_UNSPEC).
    Unsupported(u32),
}

/// `struct virtio_gpu_update_cursor` (also used by MOVE_CURSOR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorCmd {
    pub scanout_id: u32,
    pub x: u32,
    pub y: u32,
    pub resource_id: u32,
    pub hot_x: u32,
    pub hot_y: u32,
}

/// Largest number of backing entries one ATTACH_BACKING may carry (a 64 MiB resource in 4 KiB
/// pages, which Linux sends page by page when guest memory is fragmented).
pub const MAX_BACKING_ENTRIES: u32 = 16384;

impl Command {
    /// Decodes the command that follows `hdr` in `body` (the whole readable part of a chain,
    /// header included).
    pub fn decode(hdr: &CtrlHdr, body: &[u8]) -> Result<Command, CommandError> {
        let mut r = Reader::new(body);
        r.skip(CtrlHdr::LEN)?;
        Ok(match hdr.type_ {
            cmd::GET_DISPLAY_INFO => Command::GetDisplayInfo,
            cmd::GET_EDID => Command::GetEdid { scanout: r.u32()? },
            cmd::GET_CAPSET_INFO => Command::GetCapsetInfo { index: r.u32()? },
            cmd::GET_CAPSET => Command::GetCapset {
                id: r.u32()?,
                version: r.u32()?,
            },
            cmd::RESOURCE_CREATE_2D => Command::ResourceCreate2d {
                resource_id: r.u32()?,
                format: r.u32()?,
                width: r.u32()?,
                height: r.u32()?,
            },
            cmd::RESOURCE_UNREF => Command::ResourceUnref {
                resource_id: r.u32()?,
            },
            cmd::SET_SCANOUT => Command::SetScanout {
                rect: Rect::decode(&mut r)?,
                scanout_id: r.u32()?,
                resource_id: r.u32()?,
            },
            cmd::RESOURCE_FLUSH => Command::ResourceFlush {
                rect: Rect::decode(&mut r)?,
                resource_id: r.u32()?,
            },
            cmd::TRANSFER_TO_HOST_2D => Command::TransferToHost2d {
                rect: Rect::decode(&mut r)?,
                offset: r.u64()?,
                resource_id: r.u32()?,
            },
            cmd::RESOURCE_ATTACH_BACKING => {
                let resource_id = r.u32()?;
                let nr_entries = r.u32()?;
                if nr_entries > MAX_BACKING_ENTRIES {
                    return Err(CommandError::TooManyEntries(nr_entries));
                }
                let mut entries = Vec::with_capacity(nr_entries as usize);
                for _ in 0..nr_entries {
                    let addr = r.u64()?;
                    let length = r.u32()?;
                    r.skip(4)?;
                    entries.push(MemEntry { addr, length });
                }
                Command::ResourceAttachBacking {
                    resource_id,
                    entries,
                }
            }
            cmd::RESOURCE_DETACH_BACKING => Command::ResourceDetachBacking {
                resource_id: r.u32()?,
            },
            cmd::UPDATE_CURSOR | cmd::MOVE_CURSOR => {
                let c = CursorCmd {
                    scanout_id: r.u32()?,
                    x: r.u32()?,
                    y: r.u32()?,
                    resource_id: {
                        r.skip(4)?;
                        r.u32()?
                    },
                    hot_x: r.u32()?,
                    hot_y: r.u32()?,
                };
                if hdr.type_ == cmd::UPDATE_CURSOR {
                    Command::UpdateCursor(c)
                } else {
                    Command::MoveCursor(c)
                }
            }
            other => Command::Unsupported(other),
        })
    }
}

/// Why a command was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("ATTACH_BACKING with {0} entries (at most {MAX_BACKING_ENTRIES})")]
    TooManyEntries(u32),
}

/// One scanout as reported by GET_DISPLAY_INFO (`struct virtio_gpu_display_one`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DisplayOne {
    pub rect: Rect,
    pub enabled: bool,
}

/// Encodes `struct virtio_gpu_resp_display_info` (24 + 16 × 24 bytes).
pub fn encode_display_info(hdr: &CtrlHdr, modes: &[DisplayOne], out: &mut Vec<u8>) {
    hdr.encode(out);
    for i in 0..MAX_SCANOUTS {
        let m = modes.get(i).copied().unwrap_or_default();
        m.rect.encode(out);
        out.extend_from_slice(&u32::from(m.enabled).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
}

/// Encodes `struct virtio_gpu_resp_edid` (24 + 8 + 1024 bytes).
pub fn encode_edid(hdr: &CtrlHdr, edid: &[u8], out: &mut Vec<u8>) {
    hdr.encode(out);
    let n = edid.len().min(1024);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let start = out.len();
    out.extend_from_slice(&edid[..n]);
    out.resize(start + 1024, 0);
}

/// Encodes `struct virtio_gpu_resp_capset_info`.
pub fn encode_capset_info(
    hdr: &CtrlHdr,
    id: u32,
    max_version: u32,
    max_size: u32,
    out: &mut Vec<u8>,
) {
    hdr.encode(out);
    for v in [id, max_version, max_size, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_headers_fail() {
        let h = CtrlHdr {
            type_: cmd::RESOURCE_FLUSH,
            flags: FLAG_FENCE,
            fence_id: 77,
            ctx_id: 3,
            ring_idx: 1,
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(b.len(), CtrlHdr::LEN);
        assert_eq!(CtrlHdr::decode(&mut Reader::new(&b)), Ok(h));
        for n in 0..CtrlHdr::LEN {
            assert!(CtrlHdr::decode(&mut Reader::new(&b[..n])).is_err());
        }
    }

    #[test]
    fn response_copies_fence_only_when_asked() {
        let mut h = CtrlHdr {
            type_: cmd::TRANSFER_TO_HOST_2D,
            fence_id: 5,
            ..CtrlHdr::default()
        };
        assert_eq!(h.response(cmd::RESP_OK_NODATA).fence_id, 0);
        h.flags = FLAG_FENCE;
        let r = h.response(cmd::RESP_OK_NODATA);
        assert_eq!((r.flags, r.fence_id), (FLAG_FENCE, 5));
    }

    #[test]
    fn rect_checks_do_not_overflow() {
        let r = Rect {
            x: u32::MAX,
            y: 0,
            width: 2,
            height: 1,
        };
        assert!(!r.fits_in(u32::MAX, 1));
        let a = Rect {
            x: 10,
            y: 10,
            width: 100,
            height: 100,
        };
        let b = Rect {
            x: 50,
            y: 0,
            width: u32::MAX,
            height: 20,
        };
        assert_eq!(
            a.intersect(&b),
            Rect {
                x: 50,
                y: 10,
                width: 60,
                height: 10
            }
        );
    }

    #[test]
    fn display_info_and_edid_have_their_spec_sizes() {
        let mut b = Vec::new();
        encode_display_info(&CtrlHdr::default(), &[], &mut b);
        assert_eq!(b.len(), 408);
        b.clear();
        encode_edid(&CtrlHdr::default(), &[1; 128], &mut b);
        assert_eq!(b.len(), 1056);
    }

    #[test]
    fn attach_backing_bounds_its_entry_count() {
        let mut b = Vec::new();
        let h = CtrlHdr {
            type_: cmd::RESOURCE_ATTACH_BACKING,
            ..CtrlHdr::default()
        };
        h.encode(&mut b);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Command::decode(&h, &b),
            Err(CommandError::TooManyEntries(u32::MAX))
        );
        b.truncate(CtrlHdr::LEN + 4);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert!(matches!(
            Command::decode(&h, &b),
            Err(CommandError::Decode(_))
        ));
    }
}
