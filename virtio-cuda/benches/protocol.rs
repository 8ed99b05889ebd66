//! Protocol encode + decode cost per call, against a baseline measured in the same run: copying
//! the same frame bytes into a reused buffer (the least any transport must do).
//!
//! Run: `cargo bench -p virtio-cuda --bench protocol`

use std::hint::black_box;
use std::time::Instant;

use virtio_cuda::protocol::{self as p, Request};

fn launch() -> p::Launch {
    p::Launch {
        ctx: 0x1000,
        func: 0x1002,
        stream: 0x1003,
        grid: [4096, 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        flags: 0,
        params: vec![0xAB; 28],
    }
}

fn time_per_iter(iters: u32, mut f: impl FnMut()) -> f64 {
    // Warm up, then take the best of five runs.
    for _ in 0..iters / 10 {
        f();
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let iters = 1_000_000;
    let call = launch();
    let mut frame = Vec::with_capacity(256);

    let encode = time_per_iter(iters, || {
        frame.clear();
        p::encode_call(black_box(7), black_box(&call), &mut frame);
        black_box(&frame);
    });
    let decode = time_per_iter(iters, || {
        let r = p::decode_request(black_box(&frame));
        black_box(&r);
    });
    let both = time_per_iter(iters, || {
        frame.clear();
        p::encode_call(black_box(7), black_box(&call), &mut frame);
        let r = p::decode_request(black_box(&frame));
        debug_assert!(matches!(r, Ok((_, Request::Launch(_)))));
        black_box(&r);
    });
    let src = frame.clone();
    let mut dst = Vec::with_capacity(256);
    let copy = time_per_iter(iters, || {
        dst.clear();
        dst.extend_from_slice(black_box(&src));
        black_box(&dst);
    });
    println!("launch request: {} bytes on the wire", frame.len());
    println!("  encode           {encode:8.1} ns/call");
    println!("  decode           {decode:8.1} ns/call");
    println!("  encode + decode  {both:8.1} ns/call   (target < 100 ns)");
    println!(
        "  baseline copy    {copy:8.1} ns/call   ratio {:.1}x",
        both / copy
    );
}
