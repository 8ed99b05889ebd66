//! The test programs built by every toolkit of the matrix (the pinned CUDA 13.0 and the newest
//! on pip, installed by `scripts/setup.sh`), with static and with shared cudart, run unmodified
//! through the shim (`vcuda exec`, cpu backend). A runtime newer than the shim's headers asks
//! for export tables and slots the older one did not (cudart 13.2+ fails to start without them),
//! and for driver behaviour it did not use.

use std::process::Command;

use vcuda_tests::require_toolchain;
use vcuda_tests::shim;
use vcuda_tests::toolchain::{self, Cudart};

#[test]
fn test_programs_of_every_toolkit_pass_through_the_shim() {
    let vcuda = match shim::vcuda_bin().and_then(|bin| shim::shim_dir().map(|_| bin)) {
        Ok(bin) => bin,
        Err(why) => {
            vcuda_tests::skip(why);
            return;
        }
    };
    let matrix = require_toolchain!(toolchain::matrix());
    let versions: Vec<u32> = matrix.iter().map(|(v, _)| *v).collect();
    eprintln!("toolkits: {versions:?}");
    let mut failures = Vec::new();
    for (version, tc) in &matrix {
        for program in ["runtime_api", "runtime_more"] {
            for cudart in [Cudart::Static, Cudart::Shared] {
                let source = shim::program(&format!("{program}.cu"));
                let what = format!("{program} (CUDA {version}, {cudart:?} cudart)");
                let bin = match tc.compile_program(&source, cudart) {
                    Ok(bin) => bin,
                    Err(e) => {
                        failures.push(format!("{what}: nvcc: {e}"));
                        continue;
                    }
                };
                let out = Command::new(&vcuda)
                    .args(["exec", "--backend", "cpu", "--"])
                    .arg(&bin)
                    .output()
                    .expect("run vcuda exec");
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() || !stdout.contains(&format!("PASS {program}")) {
                    failures.push(format!(
                        "{what}: {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                        out.status
                    ));
                } else if !stderr.trim().is_empty() {
                    // Quiet by default: a program's own output only.
                    failures.push(format!(
                        "{what}: passed but the shim wrote to stderr:\n{stderr}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if versions.len() < 2 {
        vcuda_tests::skip(format!(
            "only CUDA {versions:?} installed (scripts/setup.sh installs the newest toolkit too)"
        ));
    }
}
