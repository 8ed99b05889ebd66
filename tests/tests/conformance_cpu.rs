//! Conformance of the `cpu` backend through the real protocol: an in-process executor on a unix
//! socket, typed clients, every test kernel compiled by nvcc and by NVRTC (and fatbins through
//! `cuModuleLoadData`), results compared with `vcuda_tests::reference`.
//!
//! Without the CUDA toolchain (`scripts/setup.sh`) each test prints `SKIPPED` and returns.

use std::sync::{Arc, Mutex};

use host_executor::client::{InProcess, InProcessConfig};
use host_executor::cpu::CpuConfig;
use vcuda_tests::kernels::{self, KernelFile};
use vcuda_tests::reference::{self as r, assert_close_ulps, assert_equal, Rng};
use vcuda_tests::require_toolchain;
use vcuda_tests::toolchain::{self, ToolchainError};
use virtio_cuda::client::{Client, ClientError, Context, KernelArg as A, Module, UnixTransport};
use virtio_cuda::protocol::Status;

fn start(cpu: CpuConfig) -> InProcess {
    InProcess::start_cpu(InProcessConfig {
        cpu,
        ..Default::default()
    })
    .expect("start in-process executor")
}

fn executor() -> InProcess {
    start(CpuConfig::default())
}

/// The PTX of `file` from each compiler, labelled.
fn ptx_variants(file: &KernelFile) -> Result<Vec<(&'static str, String)>, ToolchainError> {
    Ok(vec![
        ("nvcc", file.nvcc_ptx()?),
        ("nvrtc", file.nvrtc_ptx()?),
    ])
}

