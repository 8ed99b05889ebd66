//! [`RemoteExecutor`]: a [`FrameService`] that forwards each guest session to an out-of-process
//! executor (`vcuda executor --listen SOCK`) over its own unix-socket connection.
//!
//! The remote executor cannot see guest memory, so requests whose bulk data lives in the
//! chain's data windows or in guest pages are rewritten on the way: a `Source::Shm`/`Guest` is
//! read here and sent inline, a `Sink::Shm`/`Guest` becomes `Sink::Reply` and the returned bytes
//! are written to the original sink here (the reply the guest sees carries no data, exactly as
//! if the executor had written the sink itself). Everything else is forwarded verbatim.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::protocol::{
    self as p, DataAccess, Reader, Request, RequestHeader, ResponseHeader, ResponseKind, Sink,
    Source, Status, HEADER_LEN,
};
use crate::service::FrameService;

/// Forwards sessions to the executor listening at a unix socket.
#[derive(Debug, Clone)]
pub struct RemoteExecutor {
    socket: PathBuf,
}

impl RemoteExecutor {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
        }
    }
}

/// One guest session's connection (opened by its first frame).
#[derive(Debug, Default)]
pub struct RemoteConn {
    stream: Option<UnixStream>,
}

impl FrameService for RemoteExecutor {
    type Conn = RemoteConn;

    fn connect(&self) -> RemoteConn {
        RemoteConn::default()
    }

    fn frame(
        &self,
        conn: &mut RemoteConn,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let header = RequestHeader::get(&mut Reader::new(frame)).map_err(|e| e.to_string())?;
        let stream = match &mut conn.stream {
            Some(s) => s,
            None => conn.stream.insert(
                UnixStream::connect(&self.socket)
                    .map_err(|e| format!("executor {}: {e}", self.socket.display()))?,
            ),
        };
        let (forward, sink) = match rewrite(frame, &header, data) {
            Ok(r) => r,
            Err(status) => {
                // The data could not be read: answer here, as the executor would have.
                if !header.is_async() {
                    p::encode_response(ResponseKind::Reply, header.seq, status, &p::Empty {}, out);
                }
                return Ok(false);
            }
        };
        let bytes = forward.as_deref().unwrap_or(frame);
        stream
            .write_all(bytes)
            .map_err(|e| format!("executor connection: {e}"))?;
        if header.is_async() {
            return Ok(false);
        }
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            stream
                .read_exact(&mut hdr)
                .map_err(|e| format!("executor connection: {e}"))?;
            let h = ResponseHeader::get(&mut Reader::new(&hdr)).map_err(|e| e.to_string())?;
            let mut body = vec![0u8; h.body_len as usize];
            stream
                .read_exact(&mut body)
                .map_err(|e| format!("executor connection: {e}"))?;
            if h.kind != ResponseKind::Reply {
                out.extend_from_slice(&hdr);
                out.extend_from_slice(&body);
                continue;
            }
            if h.seq != header.seq {
                return Err(format!(
                    "executor replied to {} while {} was pending",
                    h.seq, header.seq
                ));
            }
            match &sink {
                Some(sink) if h.status.is_ok() => {
                    let reply = p::decode_reply::<p::MemcpyDtoH>(&body)
                        .map_err(|e| format!("malformed data reply: {e}"))?;
                    let status = match data.write_sink(sink, &reply.data) {
                        Ok(()) => Status::SUCCESS,
                        Err(s) => s,
                    };
                    let empty = p::DataReply { data: Vec::new() };
                    p::encode_response(ResponseKind::Reply, h.seq, status, &empty, out);
                }
                _ => {
                    out.extend_from_slice(&hdr);
                    out.extend_from_slice(&body);
                }
            }
            let bye = h.status.is_ok() && header.opcode == <p::Goodbye as p::Call>::OPCODE;
            return Ok(bye);
        }
    }
}

