use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A client and an executor end over one memfd (mapped twice, as across processes).
fn pair(ring: u64, data: u64, spin: Duration) -> (Endpoint, Endpoint) {
    let layout = Layout::new(ring, data).unwrap();
    let (cmap, fd) = Mapping::create(c"vcuda-test", layout.total()).unwrap();
    let emap = Mapping::map(&fd, layout.total() as u64, u64::MAX).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    (
        Endpoint::new(cmap, layout, Side::Client, a, spin).unwrap(),
        Endpoint::new(emap, layout, Side::Executor, b, spin).unwrap(),
    )
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn layouts_are_validated() {
    assert!(Layout::new(4096, 0).is_ok());
    assert!(Layout::new(4095, 0).is_err());
    assert!(Layout::new(6000, 0).is_err());
    assert!(Layout::new(MAX_RING * 2, 0).is_err());
    assert!(Layout::new(4096, MAX_DATA + 1).is_err());
    let l = Layout::new(8192, 100).unwrap();
    assert_eq!(l.total(), 4096 + 2 * 8192 + 100);
}

/// Frames far larger than the ring stream through it in both directions, with and without
/// polling (spin 0: every wait sleeps on the doorbell).
#[test]
fn large_frames_stream_through_a_small_ring() {
    for spin in [Duration::ZERO, Duration::from_micros(50)] {
        let (client, exec) = pair(4096, 0, spin);
        let exec = Arc::new(exec);
        let e = Arc::clone(&exec);
        let echo = std::thread::spawn(move || {
            for _ in 0..20 {
                let mut len = [0u8; 4];
                e.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
                e.read_exact(&mut body).unwrap();
                e.mark_done();
                body.reverse();
                e.write(&body).unwrap();
                e.notify_peer().unwrap();
            }
        });
        for i in 0..20u32 {
            let len = [1usize, 7, 4096, 4097, 100_000, 1 << 20][i as usize % 6];
            let msg = pattern(len, i);
            client.write(&(len as u32).to_le_bytes()).unwrap();
            client.write(&msg).unwrap();
            client.notify_peer().unwrap();
            let mut back = vec![0u8; len];
            client.read_exact(&mut back).unwrap();
            back.reverse();
            assert_eq!(back, msg, "frame {i} ({len} bytes, spin {spin:?})");
            client.wait_done(client.written()).unwrap();
        }
        echo.join().unwrap();
    }
}

/// Many short round trips with spinning off: every one goes through the sleep/doorbell path,
/// so a lost wake-up would hang this test.
#[test]
fn sleep_and_doorbell_never_lose_a_wakeup() {
    let (client, exec) = pair(4096, 0, Duration::ZERO);
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 8];
        for _ in 0..5000 {
            exec.read_exact(&mut b).unwrap();
            let v = u64::from_le_bytes(b) + 1;
            exec.write(&v.to_le_bytes()).unwrap();
            exec.notify_peer().unwrap();
        }
    });
    let mut b = [0u8; 8];
    for i in 0..5000u64 {
        client.write(&i.to_le_bytes()).unwrap();
        client.notify_peer().unwrap();
        client.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), i + 1);
    }
    t.join().unwrap();
}

/// A client that scribbles on the control page cannot make the executor read outside the
/// ring: an impossible head is reported as corruption.
#[test]
fn a_corrupt_head_is_detected() {
    let (client, exec) = pair(4096, 0, Duration::ZERO);
    client.word(REQ_HEAD).store(1 << 40, Ordering::Release);
    let mut b = [0u8; 8];
    assert!(matches!(exec.read_exact(&mut b), Err(ShmError::Corrupt(_))));
    // A tail beyond the head on the response ring likewise.
    client.word(RESP_TAIL).store(5, Ordering::Release);
    assert!(matches!(exec.write(&[0u8; 16]), Err(ShmError::Corrupt(_))));
}

/// A sleeping executor sees its client's death as `Closed`, as does a sleeping client.
#[test]
fn a_dead_peer_ends_the_wait() {
    let (client, exec) = pair(4096, 0, Duration::from_micros(10));
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 8];
        exec.read_exact(&mut b)
    });
    std::thread::sleep(Duration::from_millis(20));
    drop(client);
    assert!(matches!(t.join().unwrap(), Err(ShmError::Closed)));

    let (client, exec) = pair(4096, 0, Duration::ZERO);
    drop(exec);
    let mut b = [0u8; 8];
    assert!(matches!(client.read_exact(&mut b), Err(ShmError::Closed)));
}

#[test]
fn the_data_window_follows_the_rings() {
    let (client, exec) = pair(4096, 1 << 16, Duration::ZERO);
    assert_eq!(client.data().len(), 1 << 16);
    client.data().write_at(100, b"hello").unwrap();
    let mut b = [0u8; 5];
    exec.data().read_at(100, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    // The rings do not overlap the window.
    client.write(&[0xAB; 4096]).unwrap();
    exec.data().read_at(0, &mut b).unwrap();
    assert_eq!(b, [0; 5]);
}

/// Whatever a hostile client stores in the control page, the executor's ring operations return
/// data or an error — never a panic, never an access outside the ring.
#[test]
fn arbitrary_control_words_never_panic_the_executor() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    runner
        .run(
            &(any::<u64>(), any::<u64>(), any::<u64>(), 1usize..20_000),
            |(head, tail, done, len)| {
                let (client, exec) = pair(4096, 4096, Duration::ZERO);
                client.write(&[7u8; 100]).unwrap();
                client.word(REQ_HEAD).store(head, Ordering::Release);
                client.word(RESP_TAIL).store(tail, Ordering::Release);
                client.word(REQ_DONE).store(done, Ordering::Release);
                // The peer is gone, so any wait ends in `Closed` rather than blocking.
                drop(client);
                let mut buf = vec![0u8; len];
                let _ = exec.read_exact(&mut buf);
                let _ = exec.write(&buf);
                exec.mark_done();
                let _ = exec.notify_peer();
                Ok(())
            },
        )
        .unwrap();
}