/// Runs `body` once per PTX variant of `file`, each on a fresh session and context.
fn with_each_ptx(
    exec: &InProcess,
    variants: &[(&'static str, String)],
    body: impl Fn(&str, &Context, &Module),
) {
    for (label, ptx) in variants {
        let client = exec.connect(label).unwrap();
        let ctx = client.create_context(0).unwrap();
        let module = ctx
            .load_module(ptx.as_bytes())
            .unwrap_or_else(|e| panic!("{label}: loading PTX: {e}"));
        body(label, &ctx, &module);
        ctx.synchronize().unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

fn blocks(n: usize, block: usize) -> u32 {
    n.div_ceil(block) as u32
}

#[test]
fn vector_add_and_saxpy() {
    let variants = require_toolchain!(ptx_variants(&kernels::VADD));
    let exec = executor();
    let n = 10_000;
    let mut rng = Rng::new(1);
    let (a, b) = (rng.vec_f32(n, -10.0, 10.0), rng.vec_f32(n, -10.0, 10.0));
    let (ai, bi) = (rng.vec_i32(n, i32::MIN, i32::MAX), rng.vec_i32(n, -5, 5));
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (da, db, dc) = (
            ctx.upload(&a).unwrap(),
            ctx.upload(&b).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        let args = [A::Ptr(da), A::Ptr(db), A::Ptr(dc), A::I32(n as i32)];
        m.function("vadd_f32")
            .unwrap()
            .launch([blocks(n, 256), 1, 1], [256, 1, 1], 0, &args)
            .unwrap();
        let got: Vec<f32> = ctx.download(dc, n).unwrap();
        assert_close_ulps(&format!("{label} vadd_f32"), &got, &r::vadd_f32(&a, &b), 0);

        let (dai, dbi) = (ctx.upload(&ai).unwrap(), ctx.upload(&bi).unwrap());
        let args = [A::Ptr(dai), A::Ptr(dbi), A::Ptr(dc), A::I32(n as i32)];
        m.function("vadd_i32")
            .unwrap()
            .launch([blocks(n, 128), 1, 1], [128, 1, 1], 0, &args)
            .unwrap();
        let got: Vec<i32> = ctx.download(dc, n).unwrap();
        assert_equal(&format!("{label} vadd_i32"), &got, &r::vadd_i32(&ai, &bi));

        // A grid smaller than the data: the grid-stride loop covers the rest.
        let dy = ctx.upload(&b).unwrap();
        let args = [A::F32(1.5), A::Ptr(da), A::Ptr(dy), A::I32(n as i32)];
        m.function("saxpy")
            .unwrap()
            .launch([7, 1, 1], [64, 1, 1], 0, &args)
            .unwrap();
        let got: Vec<f32> = ctx.download(dy, n).unwrap();
        assert_close_ulps(&format!("{label} saxpy"), &got, &r::saxpy(1.5, &a, &b), 0);
    });
}

#[test]
fn fatbins_load_through_module_load_data() {
    let path = kernels::VADD.path();
    let plain = require_toolchain!(toolchain::compile_fatbin(&path, &[]));
    let multi = require_toolchain!(toolchain::compile_fatbin(
        &path,
        &[
            "-gencode",
            "arch=compute_75,code=sm_75",
            "-gencode",
            "arch=compute_80,code=[sm_80,compute_80]",
            "-gencode",
            "arch=compute_90,code=compute_90",
            "-Xfatbin",
            "-compress-all",
        ],
    ));
    let sass_only = require_toolchain!(toolchain::compile_fatbin(
        &path,
        &["-gencode", "arch=compute_80,code=sm_80"]
    ));
    let exec = executor();
    let client = exec.connect("fatbin").unwrap();
    let ctx = client.create_context(0).unwrap();
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    for (label, image) in [("default fatbin", &plain), ("multi-arch fatbin", &multi)] {
        let m = ctx
            .load_module(image)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let (da, dc) = (ctx.upload(&a).unwrap(), ctx.alloc(4 * n as u64).unwrap());
        m.function("vadd_f32")
            .unwrap()
            .launch(
                [blocks(n, 256), 1, 1],
                [256, 1, 1],
                0,
                &[A::Ptr(da), A::Ptr(da), A::Ptr(dc), A::I32(n as i32)],
            )
            .unwrap();
        let got: Vec<f32> = ctx.download(dc, n).unwrap();
        assert_close_ulps(label, &got, &r::vadd_f32(&a, &a), 0);
    }
    // SASS only: nothing the cpu backend can run, reported as such.
    match ctx.load_module(&sass_only) {
        Err(ClientError::Status(s)) => assert_eq!(s, Status::ERROR_NO_BINARY_FOR_GPU),
        Err(e) => panic!("SASS-only fatbin: {e}"),
        Ok(_) => panic!("SASS-only fatbin loaded on the cpu backend"),
    }
    // A fatbin wrapper holds a client pointer, which the executor cannot follow: the shim
    // must send the container instead (host_executor::image::FatbinWrapper).
    let mut wrapper = host_executor::image::WRAPPER_MAGIC.to_le_bytes().to_vec();
    wrapper.extend_from_slice(&1u32.to_le_bytes());
    wrapper.extend_from_slice(&0x7f00_0000_1000u64.to_le_bytes());
    wrapper.extend_from_slice(&0u64.to_le_bytes());
    match ctx.load_module(&wrapper) {
        Err(ClientError::Status(s)) => assert_eq!(s, Status::ERROR_INVALID_IMAGE),
        Err(e) => panic!("fatbin wrapper: {e}"),
        Ok(_) => panic!("a fatbin wrapper loaded"),
    }
    ctx.synchronize().unwrap();
}

#[test]
fn shared_memory_reductions_of_a_million_elements() {
    let variants = require_toolchain!(ptx_variants(&kernels::REDUCE));
    let exec = executor();
    let n = 1 << 20;
    let (grid, block) = (64usize, 256usize);
    let mut rng = Rng::new(2);
    let data = rng.vec_f32(n, 0.0, 1.0);
    let ints = rng.vec_i32(n, -1000, 1000);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (din, dpart) = (
            ctx.upload(&data).unwrap(),
            ctx.alloc(4 * grid as u64).unwrap(),
        );
        m.function("reduce_sum_f32")
            .unwrap()
            .launch(
                [grid as u32, 1, 1],
                [block as u32, 1, 1],
                0,
                &[A::Ptr(din), A::Ptr(dpart), A::U32(n as u32)],
            )
            .unwrap();
        let partials: Vec<f32> = ctx.download(dpart, grid).unwrap();
        let want = r::reduce_f32_tree(&data, grid, block);
        assert_close_ulps(&format!("{label} reduce_sum_f32"), &partials, &want, 0);
        let total: f64 = partials.iter().map(|x| f64::from(*x)).sum();
        let exact = r::sum_f64(&data);
        assert!(
            (total - exact).abs() / exact < 1e-5,
            "{label}: {total} vs {exact}"
        );

        let (dints, dtotal) = (ctx.upload(&ints).unwrap(), ctx.upload(&[0i32]).unwrap());
        m.function("reduce_sum_i32")
            .unwrap()
            .launch(
                [grid as u32, 1, 1],
                [block as u32, 1, 1],
                0,
                &[A::Ptr(dints), A::Ptr(dtotal), A::U32(n as u32)],
            )
            .unwrap();
        let total: Vec<i32> = ctx.download(dtotal, 1).unwrap();
        assert_eq!(total[0], r::reduce_i32(&ints), "{label} reduce_sum_i32");
    });
}

#[test]
fn tiled_matmul_f32_and_f64() {
    let variants = require_toolchain!(ptx_variants(&kernels::MATMUL));
    let exec = executor();
    // Not multiples of the tile: the padding paths run too.
    let (m_, n_, k_) = (45usize, 38usize, 53usize);
    let mut rng = Rng::new(3);
    let (a, b) = (
        rng.vec_f32(m_ * k_, -1.0, 1.0),
        rng.vec_f32(k_ * n_, -1.0, 1.0),
    );
    let (a64, b64) = (
        rng.vec_f64(m_ * k_, -1.0, 1.0),
        rng.vec_f64(k_ * n_, -1.0, 1.0),
    );
    let grid = [blocks(n_, r::TILE), blocks(m_, r::TILE), 1];
    let tile = [r::TILE as u32, r::TILE as u32, 1];
    let dims = [A::I32(m_ as i32), A::I32(n_ as i32), A::I32(k_ as i32)];
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (da, db, dc) = (
            ctx.upload(&a).unwrap(),
            ctx.upload(&b).unwrap(),
            ctx.alloc(4 * (m_ * n_) as u64).unwrap(),
        );
        let mut args = vec![A::Ptr(da), A::Ptr(db), A::Ptr(dc)];
        args.extend_from_slice(&dims);
        m.function("matmul_f32")
            .unwrap()
            .launch(grid, tile, 0, &args)
            .unwrap();
        let got: Vec<f32> = ctx.download(dc, m_ * n_).unwrap();
        let want = r::matmul_f32(&a, &b, m_, n_, k_);
        assert_close_ulps(&format!("{label} matmul_f32"), &got, &want, 0);

        let (da, db, dc) = (
            ctx.upload(&a64).unwrap(),
            ctx.upload(&b64).unwrap(),
            ctx.alloc(8 * (m_ * n_) as u64).unwrap(),
        );
        let mut args = vec![A::Ptr(da), A::Ptr(db), A::Ptr(dc)];
        args.extend_from_slice(&dims);
        m.function("matmul_f64")
            .unwrap()
            .launch(grid, tile, 0, &args)
            .unwrap();
        let got: Vec<f64> = ctx.download(dc, m_ * n_).unwrap();
        let want = r::matmul_f64(&a64, &b64, m_, n_, k_);
        assert_close_ulps(&format!("{label} matmul_f64"), &got, &want, 0);
    });
}