/// For requests naming out-of-band data: the frame to forward instead (data inline, sinks
/// `Reply`) and the original sink to fill from the reply. `(None, None)`: forward as is.
#[allow(clippy::type_complexity)]
fn rewrite(
    frame: &[u8],
    header: &RequestHeader,
    data: &dyn DataAccess,
) -> Result<(Option<Vec<u8>>, Option<Sink>), Status> {
    let out_of_band_src = |s: &Source| !matches!(s, Source::Inline(_));
    let out_of_band_sink = |s: &Sink| !matches!(s, Sink::Reply);
    let Ok((_, mut req)) = p::decode_request(frame) else {
        // Malformed: the executor answers it.
        return Ok((None, None));
    };
    let inline = |src: &mut Source| -> Result<(), Status> {
        let mut bytes = Vec::with_capacity(src.len().min(p::MAX_INLINE as u64) as usize);
        data.read_source(src, &mut bytes)?;
        *src = Source::Inline(bytes);
        Ok(())
    };
    let mut sink = None;
    match &mut req {
        Request::MemcpyHtoD(r) if out_of_band_src(&r.src) => inline(&mut r.src)?,
        Request::MemcpyHtoDStrided(r) if out_of_band_src(&r.src) => inline(&mut r.src)?,
        Request::ModuleLoad(r) if out_of_band_src(&r.image) => inline(&mut r.image)?,
        Request::MemcpyDtoH(r) if out_of_band_sink(&r.dst) => {
            sink = Some(std::mem::replace(&mut r.dst, Sink::Reply));
        }
        Request::MemcpyDtoHStrided(r) if out_of_band_sink(&r.dst) => {
            sink = Some(std::mem::replace(&mut r.dst, Sink::Reply));
        }
        _ => return Ok((None, None)),
    }
    let mut f = Vec::with_capacity(frame.len());
    p::encode_request(header.seq, &req, &mut f);
    // Keep the caller's flags (an async opcode may have been sent synchronously).
    if let Some(flags) = f.get_mut(6..8) {
        flags.copy_from_slice(&header.flags.to_le_bytes());
    }
    Ok((Some(f), sink))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::net::UnixListener;

    /// Windows like a chain's: `Shm` offsets index `h2d` / `d2h`.
    struct Windows {
        h2d: Vec<u8>,
        d2h: RefCell<Vec<u8>>,
    }

    impl DataAccess for Windows {
        fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status> {
            match src {
                Source::Shm { offset, len } => {
                    let r = *offset as usize..(*offset + *len) as usize;
                    out.extend_from_slice(self.h2d.get(r).ok_or(Status::ERROR_INVALID_VALUE)?);
                    Ok(())
                }
                _ => Err(Status::ERROR_INVALID_VALUE),
            }
        }
        fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status> {
            match sink {
                Sink::Shm { offset, len } if data.len() as u64 <= *len => {
                    let mut d = self.d2h.borrow_mut();
                    let o = *offset as usize;
                    d.get_mut(o..o + data.len())
                        .ok_or(Status::ERROR_INVALID_VALUE)?
                        .copy_from_slice(data);
                    Ok(())
                }
                _ => Err(Status::ERROR_INVALID_VALUE),
            }
        }
    }

    /// A fake executor: remembers inline H2D bytes, returns them for D2H, prints for CtxSync.
    fn fake_executor(listener: UnixListener) {
        let (mut s, _) = listener.accept().unwrap();
        let mut store = Vec::new();
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            if s.read_exact(&mut hdr).is_err() {
                return;
            }
            let h = RequestHeader::get(&mut Reader::new(&hdr)).unwrap();
            let mut frame = hdr.to_vec();
            frame.resize(HEADER_LEN + h.body_len as usize, 0);
            s.read_exact(&mut frame[HEADER_LEN..]).unwrap();
            let (_, req) = p::decode_request(&frame).unwrap();
            let mut out = Vec::new();
            match req {
                Request::MemcpyHtoD(r) => {
                    assert!(h.is_async());
                    let Source::Inline(b) = r.src else {
                        panic!("not inline")
                    };
                    store = b;
                    continue;
                }
                Request::MemcpyDtoH(r) => {
                    assert_eq!(r.dst, Sink::Reply);
                    let data = store[..r.len as usize].to_vec();
                    p::encode_response(
                        ResponseKind::Reply,
                        h.seq,
                        Status::SUCCESS,
                        &p::DataReply { data },
                        &mut out,
                    );
                }
                _ => {
                    let text = p::DataReply {
                        data: b"printed".to_vec(),
                    };
                    p::encode_response(
                        ResponseKind::Stdout,
                        h.seq,
                        Status::SUCCESS,
                        &text,
                        &mut out,
                    );
                    p::encode_response(
                        ResponseKind::Reply,
                        h.seq,
                        Status::SUCCESS,
                        &p::Empty {},
                        &mut out,
                    );
                }
            }
            s.write_all(&out).unwrap();
        }
    }

    #[test]
    fn windows_are_resolved_locally_and_the_rest_is_forwarded() {
        let dir = std::env::temp_dir().join(format!("vcuda-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("exec.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || fake_executor(listener));
        let svc = RemoteExecutor::new(&sock);
        let mut conn = svc.connect();
        let w = Windows {
            h2d: (0..64u8).collect(),
            d2h: RefCell::new(vec![0; 64]),
        };
        let mut frame = Vec::new();
        let mut out = Vec::new();
        p::encode_call(
            1,
            &p::MemcpyHtoD {
                ctx: 1,
                stream: 0,
                dst: 0,
                src: Source::Shm { offset: 8, len: 32 },
            },
            &mut frame,
        );
        assert!(!svc.frame(&mut conn, &frame, &w, &mut out).unwrap());
        assert!(out.is_empty());
        frame.clear();
        p::encode_call(
            2,
            &p::MemcpyDtoH {
                ctx: 1,
                stream: 0,
                src: 0,
                len: 32,
                dst: Sink::Shm {
                    offset: 16,
                    len: 32,
                },
            },
            &mut frame,
        );
        svc.frame(&mut conn, &frame, &w, &mut out).unwrap();
        let h = ResponseHeader::get(&mut Reader::new(&out)).unwrap();
        assert_eq!(
            (h.kind, h.seq, h.status),
            (ResponseKind::Reply, 2, Status::SUCCESS)
        );
        let reply = p::decode_reply::<p::MemcpyDtoH>(&out[HEADER_LEN..]).unwrap();
        assert!(reply.data.is_empty());
        assert_eq!(&w.d2h.borrow()[16..48], &w.h2d[8..40]);

        // Device output is passed through before the reply; a bad window is answered locally.
        out.clear();
        frame.clear();
        p::encode_call(3, &p::CtxSynchronize { ctx: 1 }, &mut frame);
        svc.frame(&mut conn, &frame, &w, &mut out).unwrap();
        let h = ResponseHeader::get(&mut Reader::new(&out)).unwrap();
        assert_eq!(h.kind, ResponseKind::Stdout);
        out.clear();
        frame.clear();
        let bad = p::MemcpyHtoD {
            ctx: 1,
            stream: 0,
            dst: 0,
            src: Source::Shm {
                offset: 60,
                len: 32,
            },
        };
        p::encode_call(4, &bad, &mut frame);
        clear_async(&mut frame);
        svc.frame(&mut conn, &frame, &w, &mut out).unwrap();
        let h = ResponseHeader::get(&mut Reader::new(&out)).unwrap();
        assert_eq!(h.status, Status::ERROR_INVALID_VALUE);
        drop(conn);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn clear_async(frame: &mut [u8]) {
        frame[6] &= !(p::FLAG_ASYNC as u8);
    }

    #[test]
    fn an_unreachable_executor_fails_the_session() {
        let svc = RemoteExecutor::new("/nonexistent/vcuda.sock");
        let mut conn = svc.connect();
        let mut frame = Vec::new();
        p::encode_call(
            0,
            &p::Hello {
                version: 1,
                pid: 1,
                client: "t".into(),
            },
            &mut frame,
        );
        let w = Windows {
            h2d: Vec::new(),
            d2h: RefCell::new(Vec::new()),
        };
        assert!(svc.frame(&mut conn, &frame, &w, &mut Vec::new()).is_err());
    }
}
