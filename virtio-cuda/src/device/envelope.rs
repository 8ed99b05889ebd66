//! The 16-byte envelope in front of every request frame on the virtqueue.
//!
//! ```text
//! magic u32 = 0x56435544 | op u32 (0 = frame, 1 = close session) | session u64
//! ```
//!
//! The guest driver assigns `session` per open file of `/dev/vcuda0`, so one device serves many
//! guest processes, each with its own executor session. Sessions live in the device instance of
//! one VM: a guest can name only its own.

/// Envelope size in bytes.
pub const LEN: u64 = 16;
/// Envelope magic.
pub const MAGIC: u32 = 0x5643_5544;

/// What a chain asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeOp {
    /// A request frame for `session` follows.
    Frame,
    /// The guest file was closed: free the session.
    Close,
}

/// A decoded envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub op: EnvelopeOp,
    pub session: u64,
}

impl Envelope {
    pub fn encode(&self) -> [u8; LEN as usize] {
        let mut b = [0u8; LEN as usize];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        let op: u32 = match self.op {
            EnvelopeOp::Frame => 0,
            EnvelopeOp::Close => 1,
        };
        b[4..8].copy_from_slice(&op.to_le_bytes());
        b[8..16].copy_from_slice(&self.session.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, BadEnvelope> {
        let field = |r: std::ops::Range<usize>| b.get(r).ok_or(BadEnvelope);
        let word = |r| -> Result<u32, BadEnvelope> {
            let s: &[u8] = field(r)?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        if word(0..4)? != MAGIC {
            return Err(BadEnvelope);
        }
        let op = match word(4..8)? {
            0 => EnvelopeOp::Frame,
            1 => EnvelopeOp::Close,
            _ => return Err(BadEnvelope),
        };
        let s = field(8..16)?;
        let mut session = [0u8; 8];
        session.copy_from_slice(s);
        Ok(Envelope {
            op,
            session: u64::from_le_bytes(session),
        })
    }
}

/// An envelope that is short, has the wrong magic or an unknown operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad envelope")]
pub struct BadEnvelope;