#[test]
fn atomics() {
    let variants = require_toolchain!(ptx_variants(&kernels::ATOMICS));
    let exec = executor();
    let n = 20_000;
    let mut rng = Rng::new(4);
    let data = rng.vec_i32(n, -1000, 1000);
    let (grid, block) = ([blocks(n, 256), 1, 1], [256, 1, 1]);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let ddata = ctx.upload(&data).unwrap();
        let (di, df, dd) = (
            ctx.upload(&[0i32]).unwrap(),
            ctx.upload(&[0f32]).unwrap(),
            ctx.upload(&[0f64]).unwrap(),
        );
        m.function("atomic_add")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[
                    A::Ptr(ddata),
                    A::I32(n as i32),
                    A::Ptr(di),
                    A::Ptr(df),
                    A::Ptr(dd),
                ],
            )
            .unwrap();
        let (want_i, want_f, want_d) = r::atomic_add(&data);
        assert_eq!(
            ctx.download::<i32>(di, 1).unwrap()[0],
            want_i,
            "{label} int"
        );
        assert_eq!(
            ctx.download::<f32>(df, 1).unwrap()[0],
            want_f,
            "{label} float"
        );
        assert_eq!(
            ctx.download::<f64>(dd, 1).unwrap()[0],
            want_d,
            "{label} double"
        );

        let dmm = ctx.upload(&[i32::MAX, i32::MIN]).unwrap();
        m.function("atomic_minmax")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[A::Ptr(ddata), A::I32(n as i32), A::Ptr(dmm)],
            )
            .unwrap();
        let got: Vec<i32> = ctx.download(dmm, 2).unwrap();
        assert_eq!(got, r::atomic_minmax(&data), "{label} min/max");

        let (dslot, dold) = (
            ctx.upload(&[-1i32]).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        m.function("atomic_exch")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[A::I32(n as i32), A::Ptr(dslot), A::Ptr(dold)],
            )
            .unwrap();
        let slot = ctx.download::<i32>(dslot, 1).unwrap()[0];
        let old: Vec<i32> = ctx.download(dold, n).unwrap();
        r::check_atomic_exch(-1, slot, &old).unwrap_or_else(|e| panic!("{label}: {e}"));

        let limit = 999u32;
        let (dcounter, dret) = (
            ctx.upload(&[0u32]).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        m.function("atomic_inc")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[
                    A::I32(n as i32),
                    A::U32(limit),
                    A::Ptr(dcounter),
                    A::Ptr(dret),
                ],
            )
            .unwrap();
        let counter = ctx.download::<u32>(dcounter, 1).unwrap()[0];
        let ret: Vec<u32> = ctx.download(dret, n).unwrap();
        r::check_atomic_inc(limit, counter, &ret).unwrap_or_else(|e| panic!("{label}: {e}"));

        let dsq = ctx.upload(&[0u64]).unwrap();
        m.function("atomic_cas_sum_sq")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[A::Ptr(ddata), A::I32(n as i32), A::Ptr(dsq)],
            )
            .unwrap();
        assert_eq!(
            ctx.download::<u64>(dsq, 1).unwrap()[0],
            r::sum_sq(&data),
            "{label} atomicCAS loop"
        );

        let dhist = ctx.upload(&[0u32; 16]).unwrap();
        m.function("histogram16")
            .unwrap()
            .launch(
                grid,
                block,
                0,
                &[A::Ptr(ddata), A::I32(n as i32), A::Ptr(dhist)],
            )
            .unwrap();
        let got: Vec<u32> = ctx.download(dhist, 16).unwrap();
        assert_eq!(got, r::histogram16(&data), "{label} histogram");
    });
}

