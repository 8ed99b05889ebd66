//! [`RemoteExecutor`]: a [`FrameService`] that forwards each guest session to an executor
//! process over its unix socket (`vcuda executor --listen …`), so a VMM or vhost-user backend
//! can use an out-of-process executor (a crash in a GPU driver never takes the VMM down).
//!
//! Bulk data cannot travel by reference between processes, so the proxy rewrites it: a request's
//! data-window or guest-memory [`Source`] is read from guest memory and sent inline; a
//! data-window [`Sink`] becomes [`Sink::Reply`], and the returned bytes are written into the
//! guest's window before the (now empty) reply goes back. Inline transfers are capped at
//! [`MAX_INLINE`](crate::protocol::MAX_INLINE) per request; the guest side chunks larger ones.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::FrameService;
use crate::protocol::{
    self as p, DataAccess, Reader, Request, ResponseHeader, ResponseKind, Sink, Source, Status,
    Wire, HEADER_LEN,
};

/// Forwards sessions to the executor listening at a socket path.
#[derive(Debug, Clone)]
pub struct RemoteExecutor {
    path: PathBuf,
}

impl RemoteExecutor {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

/// One guest session's connection (opened on its first frame).
pub struct RemoteConn {
    stream: Option<UnixStream>,
}

fn io_err(e: std::io::Error) -> String {
    format!("executor connection: {e}")
}

impl RemoteExecutor {
    fn stream<'c>(&self, conn: &'c mut RemoteConn) -> Result<&'c mut UnixStream, String> {
        if conn.stream.is_none() {
            let s = UnixStream::connect(&self.path).map_err(|e| {
                format!("cannot reach the executor at {}: {e}", self.path.display())
            })?;
            conn.stream = Some(s);
        }
        conn.stream
            .as_mut()
            .ok_or_else(|| "executor connection lost".to_string())
    }
}

/// Reads one response frame: (header, body).
fn read_frame(s: &mut UnixStream) -> Result<(ResponseHeader, Vec<u8>), String> {
    let mut hdr = [0u8; HEADER_LEN];
    s.read_exact(&mut hdr).map_err(io_err)?;
    let h = ResponseHeader::get(&mut Reader::new(&hdr)).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).map_err(io_err)?;
    Ok((h, body))
}

/// Replaces out-of-band sources with inline bytes; returns the sink to fill from the reply.
fn localize(req: &mut Request, data: &dyn DataAccess) -> Result<Option<Sink>, Status> {
    let inline = |src: &mut Source| -> Result<(), Status> {
        if !matches!(src, Source::Inline(_)) {
            let mut v = Vec::new();
            data.read_source(src, &mut v)?;
            *src = Source::Inline(v);
        }
        Ok(())
    };
    let reply_sink = |dst: &mut Sink| -> Option<Sink> {
        match std::mem::replace(dst, Sink::Reply) {
            Sink::Reply => None,
            other => Some(other),
        }
    };
    Ok(match req {
        Request::MemcpyHtoD(r) => {
            inline(&mut r.src)?;
            None
        }
        Request::MemcpyHtoDStrided(r) => {
            inline(&mut r.src)?;
            None
        }
        Request::ModuleLoad(r) => {
            inline(&mut r.image)?;
            None
        }
        Request::MemcpyDtoH(r) => reply_sink(&mut r.dst),
        Request::MemcpyDtoHStrided(r) => reply_sink(&mut r.dst),
        _ => None,
    })
}

impl FrameService for RemoteExecutor {
    type Conn = RemoteConn;

    fn connect(&self) -> RemoteConn {
        RemoteConn { stream: None }
    }

    fn frame(
        &self,
        conn: &mut RemoteConn,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let (header, mut req) = match p::decode_request(frame) {
            Ok(v) => v,
            // Let the executor judge (and answer) requests we cannot decode ourselves.
            Err(_) => {
                let s = self.stream(conn)?;
                s.write_all(frame).map_err(io_err)?;
                return self.relay(s, frame, out, None, data);
            }
        };
        let sink = match localize(&mut req, data) {
            Ok(sink) => sink,
            Err(status) => {
                if !header.is_async() {
                    p::encode_response(ResponseKind::Reply, header.seq, status, &p::Empty {}, out);
                }
                return Ok(false);
            }
        };
        let mut fwd = Vec::with_capacity(frame.len());
        p::encode_request(header.seq, &req, &mut fwd);
        if !header.is_async() && req.is_async() {
            // Keep the caller's choice to wait.
            fwd[6] &= !(p::FLAG_ASYNC as u8);
        }
        let s = self.stream(conn)?;
        s.write_all(&fwd).map_err(io_err)?;
        let bye = matches!(req, Request::Goodbye(_));
        if header.is_async() {
            return Ok(false);
        }
        self.relay(s, &fwd, out, sink, data)?;
        Ok(bye)
    }
}

impl RemoteExecutor {
    /// Copies response frames to `out` up to the reply; fills `sink` from a `DataReply`.
    fn relay(
        &self,
        s: &mut UnixStream,
        request: &[u8],
        out: &mut Vec<u8>,
        sink: Option<Sink>,
        data: &dyn DataAccess,
    ) -> Result<bool, String> {
        let async_req = request.get(6).map(|f| f & 1 != 0).unwrap_or(false);
        if async_req {
            return Ok(false);
        }
        loop {
            let (h, body) = read_frame(s)?;
            match h.kind {
                ResponseKind::Stdout => {
                    p::encode_response(
                        ResponseKind::Stdout,
                        h.seq,
                        h.status,
                        &p::RawBody(&body),
                        out,
                    );
                }
                ResponseKind::Reply => {
                    let (status, body) = match (&sink, h.status.is_ok()) {
                        (Some(sink), true) => {
                            let reply = p::decode_reply::<p::MemcpyDtoH>(&body)
                                .map_err(|e| e.to_string())?;
                            match data.write_sink(sink, &reply.data) {
                                Ok(()) => {
                                    let mut w = p::Writer::new();
                                    p::DataReply { data: Vec::new() }.put(&mut w);
                                    (Status::SUCCESS, w.into_vec())
                                }
                                Err(st) => (st, Vec::new()),
                            }
                        }
                        _ => (h.status, body),
                    };
                    p::encode_response(ResponseKind::Reply, h.seq, status, &p::RawBody(&body), out);
                    return Ok(false);
                }
            }
        }
    }
}
