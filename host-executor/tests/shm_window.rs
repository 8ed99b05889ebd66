//! The unix transport's shared-memory data window: bulk bytes outside the socket.

use host_executor::client::{InProcess, InProcessConfig};
use virtio_cuda::client::ClientError;
use virtio_cuda::protocol::{self as p, Sink, Source, Status};

#[test]
fn copies_go_through_the_window_and_ranges_are_checked() {
    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let c = exec.connect("window").unwrap();
    assert!(c.window_size() >= 1 << 20, "no data window attached");
    let ctx = c.create_context(0).unwrap();
    let n = 3 << 20;
    let dptr = ctx.alloc(n as u64).unwrap();
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 4096) as u8).collect();
    let h2d = p::MemcpyHtoD {
        ctx: ctx.handle(),
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: 0,
            len: n as u64,
        },
    };
    c.call_with_data(&h2d, &data, &mut []).unwrap();
    let mut back = vec![0u8; n];
    let d2h = p::MemcpyDtoH {
        ctx: ctx.handle(),
        stream: 0,
        src: dptr,
        len: n as u64,
        dst: Sink::Shm {
            offset: 0,
            len: n as u64,
        },
    };
    let r = c.call_with_data(&d2h, &[], &mut back).unwrap();
    assert!(
        r.data.is_empty(),
        "the bytes came through the window, not the reply"
    );
    assert!(back == data);
    // The same bytes read back inline agree.
    assert!(ctx.read(dptr, n as u64).unwrap() == data);
    // A range past the end of the window is refused, and the session lives on.
    let bad = p::MemcpyHtoD {
        ctx: ctx.handle(),
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: c.window_size() as u64 - 8,
            len: 64,
        },
    };
    match c.call_with_data(&bad, &[], &mut []) {
        Err(ClientError::Status(s)) => assert_eq!(s, Status::ERROR_INVALID_VALUE),
        other => panic!("expected INVALID_VALUE, got {other:?}"),
    }
    ctx.synchronize().unwrap();
}

/// Copies larger than the window are pipelined through it in slots, both ways, at odd sizes
/// and offsets; the bytes arrive intact.
#[test]
fn pipelined_copies_larger_than_the_window() {
    use virtio_cuda::client::Bulk;
    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let c = exec.connect("pipelined").unwrap();
    let window = c.window_size();
    assert!(window > 0, "no channel attached");
    let ctx = c.create_context(0).unwrap();
    for n in [100_001usize, 1 << 20, window + 12_345, 3 * window + 7] {
        let dptr = ctx.alloc(n as u64 + 64).unwrap();
        let data: Vec<u8> = (0..n).map(|i| (i * 31 + i / 777) as u8).collect();
        let piped = c
            .copy_pipelined(Bulk::ToDevice(&data), |ch| p::MemcpyHtoD {
                ctx: ctx.handle(),
                stream: 0,
                dst: dptr + 64 + ch.offset,
                src: Source::Shm {
                    offset: ch.window_offset,
                    len: ch.len,
                },
            })
            .unwrap();
        assert!(piped);
        assert!(ctx.read(dptr + 64, n as u64).unwrap() == data, "H2D of {n}");
        let mut back = vec![0u8; n];
        c.copy_pipelined(Bulk::FromDevice(&mut back), |ch| p::MemcpyDtoH {
            ctx: ctx.handle(),
            stream: 0,
            src: dptr + 64 + ch.offset,
            len: ch.len,
            dst: Sink::Shm {
                offset: ch.window_offset,
                len: ch.len,
            },
        })
        .unwrap();
        assert!(back == data, "D2H of {n}");
        ctx.free(dptr).unwrap();
    }
    // An error in any piece (here: the copy runs past the allocation) is reported by the call.
    let dptr = ctx.alloc(1 << 20).unwrap();
    let data = vec![1u8; 3 << 20];
    let err = c
        .copy_pipelined(Bulk::ToDevice(&data), |ch| p::MemcpyHtoD {
            ctx: ctx.handle(),
            stream: 0,
            dst: dptr + ch.offset,
            src: Source::Shm {
                offset: ch.window_offset,
                len: ch.len,
            },
        })
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Status(Status::ERROR_INVALID_VALUE)
    ));
    ctx.synchronize().unwrap();
}

