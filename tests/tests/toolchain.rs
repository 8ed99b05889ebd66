//! The test toolchain itself: every kernel compiles with nvcc and NVRTC, fatbins parse with the
//! executor's image parser, host programs link, and outputs come from the cache the second time.

use host_executor::image::{self, EntryKind};
use vcuda_tests::kernels::{self, ALL};
use vcuda_tests::require_toolchain;
use vcuda_tests::toolchain::{self, Cudart};

#[test]
fn every_kernel_compiles_with_nvcc_and_nvrtc() {
    for file in ALL {
        let nvcc = require_toolchain!(file.nvcc_ptx());
        let nvrtc = require_toolchain!(file.nvrtc_ptx());
        for (who, ptx) in [("nvcc", &nvcc), ("nvrtc", &nvrtc)] {
            assert!(ptx.contains(".target sm_75"), "{who} {}", file.file);
            for entry in file.entries {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{who} PTX of {} lacks .entry {entry}",
                    file.file
                );
            }
            // Every PTX parses as an image (the path cuModuleLoadData takes).
            let parsed = image::parse(ptx.as_bytes()).unwrap();
            assert_eq!(parsed.best_ptx().as_deref(), Some(ptx.as_str()));
        }
    }
}

#[test]
fn fatbins_from_nvcc_parse() {
    let path = kernels::VADD.path();
    let plain = require_toolchain!(toolchain::compile_fatbin(&path, &[]));
    let multi = require_toolchain!(toolchain::compile_fatbin(
        &path,
        &[
            "-gencode",
            "arch=compute_75,code=sm_75",
            "-gencode",
            "arch=compute_80,code=[sm_80,compute_80]",
            "-Xfatbin",
            "-compress-all",
        ],
    ));
    let plain = image::parse(&plain).unwrap();
    assert_eq!(plain.archs(EntryKind::Elf), [75]);
    assert_eq!(plain.archs(EntryKind::Ptx), [75]);
    let multi = image::parse(&multi).unwrap();
    assert_eq!(multi.archs(EntryKind::Elf), [75, 80]);
    assert_eq!(multi.archs(EntryKind::Ptx), [80]);
    let best = multi.best_ptx().unwrap();
    assert!(best.contains(".entry saxpy("));
}

#[test]
fn nvrtc_reports_compile_errors() {
    let err = require_toolchain!(match toolchain::nvrtc_compile(
        "extern \"C\" __global__ void broken(int *p) { p[0] = undefined_name; }",
        "broken.cu",
        &[],
    ) {
        Ok(ptx) => panic!("compiled: {ptx}"),
        Err(e) if e.is_missing() => Err(e),
        Err(e) => Ok(e),
    });
    let text = err.to_string();
    assert!(text.contains("undefined_name"), "{text}");
    assert!(!err.is_missing());
}

#[test]
fn host_programs_link_against_both_cudarts() {
    let source = kernels::programs_dir().join("vadd_runtime.cu");
    for cudart in [Cudart::Static, Cudart::Shared] {
        let exe = require_toolchain!(toolchain::compile_program(&source, cudart));
        assert!(exe.is_file(), "{}", exe.display());
        // Without a driver (no GPU, no vcuda shim) cudart reports it cleanly and fails.
        let out = std::process::Command::new(&exe)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cudart:?}: {stderr}");
        assert!(stderr.contains("vadd_runtime:"), "{cudart:?}: {stderr}");
    }
}

#[test]
fn second_compile_comes_from_the_cache() {
    let path = kernels::MATMUL.path();
    let file = require_toolchain!(toolchain::compile_ptx_file(&path, 80));
    let before = std::fs::metadata(&file).expect("cached PTX");
    let first = require_toolchain!(toolchain::compile_ptx(&path, 80));
    let again = require_toolchain!(toolchain::compile_ptx(&path, 80));
    assert_eq!(first, again);
    // Not a timing bound (a loaded 2-core host can stall anything for 100 ms): nvcc writes a
    // new file and renames it over the entry, so a recompile would change its inode.
    let after = std::fs::metadata(&file).expect("cached PTX");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "the second compile rewrote {}",
        file.display()
    );
    assert!(first.contains(".target sm_80"));
}