#[test]
fn warp_shuffles_and_votes() {
    let variants = require_toolchain!(ptx_variants(&kernels::WARP));
    let exec = executor();
    let (grid, block) = (4usize, 128usize);
    let n = grid * block;
    let warps = n / r::WARP;
    let mut rng = Rng::new(5);
    let ints = rng.vec_i32(n, -100_000, 100_000);
    let floats = rng.vec_f32(n, -1.0, 1.0);
    let src = rng.vec_i32(n, 0, 1000);
    // Mix of warps: all true, all false, sparse.
    let preds: Vec<i32> = (0..n)
        .map(|i| match i / r::WARP % 3 {
            0 => 1,
            1 => 0,
            _ => i32::from(rng.next_u32() % 5 == 0),
        })
        .collect();
    let launch = ([grid as u32, 1, 1], [block as u32, 1, 1]);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (din, dout) = (ctx.upload(&ints).unwrap(), ctx.alloc(4 * n as u64).unwrap());
        m.function("shfl_down_sum")
            .unwrap()
            .launch(launch.0, launch.1, 0, &[A::Ptr(din), A::Ptr(dout)])
            .unwrap();
        let got: Vec<i32> = ctx.download(dout, warps).unwrap();
        assert_equal(&format!("{label} shfl_down"), &got, &r::warp_sums(&ints));

        m.function("shfl_xor_max")
            .unwrap()
            .launch(launch.0, launch.1, 0, &[A::Ptr(din), A::Ptr(dout)])
            .unwrap();
        let got: Vec<i32> = ctx.download(dout, n).unwrap();
        assert_equal(
            &format!("{label} shfl_xor"),
            &got,
            &r::warp_max_broadcast(&ints),
        );

        let (dfl, dsrc) = (ctx.upload(&floats).unwrap(), ctx.upload(&src).unwrap());
        m.function("shfl_gather")
            .unwrap()
            .launch(
                launch.0,
                launch.1,
                0,
                &[A::Ptr(dfl), A::Ptr(dsrc), A::Ptr(dout)],
            )
            .unwrap();
        let got: Vec<f32> = ctx.download(dout, n).unwrap();
        assert_close_ulps(
            &format!("{label} shfl_sync"),
            &got,
            &r::warp_gather(&floats, &src),
            0,
        );

        let dpred = ctx.upload(&preds).unwrap();
        let outs: Vec<u64> = (0..4)
            .map(|_| ctx.alloc(4 * warps as u64).unwrap())
            .collect();
        let mut args = vec![A::Ptr(dpred)];
        args.extend(outs.iter().map(|d| A::Ptr(*d)));
        m.function("vote")
            .unwrap()
            .launch(launch.0, launch.1, 0, &args)
            .unwrap();
        let ballot: Vec<u32> = ctx.download(outs[0], warps).unwrap();
        let all: Vec<i32> = ctx.download(outs[1], warps).unwrap();
        let any: Vec<i32> = ctx.download(outs[2], warps).unwrap();
        let low16: Vec<u32> = ctx.download(outs[3], warps).unwrap();
        let got: Vec<r::Vote> = (0..warps)
            .map(|w| r::Vote {
                ballot: ballot[w],
                all: all[w] != 0,
                any: any[w] != 0,
                low16: low16[w],
            })
            .collect();
        assert_equal(&format!("{label} votes"), &got, &r::warp_votes(&preds));
    });
}

