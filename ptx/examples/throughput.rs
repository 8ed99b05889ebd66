//! Interpreter throughput vs a plain native scalar loop, measured in the same run:
//! `cargo run -p vcuda-ptx --release --example throughput`.
//!
//! Workloads: vector add over 16M floats and a 512×512 tiled sgemm (the kernels of
//! `tests/fixtures/kernels.cu`, compiled by nvcc 13). Prints the time of each and the ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vcuda_ptx::memory::Arena;
use vcuda_ptx::{launch, LaunchConfig, LaunchOptions, LoadedModule, Module};

const PTX: &str = include_str!("../tests/fixtures/kernels.ptx");

fn best<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain numeric slices; viewing their bytes is sound.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn params(info: &vcuda_ptx::KernelInfo, args: &[u64]) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    for (pi, a) in info.params.iter().zip(args) {
        let o = pi.offset as usize;
        p[o..o + pi.size as usize].copy_from_slice(&a.to_le_bytes()[..pi.size as usize]);
    }
    p
}

fn main() {
    let arena = Arena::new(0x7000_0000_0000, 1 << 36);
    let m = LoadedModule::load(
        Arc::new(Module::parse(PTX).expect("fixture parses")),
        &arena,
    )
    .expect("load");
    let kinfo = |n: &str| {
        m.module()
            .kernels()
            .iter()
            .find(|k| k.name == n)
            .expect("kernel")
            .clone()
    };
    let opts = LaunchOptions {
        instruction_budget: u64::MAX,
        printf: &|s| print!("{s}"),
        parallel: true,
        time_limit: None,
        cancel: None,
    };
    println!("host threads: {}", rayon::current_num_threads());
    let parse = best(5, || {
        std::hint::black_box(Module::parse(PTX).expect("parse"));
    });
    println!(
        "parse+lower: {} bytes in {:.2} ms ({:.1} MB/s)",
        PTX.len(),
        parse.as_secs_f64() * 1e3,
        PTX.len() as f64 / parse.as_secs_f64() / 1e6
    );

    // `throughput vec_add` / `throughput sgemm` runs one workload (for profiling).
    // `quick` (anywhere in the arguments): small sizes, for instruction counting under callgrind.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "quick");
    let only = args.iter().find(|a| *a != "quick");
    let run = |w: &str| only.is_none_or(|o| o == w);

    // Vector add, 16M floats.
    let mut stats = None;
    if run("vec_add") {
        let n = if quick { 1 << 20 } else { 16 << 20 };
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| (n - i) as f32 * 0.5).collect();
        let mut c = vec![0f32; n];
        let native = best(5, || {
            for i in 0..n {
                c[i] = a[i] + b[i];
            }
            std::hint::black_box(&mut c);
        });
        let (pa, pb, pc) = (
            arena.alloc(n as u64 * 4, 256).unwrap(),
            arena.alloc(n as u64 * 4, 256).unwrap(),
            arena.alloc(n as u64 * 4, 256).unwrap(),
        );
        arena.write(pa, bytes(&a)).unwrap();
        arena.write(pb, bytes(&b)).unwrap();
        let p = params(&kinfo("vec_add"), &[pa, pb, pc, n as u64]);
        let cfg = LaunchConfig {
            grid: [(n / 256) as u32, 1, 1],
            block: [256, 1, 1],
            dynamic_shared_bytes: 0,
        };
        let interp = best(3, || {
            stats = Some(launch(&m, "vec_add", &cfg, &p, &arena, &opts).expect("launch"))
        });
        let mut check = vec![0u8; 16];
        arena.read(pc + 4 * 1000, &mut check).unwrap();
        assert_eq!(f32::from_le_bytes(check[..4].try_into().unwrap()), c[1000]);
        let s = stats.unwrap_or_default();
        println!(
        "vec_add 16M:  native {:8.2} ms  interpreter {:8.2} ms  ratio {:6.1}x  ({} warp-instr, {:.1} ns/warp-instr)",
        native.as_secs_f64() * 1e3,
        interp.as_secs_f64() * 1e3,
        interp.as_secs_f64() / native.as_secs_f64(),
        s.warp_instructions,
        interp.as_secs_f64() * 1e9 / s.warp_instructions.max(1) as f64
    );
    }

    // sgemm 512x512.
    if run("sgemm") {
        let n = if quick { 128 } else { 512usize };
        let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.5).collect();
        let mut c = vec![0f32; n * n];
        let native = best(3, || {
            for i in 0..n {
                for j in 0..n {
                    let mut acc = 0f32;
                    for k in 0..n {
                        acc += a[i * n + k] * b[k * n + j];
                    }
                    c[i * n + j] = acc;
                }
            }
            std::hint::black_box(&mut c);
        });
        let (pa, pb, pc) = (
            arena.alloc((n * n * 4) as u64, 256).unwrap(),
            arena.alloc((n * n * 4) as u64, 256).unwrap(),
            arena.alloc((n * n * 4) as u64, 256).unwrap(),
        );
        arena.write(pa, bytes(&a)).unwrap();
        arena.write(pb, bytes(&b)).unwrap();
        let p = params(&kinfo("sgemm_tiled"), &[pa, pb, pc, n as u64]);
        let cfg = LaunchConfig {
            grid: [(n / 16) as u32, (n / 16) as u32, 1],
            block: [16, 16, 1],
            dynamic_shared_bytes: 0,
        };
        let interp = best(2, || {
            stats = Some(launch(&m, "sgemm_tiled", &cfg, &p, &arena, &opts).expect("launch"))
        });
        let mut out = vec![0u8; n * n * 4];
        arena.read(pc, &mut out).unwrap();
        let got: Vec<f32> = out
            .chunks(4)
            .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
            .collect();
        assert_eq!(got, c, "sgemm result");
        let s = stats.unwrap_or_default();
        println!(
        "sgemm 512:    native {:8.2} ms  interpreter {:8.2} ms  ratio {:6.1}x  ({} warp-instr, {:.1} ns/warp-instr)",
        native.as_secs_f64() * 1e3,
        interp.as_secs_f64() * 1e3,
        interp.as_secs_f64() / native.as_secs_f64(),
        s.warp_instructions,
        interp.as_secs_f64() * 1e9 / s.warp_instructions.max(1) as f64
    );
    }
}
