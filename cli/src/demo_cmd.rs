//! `vcuda demo`: the main job on the embedded default — real CUDA kernels (compiled by nvcc,
//! embedded as PTX) run through the protocol on an in-process cpu-backend executor, each result
//! checked against a host computation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use host_executor::client::{InProcess, InProcessConfig};
use virtio_cuda::client::{Client, Context, KernelArg, Module};
use virtio_cuda::protocol as p;

/// The demo kernels (see demo/demo.cu for the source and how this file is regenerated).
const DEMO_PTX: &str = include_str!("demo/demo.ptx");

/// Arguments of `vcuda demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Use a running executor (`vcuda executor --listen PATH`) instead of an in-process one.
    #[arg(long, value_name = "PATH")]
    pub executor: Option<PathBuf>,
    /// Elements for vector add and the reduction.
    #[arg(long, default_value_t = 1 << 20)]
    pub n: u32,
    /// Matrix size for sgemm (n × n).
    #[arg(long, default_value_t = 256)]
    pub matrix: u32,
}

type DynError = Box<dyn std::error::Error>;
fn check(name: &str, ok: bool, detail: String, secs: f64, failures: &mut u32) {
    let mark = if ok { "ok  " } else { "FAIL" };
    println!("  [{mark}] {name:<28} {detail:<44} {:>9.2} ms", secs * 1e3);
    if !ok {
        *failures += 1;
    }
}

pub fn run(args: DemoArgs) -> Result<ExitCode, DynError> {
    let local;
    let client = match &args.executor {
        Some(path) => Client::connect_unix(path, "vcuda-demo")?,
        None => {
            local = InProcess::start_cpu(InProcessConfig::default())?;
            local.connect("vcuda-demo")?
        }
    };
    client.call(&p::Init { flags: 0 })?;
    let dev = client.call(&p::DeviceInfo { ordinal: 0 })?;
    println!(
        "vcuda demo: backend `{}`, device \"{}\"",
        client.hello().backend,
        dev.name
    );
    let ctx = client.create_context(0)?;
    let t = Instant::now();
    let module = ctx.load_module(DEMO_PTX.as_bytes())?;
    println!(
        "  module (nvcc 13 PTX) loaded in {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut failures = 0;
    vector_add(&ctx, &module, args.n, &mut failures)?;
    reduction(&ctx, &module, args.n, &mut failures)?;
    sgemm(&ctx, &module, args.matrix, &mut failures)?;

    println!("  device printf:");
    module
        .function("hello")?
        .launch([2, 1, 1], [32, 1, 1], 0, &[KernelArg::I32(2)])?;
    ctx.synchronize()?;

    if failures == 0 {
        println!("vcuda demo: all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("vcuda demo: {failures} check(s) FAILED");
        Ok(ExitCode::FAILURE)
    }
}

fn vector_add(
    ctx: &Context<'_>,
    m: &Module<'_, '_>,
    n: u32,
    failures: &mut u32,
) -> Result<(), DynError> {
    let len = n as usize;
    let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..len).map(|i| (len - i) as f32 * 0.25).collect();
    let (da, db, dc) = (
        ctx.upload(&a)?,
        ctx.upload(&b)?,
        ctx.alloc(u64::from(n) * 4)?,
    );
    let f = m.function("vadd")?;
    let t = Instant::now();
    f.launch(
        [n.div_ceil(256), 1, 1],
        [256, 1, 1],
        0,
        &[
            KernelArg::Ptr(da),
            KernelArg::Ptr(db),
            KernelArg::Ptr(dc),
            KernelArg::U32(n),
        ],
    )?;
    ctx.synchronize()?;
    let secs = t.elapsed().as_secs_f64();
    let c: Vec<f32> = ctx.download(dc, len)?;
    let bad = (0..len).filter(|&i| c[i] != a[i] + b[i]).count();
    check(
        "vector add",
        bad == 0,
        format!("{n} floats, {bad} mismatches"),
        secs,
        failures,
    );
    Ok(())
}

fn reduction(
    ctx: &Context<'_>,
    m: &Module<'_, '_>,
    n: u32,
    failures: &mut u32,
) -> Result<(), DynError> {
    let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let da = ctx.upload(&a)?;
    let parts = 64u32;
    let dpart = ctx.alloc(u64::from(parts) * 4)?;
    let f = m.function("block_sum")?;
    let t = Instant::now();
    f.launch(
        [parts, 1, 1],
        [256, 1, 1],
        0,
        &[KernelArg::Ptr(da), KernelArg::Ptr(dpart), KernelArg::U32(n)],
    )?;
    ctx.synchronize()?;
    let secs = t.elapsed().as_secs_f64();
    let got: f64 = ctx
        .download::<f32>(dpart, parts as usize)?
        .iter()
        .map(|&v| f64::from(v))
        .sum();
    let want: f64 = a.iter().map(|&v| f64::from(v)).sum();
    let rel = ((got - want) / want).abs();
    check(
        "reduction (shared, barriers)",
        rel < 1e-5,
        format!("sum {got:.6e}, host {want:.6e}"),
        secs,
        failures,
    );
    Ok(())
}

fn sgemm(
    ctx: &Context<'_>,
    m: &Module<'_, '_>,
    size: u32,
    failures: &mut u32,
) -> Result<(), DynError> {
    let n = size as usize;
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
    let (da, db, dc) = (
        ctx.upload(&a)?,
        ctx.upload(&b)?,
        ctx.alloc((n * n * 4) as u64)?,
    );
    let f = m.function("sgemm")?;
    let t = Instant::now();
    let tiles = size.div_ceil(16);
    f.launch(
        [tiles, tiles, 1],
        [16, 16, 1],
        0,
        &[
            KernelArg::Ptr(da),
            KernelArg::Ptr(db),
            KernelArg::Ptr(dc),
            KernelArg::U32(size),
        ],
    )?;
    ctx.synchronize()?;
    let secs = t.elapsed().as_secs_f64();
    let c: Vec<f32> = ctx.download(dc, n * n)?;
    let mut worst = 0.0f64;
    for i in 0..n {
        for j in 0..n {
            let want: f64 = (0..n)
                .map(|k| f64::from(a[i * n + k]) * f64::from(b[k * n + j]))
                .sum();
            worst = worst.max((f64::from(c[i * n + j]) - want).abs());
        }
    }
    let gflops = 2.0 * (n as f64).powi(3) / secs / 1e9;
    check(
        "tiled sgemm",
        worst < 1e-2,
        format!("{n}x{n}, max |err| {worst:.1e}, {gflops:.3} GFLOP/s"),
        secs,
        failures,
    );
    Ok(())
}