#[test]
fn divergent_loops_and_early_returns() {
    let variants = require_toolchain!(ptx_variants(&kernels::DIVERGENCE));
    let exec = executor();
    let n = 3000;
    let mut rng = Rng::new(6);
    let starts: Vec<u32> = (0..n)
        .map(|i| 1 + i as u32 * 7 + rng.next_u32() % 7)
        .collect();
    let values = rng.vec_i32(n, -20, 400);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (din, dout) = (
            ctx.upload(&starts).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        m.function("collatz")
            .unwrap()
            .launch(
                [blocks(n, 128), 1, 1],
                [128, 1, 1],
                0,
                &[A::Ptr(din), A::Ptr(dout), A::I32(n as i32)],
            )
            .unwrap();
        let got: Vec<u32> = ctx.download(dout, n).unwrap();
        let want: Vec<u32> = starts.iter().map(|s| r::collatz_steps(*s)).collect();
        assert_equal(&format!("{label} collatz"), &got, &want);

        let dv = ctx.upload(&values).unwrap();
        m.function("branchy")
            .unwrap()
            .launch(
                [blocks(n, 96), 1, 1],
                [96, 1, 1],
                0,
                &[A::Ptr(dv), A::Ptr(dout), A::I32(n as i32)],
            )
            .unwrap();
        let got: Vec<i32> = ctx.download(dout, n).unwrap();
        let want: Vec<i32> = values.iter().map(|v| r::branchy(*v)).collect();
        assert_equal(&format!("{label} branchy"), &got, &want);
    });
}

