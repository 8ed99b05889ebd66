//! Every function the toolkit's `cuda.h` declares is a symbol of the shim that `dlsym` finds
//! (libraries such as cuFFT resolve the driver API that way, not through `cuGetProcAddress`),
//! under the name the preprocessor gives it (`cuLinkCreate` → `cuLinkCreate_v2`; with
//! `CUDA_API_PER_THREAD_DEFAULT_STREAM`, `_ptds`/`_ptsz`). What the shim does not implement
//! answers `CUDA_ERROR_NOT_SUPPORTED`. Needs the shim built (`cargo build -p guest-libcuda`) and
//! the CUDA toolchain's headers with a C preprocessor (`cc`, which nvcc needs too).

use std::collections::BTreeSet;
use std::process::Command;

use vcuda_tests::require_toolchain;
use vcuda_tests::shim;
use vcuda_tests::toolchain;

/// `CUDA_ERROR_NOT_SUPPORTED`.
const NOT_SUPPORTED: i32 = 801;

/// The function names `cuda.h` declares after preprocessing with `defines`.
fn declared(include: &std::path::Path, defines: &[&str]) -> BTreeSet<String> {
    let out = Command::new("cc")
        .args(["-E", "-x", "c"])
        .args(defines)
        .arg(format!("-I{}", include.display()))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(b"#include <cuda.h>\n")?;
            }
            child.wait_with_output()
        })
        .expect("run `cc -E` on cuda.h (the C compiler nvcc uses)");
    assert!(out.status.success(), "cc -E cuda.h: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let flat: Vec<&str> = text.split_whitespace().collect();
    let mut names = BTreeSet::new();
    // `CUresult CUDAAPI cuName(` or `CUresult cuName(` (CUDAAPI expands to nothing on Linux).
    for (i, w) in flat.iter().enumerate() {
        if *w != "CUresult" {
            continue;
        }
        let next = match flat.get(i + 1) {
            Some(&"CUDAAPI") => flat.get(i + 2),
            n => n,
        };
        if let Some(n) = next {
            let name = n.split('(').next().unwrap_or("");
            if name.starts_with("cu") && (n.contains('(') || flat.get(i + 2) == Some(&"(")) {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn every_cuda_h_function_is_a_symbol_of_the_shim() {
    let tc = require_toolchain!(toolchain::toolchain());
    let lib_path = shim::profile_dir().join("libcuda.so");
    if !lib_path.is_file() {
        vcuda_tests::skip(format!(
            "{} not built (run `cargo build -p guest-libcuda` first)",
            lib_path.display()
        ));
        return;
    }
    let include = tc.cuda_root.join("include");
    let mut names = declared(&include, &[]);
    names.extend(declared(
        &include,
        &["-DCUDA_API_PER_THREAD_DEFAULT_STREAM"],
    ));
    assert!(
        names.len() > 400
            && names.contains("cuLinkCreate_v2")
            && names.contains("cuGraphLaunch_ptsz"),
        "parsing cuda.h found only {} functions",
        names.len()
    );
    // SAFETY: loading the shim runs no code beyond Rust's own initialisation (the shim connects
    // lazily, in cuInit).
    let lib = unsafe { libloading::Library::new(&lib_path) }.expect("dlopen the shim");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            // SAFETY: only the symbol's presence is checked; nothing is called.
            unsafe { lib.get::<*const ()>(n.as_bytes()) }.is_err()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of cuda.h's {} functions are not exported: {missing:?}",
        missing.len(),
        names.len()
    );
    // An unimplemented one answers as the shim documents.
    // SAFETY: the stub reads no argument and returns a CUresult.
    let begin_capture = unsafe {
        lib.get::<unsafe extern "C" fn() -> i32>(b"cuStreamBeginCapture_v2")
            .expect("cuStreamBeginCapture_v2")
    };
    // SAFETY: as above.
    assert_eq!(unsafe { begin_capture() }, NOT_SUPPORTED);
}