/// A client that corrupts its channel's control page loses its own connection; the executor
/// and its other sessions carry on, and the session's memory is freed.
#[test]
fn a_client_corrupting_its_channel_only_ends_its_own_session() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use virtio_cuda::shm::{fdpass, Layout, Mapping};

    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let good = exec.connect("good").unwrap();
    let gctx = good.create_context(0).unwrap();

    // A hand-made client: Hello, then a channel whose request head it sets to nonsense.
    let mut s = UnixStream::connect(exec.socket()).unwrap();
    let mut frame = Vec::new();
    p::encode_call(
        1,
        &p::Hello {
            version: u32::from(p::PROTOCOL_VERSION),
            pid: 0,
            client: "evil".into(),
        },
        &mut frame,
    );
    use std::io::{Read, Write};
    s.write_all(&frame).unwrap();
    let mut hdr = [0u8; p::HEADER_LEN];
    s.read_exact(&mut hdr).unwrap();
    let h = p::ResponseHeader::get(&mut p::Reader::new(&hdr)).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).unwrap();
    let layout = Layout::new(4096, 4096).unwrap();
    let (map, fd) = Mapping::create(c"evil", layout.total()).unwrap();
    frame.clear();
    p::encode_call(
        2,
        &p::AttachChannel {
            ring_bytes: 4096,
            data_bytes: 4096,
        },
        &mut frame,
    );
    fdpass::send_with_fd(&s, &frame, fd.as_raw_fd()).unwrap();
    s.read_exact(&mut hdr).unwrap();
    let h = p::ResponseHeader::get(&mut p::Reader::new(&hdr)).unwrap();
    assert_eq!(h.status, Status::SUCCESS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while exec.stats().live_sessions < 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    // Request head (control word at 64) far beyond anything written; ring the doorbell.
    map.region()
        .write_at(64, &(1u64 << 50).to_le_bytes())
        .unwrap();
    s.write_all(&[1]).unwrap();
    // The executor drops the connection: our socket reads EOF.
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        // Closed (or reset: our unread doorbell byte was still queued when it closed).
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection still open: {other:?}"),
    }
    while exec.stats().live_sessions > 1 {
        assert!(std::time::Instant::now() < deadline, "session not freed");
        std::thread::yield_now();
    }
    // The well-behaved client is unaffected.
    let d = gctx.alloc(4096).unwrap();
    gctx.write(d, vec![7u8; 4096]).unwrap();
    assert_eq!(gctx.read(d, 4096).unwrap(), vec![7u8; 4096]);
}

/// A channel's memfd must be sealed against shrinking: the executor refuses an unsealed one
/// (its client could otherwise truncate the file under the mapping and make the executor's next
/// access a SIGBUS), and a sealed one, as the shim makes it, cannot be shrunk.
#[test]
fn an_unsealed_channel_memfd_is_refused_and_a_sealed_one_cannot_shrink() {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use virtio_cuda::shm::{fdpass, Layout, Mapping};

    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let mut s = UnixStream::connect(exec.socket()).unwrap();
    let mut frame = Vec::new();
    p::encode_call(
        1,
        &p::Hello {
            version: u32::from(p::PROTOCOL_VERSION),
            pid: 0,
            client: "unsealed".into(),
        },
        &mut frame,
    );
    s.write_all(&frame).unwrap();
    let mut hdr = [0u8; p::HEADER_LEN];
    s.read_exact(&mut hdr).unwrap();
    let h = p::ResponseHeader::get(&mut p::Reader::new(&hdr)).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).unwrap();

    let layout = Layout::new(4096, 4096).unwrap();
    // SAFETY: a NUL-terminated name; the result is checked.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a valid descriptor.
    let sized = unsafe { libc::ftruncate(raw, layout.total() as libc::off_t) };
    assert_eq!(sized, 0);
    frame.clear();
    p::encode_call(
        2,
        &p::AttachChannel {
            ring_bytes: 4096,
            data_bytes: 4096,
        },
        &mut frame,
    );
    fdpass::send_with_fd(&s, &frame, fd.as_raw_fd()).unwrap();
    s.read_exact(&mut hdr).unwrap();
    let h = p::ResponseHeader::get(&mut p::Reader::new(&hdr)).unwrap();
    assert_eq!(h.status, Status::ERROR_INVALID_VALUE);

    let (_map, sealed) = Mapping::create(c"sealed", layout.total()).unwrap();
    // SAFETY: a valid descriptor; the call is expected to fail.
    let shrunk = unsafe { libc::ftruncate(sealed.as_raw_fd(), 4096) };
    assert_eq!(shrunk, -1, "a sealed channel file was shrunk");
}