#[test]
fn constant_memory_filters() {
    let variants = require_toolchain!(ptx_variants(&kernels::CONSTANT));
    let exec = executor();
    let n = 5000;
    let mut rng = Rng::new(7);
    let input = rng.vec_f32(n, -1.0, 1.0);
    let coeffs = rng.vec_f32(9, -0.5, 0.5);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (global, size) = m.global("coeffs").unwrap();
        assert_eq!(size, 9 * 4, "{label}: size of __constant__ coeffs");
        ctx.write(global, virtio_cuda::client::to_bytes(&coeffs))
            .unwrap();
        let (din, dout) = (
            ctx.upload(&input).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        let args = [A::Ptr(din), A::Ptr(dout), A::I32(n as i32)];
        let grid = [blocks(n, 256), 1, 1];
        m.function("fir")
            .unwrap()
            .launch(grid, [256, 1, 1], 0, &args)
            .unwrap();
        let got: Vec<f32> = ctx.download(dout, n).unwrap();
        assert_close_ulps(&format!("{label} fir"), &got, &r::fir(&input, &coeffs), 0);

        m.function("fir_fixed")
            .unwrap()
            .launch(grid, [256, 1, 1], 0, &args)
            .unwrap();
        let got: Vec<f32> = ctx.download(dout, n).unwrap();
        let want = r::fir(&input, &r::FIXED_COEFFS);
        assert_close_ulps(&format!("{label} fir_fixed"), &got, &want, 0);
    });
}

#[test]
fn dynamic_shared_memory() {
    let variants = require_toolchain!(ptx_variants(&kernels::DYNAMIC_SHARED));
    let exec = executor();
    let mut rng = Rng::new(8);
    let (rev_grid, rev_block) = (5usize, 128usize);
    let data = rng.vec_f32(rev_grid * rev_block, -100.0, 100.0);
    let (scan_grid, scan_block) = (3usize, 256usize);
    let ints = rng.vec_i32(scan_grid * scan_block, -50, 50);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let d = ctx.upload(&data).unwrap();
        m.function("reverse_blocks")
            .unwrap()
            .launch(
                [rev_grid as u32, 1, 1],
                [rev_block as u32, 1, 1],
                (rev_block * 4) as u32,
                &[A::Ptr(d)],
            )
            .unwrap();
        let got: Vec<f32> = ctx.download(d, data.len()).unwrap();
        let want = r::reverse_blocks(&data, rev_block);
        assert_close_ulps(&format!("{label} reverse_blocks"), &got, &want, 0);

        let (din, dout, drounds) = (
            ctx.upload(&ints).unwrap(),
            ctx.alloc(4 * ints.len() as u64).unwrap(),
            ctx.alloc(4 * scan_grid as u64).unwrap(),
        );
        m.function("block_prefix_sums")
            .unwrap()
            .launch(
                [scan_grid as u32, 1, 1],
                [scan_block as u32, 1, 1],
                (2 * scan_block * 4) as u32,
                &[A::Ptr(din), A::Ptr(dout), A::Ptr(drounds)],
            )
            .unwrap();
        let (want, want_rounds) = r::block_prefix_sums(&ints, scan_block);
        let got: Vec<i32> = ctx.download(dout, ints.len()).unwrap();
        assert_equal(&format!("{label} prefix sums"), &got, &want);
        let rounds: Vec<i32> = ctx.download(drounds, scan_grid).unwrap();
        assert_equal(&format!("{label} scan rounds"), &rounds, &want_rounds);
    });
}

