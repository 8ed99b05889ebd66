//! The vcuda wire protocol, shared by the guest shim, the virtio-cuda device and the executor.
//!
//! This module depends on nothing but `std` and `thiserror`, so the shim can use it without
//! linking any VMM code. `docs/PROTOCOL.md` is the normative description; the layout code is:
//!
//! * [`wire`]: little-endian [`Writer`]/[`Reader`] primitives (the reader never panics and never
//!   trusts a length),
//! * [`codec`]: the [`Wire`] trait and the layouts of field types,
//! * [`header`]: the fixed 16-byte request and response headers,
//! * [`messages`]: every opcode, declared once,
//! * [`data`]: bulk data by reference ([`Source`], [`Sink`]),
//! * [`status`]: `CUresult` codes, names and descriptions,
//! * [`handles`]: client-side handle allocation.

pub mod codec;
pub mod data;
pub mod handles;
pub mod header;
pub mod linked;
pub mod messages;
pub mod status;
pub mod wire;

pub use codec::{List, RawBody, Wire};
pub use data::{DataAccess, SgEntry, Sink, Source, MAX_INLINE};
pub use handles::HandleAllocator;
pub use header::{RequestHeader, ResponseHeader, ResponseKind, FLAG_ASYNC, HEADER_LEN, MAGIC};
pub use messages::*;
pub use status::Status;
pub use wire::{Reader, Writer};

/// Protocol version carried in every request header; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame body accepted (inline payload cap plus room for the fields around it).
pub const MAX_BODY_LEN: usize = MAX_INLINE + 64 * 1024;

/// Why bytes could not be decoded. Decoding never panics; every failure is one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before a field did.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    /// Bytes were left over after the last field.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The frame does not start with [`MAGIC`].
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// No such opcode.
    #[error("unknown opcode {0:#06x}")]
    UnknownOpcode(u16),
    /// An enum tag out of range.
    #[error("bad {what} tag {tag}")]
    BadTag { what: &'static str, tag: u8 },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// A length over its cap.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
}

/// Appends a complete request frame (header + body) for a typed call.
pub fn encode_call<C: Call>(seq: u32, call: &C, out: &mut Vec<u8>) {
    let flags = if C::ASYNC { FLAG_ASYNC } else { 0 };
    encode_frame(C::OPCODE, flags, seq, out, |w| call.put(w));
}

/// Appends a complete request frame for a decoded [`Request`].
pub fn encode_request(seq: u32, req: &Request, out: &mut Vec<u8>) {
    let flags = if req.is_async() { FLAG_ASYNC } else { 0 };
    encode_frame(req.opcode(), flags, seq, out, |w| req.encode_body(w));
}

fn encode_frame(
    opcode: u16,
    flags: u16,
    seq: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Writer),
) {
    let start = out.len();
    let mut w = Writer::from_vec(std::mem::take(out));
    RequestHeader {
        opcode,
        flags,
        seq,
        body_len: 0,
    }
    .put(&mut w);
    let body_start = w.len();
    body(&mut w);
    let body_len = u32::try_from(w.len() - body_start).unwrap_or(u32::MAX);
    w.patch_u32(start + 12, body_len);
    *out = w.into_vec();
}

/// Decodes a complete request frame (header + body, nothing more).
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
    let mut r = Reader::new(frame);
    let header = RequestHeader::get(&mut r)?;
    let body = r.take(header.body_len as usize)?;
    r.finish()?;
    let req = Request::decode(header.opcode, body)?;
    Ok((header, req))
}

/// Appends a complete response frame.
pub fn encode_response<T: Wire>(
    kind: ResponseKind,
    seq: u32,
    status: Status,
    body: &T,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let mut w = Writer::from_vec(std::mem::take(out));
    ResponseHeader {
        kind,
        seq,
        status,
        body_len: 0,
    }
    .put(&mut w);
    let body_start = w.len();
    body.put(&mut w);
    let body_len = u32::try_from(w.len() - body_start).unwrap_or(u32::MAX);
    w.patch_u32(start + 12, body_len);
    *out = w.into_vec();
}

/// Decodes the request body of call type `C` (the fields after the header).
pub fn decode_body<C: Call>(body: &[u8]) -> Result<C, DecodeError> {
    let mut r = Reader::new(body);
    let v = C::get(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Decodes a reply body of call type `C`; an error status carries an empty body, in which case
/// the caller should not decode at all.
pub fn decode_reply<C: Call>(body: &[u8]) -> Result<C::Reply, DecodeError> {
    let mut r = Reader::new(body);
    let v = C::Reply::get(&mut r)?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests;
