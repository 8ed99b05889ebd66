//! vhost-user messages: the 12-byte header, request codes and the payloads the backend reads and
//! writes. Pure parsing, no I/O; every decoder checks lengths and never panics.
//!
//! ```text
//! header:  request u32 | flags u32 (bits 0-1 version = 1, bit 2 reply, bit 3 need reply) | size u32
//! payload: `size` bytes, then file descriptors as SCM_RIGHTS ancillary data of the same send
//! ```

use super::VhostUserError;

/// Header size in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted (the largest standard payload, a memory table of 8 regions, is 264).
pub const MAX_PAYLOAD: usize = 4096;
/// Most file descriptors one message may carry (`VHOST_MEMORY_MAX_NREGIONS`).
pub const MAX_FDS: usize = 8;
/// Most memory regions in a table.
pub const MAX_REGIONS: usize = 8;

/// Protocol version in the header's flags.
pub const VERSION: u32 = 0x1;
/// Flag: this message is a reply.
pub const FLAG_REPLY: u32 = 1 << 2;
/// Flag: the sender wants a reply-ack (with `REPLY_ACK` negotiated).
pub const FLAG_NEED_REPLY: u32 = 1 << 3;

/// Virtio feature bit: the backend speaks the protocol-feature extension.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Protocol feature bits (`VHOST_USER_PROTOCOL_F_*`).
pub mod protocol_features {
    pub const MQ: u64 = 1 << 0;
    pub const REPLY_ACK: u64 = 1 << 3;
    pub const BACKEND_REQ: u64 = 1 << 5;
    pub const CONFIG: u64 = 1 << 9;
}

/// Frontend → backend requests (`VHOST_USER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Request {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    SetBackendReqFd = 21,
    IotlbMsg = 22,
    SetVringEndian = 23,
    GetConfig = 24,
    SetConfig = 25,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
}

impl Request {
    pub fn from_u32(v: u32) -> Option<Self> {
        use Request::*;
        Some(match v {
            1 => GetFeatures,
            2 => SetFeatures,
            3 => SetOwner,
            4 => ResetOwner,
            5 => SetMemTable,
            6 => SetLogBase,
            7 => SetLogFd,
            8 => SetVringNum,
            9 => SetVringAddr,
            10 => SetVringBase,
            11 => GetVringBase,
            12 => SetVringKick,
            13 => SetVringCall,
            14 => SetVringErr,
            15 => GetProtocolFeatures,
            16 => SetProtocolFeatures,
            17 => GetQueueNum,
            18 => SetVringEnable,
            19 => SendRarp,
            20 => NetSetMtu,
            21 => SetBackendReqFd,
            22 => IotlbMsg,
            23 => SetVringEndian,
            24 => GetConfig,
            25 => SetConfig,
            36 => GetMaxMemSlots,
            37 => AddMemReg,
            38 => RemMemReg,
            _ => return None,
        })
    }
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, VhostUserError> {
        let h = Header {
            request: le32(b, 0)?,
            flags: le32(b, 4)?,
            size: le32(b, 8)?,
        };
        if h.flags & 0x3 != VERSION {
            return Err(VhostUserError::BadVersion(h.flags));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(VhostUserError::PayloadTooLarge(h.size));
        }
        Ok(h)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// True when the frontend asked for a reply-ack.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    /// The header of this request's reply with a `size`-byte payload.
    pub fn reply(&self, size: usize) -> Header {
        Header {
            request: self.request,
            flags: VERSION | FLAG_REPLY,
            size: size as u32,
        }
    }
}

fn le32(b: &[u8], at: usize) -> Result<u32, VhostUserError> {
    let s = b.get(at..at + 4).ok_or(VhostUserError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], at: usize) -> Result<u64, VhostUserError> {
    let s = b.get(at..at + 8).ok_or(VhostUserError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// A payload that is exactly one u64 (features, vring fd index).
pub fn u64_payload(p: &[u8]) -> Result<u64, VhostUserError> {
    if p.len() != 8 {
        return Err(VhostUserError::PayloadSize(p.len()));
    }
    le64(p, 0)
}

/// `struct vhost_vring_state`: index u32 | num u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringState {
    pub index: u32,
    pub num: u32,
}

impl VringState {
    pub fn decode(p: &[u8]) -> Result<Self, VhostUserError> {
        if p.len() != 8 {
            return Err(VhostUserError::PayloadSize(p.len()));
        }
        Ok(Self {
            index: le32(p, 0)?,
            num: le32(p, 4)?,
        })
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.num.to_le_bytes());
        b
    }
}

/// `struct vhost_vring_addr`: ring addresses in the frontend's virtual address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringAddr {
    pub index: u32,
    pub flags: u32,
    pub desc: u64,
    pub used: u64,
    pub avail: u64,
    pub log: u64,
}