#[test]
fn math_library_within_documented_ulps() {
    let variants = require_toolchain!(ptx_variants(&kernels::MATH));
    let exec = executor();
    let n = 4096;
    let mut rng = Rng::new(9);
    let x = rng.vec_f32(n, 0.01, 10.0);
    let y = rng.vec_f32(n, -2.0, 2.0);
    let x64 = rng.vec_f64(n, 0.01, 10.0);
    let y64 = rng.vec_f64(n, -2.0, 2.0);
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (dx, dy) = (ctx.upload(&x).unwrap(), ctx.upload(&y).unwrap());
        let dout = ctx.alloc((4 * n * r::MATH_F32.len()) as u64).unwrap();
        m.function("math_f32")
            .unwrap()
            .launch(
                [blocks(n, 256), 1, 1],
                [256, 1, 1],
                0,
                &[A::Ptr(dx), A::Ptr(dy), A::Ptr(dout), A::I32(n as i32)],
            )
            .unwrap();
        let out: Vec<f32> = ctx.download(dout, n * r::MATH_F32.len()).unwrap();
        for (f, got) in r::MATH_F32.iter().zip(out.chunks(n)) {
            let want: Vec<f32> = (0..n).map(|i| (f.reference)(x[i], y[i])).collect();
            assert_close_ulps(&format!("{label} {}", f.name), got, &want, f.max_ulps);
        }

        let (dx, dy) = (ctx.upload(&x64).unwrap(), ctx.upload(&y64).unwrap());
        let dout = ctx.alloc((8 * n * r::MATH_F64.len()) as u64).unwrap();
        m.function("math_f64")
            .unwrap()
            .launch(
                [blocks(n, 256), 1, 1],
                [256, 1, 1],
                0,
                &[A::Ptr(dx), A::Ptr(dy), A::Ptr(dout), A::I32(n as i32)],
            )
            .unwrap();
        let out: Vec<f64> = ctx.download(dout, n * r::MATH_F64.len()).unwrap();
        for (f, got) in r::MATH_F64.iter().zip(out.chunks(n)) {
            let want: Vec<f64> = (0..n).map(|i| (f.reference)(x64[i], y64[i])).collect();
            assert_close_ulps(&format!("{label} {}", f.name), got, &want, f.max_ulps);
        }
    });
}

#[test]
fn noinline_calls_and_recursion() {
    let variants = require_toolchain!(ptx_variants(&kernels::NOINLINE));
    let exec = executor();
    let n = 1000;
    let mut rng = Rng::new(10);
    let x = rng.vec_f32(n, -1.5, 1.5);
    let a: Vec<u32> = (0..n).map(|_| rng.next_u32() % 100_000).collect();
    let b: Vec<u32> = (0..n).map(|_| rng.next_u32() % 100_000).collect();
    with_each_ptx(&exec, &variants, |label, ctx, m| {
        let (dx, da, db) = (
            ctx.upload(&x).unwrap(),
            ctx.upload(&a).unwrap(),
            ctx.upload(&b).unwrap(),
        );
        let (dpoly, dg) = (
            ctx.alloc(4 * n as u64).unwrap(),
            ctx.alloc(4 * n as u64).unwrap(),
        );
        m.function("call_noinline")
            .unwrap()
            .launch(
                [blocks(n, 128), 1, 1],
                [128, 1, 1],
                0,
                &[
                    A::Ptr(dx),
                    A::Ptr(da),
                    A::Ptr(db),
                    A::Ptr(dpoly),
                    A::Ptr(dg),
                    A::I32(n as i32),
                ],
            )
            .unwrap();
        let got: Vec<f32> = ctx.download(dpoly, n).unwrap();
        let want: Vec<f32> = (0..n).map(|i| r::horner(x[i], (i % 8) as i32)).collect();
        assert_close_ulps(&format!("{label} horner"), &got, &want, 0);
        let got: Vec<u32> = ctx.download(dg, n).unwrap();
        let want: Vec<u32> = (0..n).map(|i| r::gcd(a[i], b[i])).collect();
        assert_equal(&format!("{label} gcd"), &got, &want);
    });
}

