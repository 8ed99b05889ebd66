//! Gives the cdylib the soname of the real driver, so that programs linked against it (and
//! `ldd`) name `libcuda.so.1`. `scripts/link.sh` puts `libcuda.so.1`/`libcuda.so` links next to
//! the built library.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
