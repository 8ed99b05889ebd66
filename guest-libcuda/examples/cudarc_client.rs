//! A Rust CUDA program on cudarc (dynamic loading), unaware of vcuda: it loads whatever
//! `libcuda.so` the dynamic linker finds. Run it with the shim first in `LD_LIBRARY_PATH` and
//! `VCUDA_EXECUTOR` set (or under `vcuda exec`); prints PASS and exits 0 when the results are
//! right.

use cudarc::driver::{CudaContext, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

fn run() -> Result<(), DriverError> {
    let ctx = CudaContext::new(0)?;
    println!("device: {}", ctx.name()?);
    let stream = ctx.default_stream();
    let module = ctx.load_module(Ptx::from_src(include_str!("scale.ptx")))?;
    let scale = module.load_function("scale")?;
    let n = 10_000u32;
    let host: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dev = stream.clone_htod(&host)?;
    let side = ctx.new_stream()?;
    for a in [2.0f32, 0.25] {
        let mut launch = side.launch_builder(&scale);
        launch.arg(&mut dev).arg(&a).arg(&n);
        // SAFETY: `scale` takes (float*, float, unsigned) and `dev` holds `n` floats.
        unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }?;
    }
    side.synchronize()?;
    let back = stream.clone_dtoh(&dev)?;
    let bad = back
        .iter()
        .zip(&host)
        .filter(|(got, want)| **got != **want * 0.5)
        .count();
    if bad == 0 {
        println!("PASS cudarc_client");
        Ok(())
    } else {
        println!("FAIL cudarc_client: {bad} wrong elements");
        std::process::exit(1);
    }
}

fn main() {
    if let Err(e) = run() {
        println!("FAIL cudarc_client: {e}");
        std::process::exit(1);
    }
}