#[test]
fn device_printf_reaches_the_client() {
    let variants = require_toolchain!(ptx_variants(&kernels::PRINTF));
    let exec = executor();
    for (label, ptx) in &variants {
        let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&captured);
        let transport = UnixTransport::connect(exec.socket())
            .unwrap()
            .with_output(Box::new(move |bytes| {
                sink.lock().unwrap().extend_from_slice(bytes)
            }));
        let client = Client::new(Box::new(transport), label).unwrap();
        let ctx = client.create_context(0).unwrap();
        let m = ctx.load_module(ptx.as_bytes()).unwrap();
        let threads = 8;
        m.function("hello_printf")
            .unwrap()
            .launch(
                [1, 1, 1],
                [threads, 1, 1],
                0,
                &[A::I32(100), A::F32(1.25), A::I64(-1 << 40)],
            )
            .unwrap();
        ctx.synchronize().unwrap();
        let text = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        let mut got: Vec<&str> = text.lines().collect();
        let mut want = r::printf_lines(100, 1.25, -1 << 40, threads);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{label}: device printf output");
    }
}

#[test]
fn illegal_address_fails_only_its_own_context() {
    let faults = require_toolchain!(kernels::FAULTS.nvcc_ptx());
    let vadd = require_toolchain!(kernels::VADD.nvcc_ptx());
    let exec = executor();
    let bystander = exec.connect("bystander").unwrap();
    let ok_ctx = bystander.create_context(0).unwrap();
    let ok_module = ok_ctx.load_module(vadd.as_bytes()).unwrap();
    let run_vadd = || {
        let a: Vec<i32> = (0..300).collect();
        let (da, dc) = (ok_ctx.upload(&a).unwrap(), ok_ctx.alloc(1200).unwrap());
        ok_module
            .function("vadd_i32")
            .unwrap()
            .launch(
                [3, 1, 1],
                [128, 1, 1],
                0,
                &[A::Ptr(da), A::Ptr(da), A::Ptr(dc), A::I32(300)],
            )
            .unwrap();
        let got: Vec<i32> = ok_ctx.download(dc, 300).unwrap();
        assert_equal("bystander vadd", &got, &r::vadd_i32(&a, &a));
    };
    run_vadd();

    let culprit = exec.connect("culprit").unwrap();
    let ctx = culprit.create_context(0).unwrap();
    let m = ctx.load_module(faults.as_bytes()).unwrap();
    let p = ctx.alloc(64).unwrap();
    m.function("write_oob")
        .unwrap()
        .launch([1, 1, 1], [32, 1, 1], 0, &[A::Ptr(p), A::I64(1 << 36)])
        .unwrap();
    let status = |r: Result<(), ClientError>| match r {
        Err(ClientError::Status(s)) => s,
        other => panic!("expected a CUDA error, got {other:?}"),
    };
    assert_eq!(status(ctx.synchronize()), Status::ERROR_ILLEGAL_ADDRESS);
    // Sticky: the context stays broken.
    assert_eq!(status(ctx.synchronize()), Status::ERROR_ILLEGAL_ADDRESS);

    // The other session neither noticed nor lost anything; the executor keeps serving.
    run_vadd();
    ok_ctx.synchronize().unwrap();
    let fresh = exec.connect("fresh").unwrap();
    fresh.create_context(0).unwrap().synchronize().unwrap();
}

#[test]
fn runaway_kernel_hits_the_launch_timeout() {
    let faults = require_toolchain!(kernels::FAULTS.nvcc_ptx());
    let exec = start(CpuConfig {
        instruction_budget: 5_000_000,
        ..CpuConfig::default()
    });
    let client = exec.connect("spinner").unwrap();
    let ctx = client.create_context(0).unwrap();
    let m = ctx.load_module(faults.as_bytes()).unwrap();
    let (flag, iterations) = (ctx.upload(&[0i32]).unwrap(), ctx.alloc(4 * 32).unwrap());
    m.function("spin_forever")
        .unwrap()
        .launch(
            [1, 1, 1],
            [32, 1, 1],
            0,
            &[A::Ptr(flag), A::Ptr(iterations)],
        )
        .unwrap();
    match ctx.synchronize() {
        Err(ClientError::Status(s)) => assert_eq!(s, Status::ERROR_LAUNCH_TIMEOUT),
        other => panic!("expected CUDA_ERROR_LAUNCH_TIMEOUT, got {other:?}"),
    }
}