impl VringAddr {
    pub const LEN: usize = 40;

    pub fn decode(p: &[u8]) -> Result<Self, VhostUserError> {
        if p.len() != Self::LEN {
            return Err(VhostUserError::PayloadSize(p.len()));
        }
        Ok(Self {
            index: le32(p, 0)?,
            flags: le32(p, 4)?,
            desc: le64(p, 8)?,
            used: le64(p, 16)?,
            avail: le64(p, 24)?,
            log: le64(p, 32)?,
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.desc.to_le_bytes());
        b[16..24].copy_from_slice(&self.used.to_le_bytes());
        b[24..32].copy_from_slice(&self.avail.to_le_bytes());
        b[32..40].copy_from_slice(&self.log.to_le_bytes());
        b
    }
}

/// The u64 payload of SET_VRING_KICK/CALL/ERR: the vring index in bits 0-7; bit 8 set means
/// no file descriptor accompanies it (the backend must poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringFd {
    pub index: u32,
    pub no_fd: bool,
}

impl VringFd {
    pub fn decode(p: &[u8]) -> Result<Self, VhostUserError> {
        let v = u64_payload(p)?;
        if v & !0x1ff != 0 {
            return Err(VhostUserError::BadValue("vring fd payload", v));
        }
        Ok(Self {
            index: (v & 0xff) as u32,
            no_fd: v & 0x100 != 0,
        })
    }
}

/// One region of a memory table (`struct vhost_user_memory_region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRegion {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub mmap_offset: u64,
}

impl MemRegion {
    pub const LEN: usize = 32;

    fn decode(p: &[u8]) -> Result<Self, VhostUserError> {
        let r = Self {
            guest_phys_addr: le64(p, 0)?,
            memory_size: le64(p, 8)?,
            userspace_addr: le64(p, 16)?,
            mmap_offset: le64(p, 24)?,
        };
        if r.memory_size == 0
            || r.guest_phys_addr.checked_add(r.memory_size).is_none()
            || r.userspace_addr.checked_add(r.memory_size).is_none()
            || r.mmap_offset.checked_add(r.memory_size).is_none()
        {
            return Err(VhostUserError::BadRegion(r.guest_phys_addr, r.memory_size));
        }
        Ok(r)
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.guest_phys_addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.memory_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.userspace_addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.mmap_offset.to_le_bytes());
        b
    }

    /// Translates a frontend virtual address inside this region to a guest address.
    pub fn translate(&self, uva: u64) -> Option<u64> {
        let off = uva.checked_sub(self.userspace_addr)?;
        (off < self.memory_size).then(|| self.guest_phys_addr + off)
    }
}

/// SET_MEM_TABLE: `nregions u32 | padding u32 | regions[]`.
///
/// The payload may be longer than `nregions` regions need: UML 6.1 always sends room for two.
/// Only the declared regions are read; the rest must still be whole region slots.
pub fn decode_mem_table(p: &[u8]) -> Result<Vec<MemRegion>, VhostUserError> {
    let n = le32(p, 0)? as usize;
    if n == 0 || n > MAX_REGIONS {
        return Err(VhostUserError::BadValue("region count", n as u64));
    }
    let need = 8 + n * MemRegion::LEN;
    if p.len() < need || (p.len() - 8) % MemRegion::LEN != 0 || p.len() > 8 + MAX_REGIONS * 32 {
        return Err(VhostUserError::PayloadSize(p.len()));
    }
    (0..n)
        .map(|i| MemRegion::decode(&p[8 + i * MemRegion::LEN..]))
        .collect()
}

/// Encodes a memory table (used by the test frontend).
pub fn encode_mem_table(regions: &[MemRegion], slots: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + slots.max(regions.len()) * MemRegion::LEN);
    b.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        b.extend_from_slice(&r.encode());
    }
    b.resize(8 + slots.max(regions.len()) * MemRegion::LEN, 0);
    b
}

/// GET_CONFIG / SET_CONFIG: `offset u32 | size u32 | flags u32 | payload[size]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMsg {
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
}

impl ConfigMsg {
    /// Largest config access (`VHOST_USER_MAX_CONFIG_SIZE`).
    pub const MAX_SIZE: u32 = 256;

    pub fn decode(p: &[u8]) -> Result<Self, VhostUserError> {
        let offset = le32(p, 0)?;
        let size = le32(p, 4)?;
        let flags = le32(p, 8)?;
        if size > Self::MAX_SIZE || p.len() != 12 + size as usize {
            return Err(VhostUserError::PayloadSize(p.len()));
        }
        Ok(Self {
            offset,
            size,
            flags,
            payload: p[12..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(12 + self.payload.len());
        b.extend_from_slice(&self.offset.to_le_bytes());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }
}
