//! Fixed-size frame headers.
//!
//! ```text
//! request  (16 bytes): magic u16 | version u16 | opcode u16 | flags u16 | seq u32 | body_len u32
//! response (16 bytes): magic u16 | kind u16    | seq u32    | status u32 | body_len u32
//! ```

use super::wire::{Reader, Writer};
use super::{DecodeError, Status, MAX_BODY_LEN, PROTOCOL_VERSION};

/// First two bytes of every frame.
pub const MAGIC: u16 = 0xC0DA;

/// Size of [`RequestHeader`] and [`ResponseHeader`] on the wire.
pub const HEADER_LEN: usize = 16;

/// Request flag: the client does not wait for a reply (fire-and-forget); errors are latched.
pub const FLAG_ASYNC: u16 = 1 << 0;

/// The header in front of every request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub opcode: u16,
    pub flags: u16,
    pub seq: u32,
    pub body_len: u32,
}

impl RequestHeader {
    pub fn is_async(&self) -> bool {
        self.flags & FLAG_ASYNC != 0
    }

    pub fn put(&self, w: &mut Writer) {
        w.u16(MAGIC);
        w.u16(PROTOCOL_VERSION);
        w.u16(self.opcode);
        w.u16(self.flags);
        w.u32(self.seq);
        w.u32(self.body_len);
    }

    /// Decodes and validates a header: magic, version and the body length cap.
    pub fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let magic = r.u16()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let h = RequestHeader {
            opcode: r.u16()?,
            flags: r.u16()?,
            seq: r.u32()?,
            body_len: r.u32()?,
        };
        check_body_len(h.body_len)?;
        Ok(h)
    }
}

/// What a response frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// The reply to the request with the same `seq`.
    Reply,
    /// Bytes the client writes to its stdout (device `printf`), delivered before the reply that
    /// synchronises with the producing work.
    Stdout,
}

impl ResponseKind {
    fn code(self) -> u16 {
        match self {
            ResponseKind::Reply => 0,
            ResponseKind::Stdout => 1,
        }
    }
}

/// The header in front of every response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub kind: ResponseKind,
    pub seq: u32,
    pub status: Status,
    pub body_len: u32,
}

impl ResponseHeader {
    pub fn put(&self, w: &mut Writer) {
        w.u16(MAGIC);
        w.u16(self.kind.code());
        w.u32(self.seq);
        w.u32(self.status.0);
        w.u32(self.body_len);
    }

    pub fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let magic = r.u16()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let kind = match r.u16()? {
            0 => ResponseKind::Reply,
            1 => ResponseKind::Stdout,
            tag => {
                return Err(DecodeError::BadTag {
                    what: "response kind",
                    tag: tag.min(255) as u8,
                })
            }
        };
        let h = ResponseHeader {
            kind,
            seq: r.u32()?,
            status: Status(r.u32()?),
            body_len: r.u32()?,
        };
        check_body_len(h.body_len)?;
        Ok(h)
    }
}

fn check_body_len(len: u32) -> Result<(), DecodeError> {
    if len as usize > MAX_BODY_LEN {
        return Err(DecodeError::TooLarge {
            what: "frame body",
            len: u64::from(len),
            max: MAX_BODY_LEN as u64,
        });
    }
    Ok(())
}
