//! The CUDA 13 toolchain (nvcc, NVRTC) that `scripts/setup.sh` installs, and cached compiles.
//!
//! Discovery: `VCUDA_NVCC`, `VCUDA_CUDA_ROOT` and `VCUDA_NVRTC` from the environment
//! (`eval "$(scripts/setup.sh --env)"`); whatever is unset comes from running
//! `scripts/setup.sh --env` in the workspace. Nothing is installed from here: a toolchain that
//! is not there is a [`ToolchainError::Missing`], which tests turn into a skip with
//! [`require_toolchain!`](crate::require_toolchain).
//!
//! Every output is cached by a 128-bit hash of the source, the options, the kind of output and
//! the compiler's identity, under `$VCUDA_CACHE/kernels` when `VCUDA_CACHE` is set, else
//! `target/vcuda-kernels` in the workspace, so repeated runs do not recompile. Sources must be
//! self-contained (toolkit headers only): local `#include`s are not part of the key.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use twox_hash::XxHash3_128;

/// The default arch of nvcc 13 and of our PTX: sm_75.
pub const DEFAULT_ARCH: u32 = 75;

/// Why a compile could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// A part of the toolchain is not installed: tests skip, saying what is missing.
    #[error("{what} not found ({detail}); run scripts/setup.sh to install the CUDA toolchain")]
    Missing { what: &'static str, detail: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// nvcc (or setup.sh) ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// libnvrtc is there but could not be loaded.
    #[error("loading {path}: {message}")]
    NvrtcLoad { path: PathBuf, message: String },
    /// An NVRTC call failed; `log` is the program log when there is one.
    #[error("NVRTC {call} on {name} failed with {code} ({message}):\n{log}")]
    Nvrtc {
        call: &'static str,
        name: String,
        code: i32,
        message: String,
        log: String,
    },
}

impl ToolchainError {
    /// Whether the error means "not installed" (skip) rather than "broken" (fail).
    pub fn is_missing(&self) -> bool {
        matches!(self, ToolchainError::Missing { .. })
    }
}

type Result<T> = std::result::Result<T, ToolchainError>;

/// Unwraps a toolchain result in a test; when the toolchain is missing, prints why and returns
/// from the test (a visible skip, never a pass that checked nothing). Other errors fail the test.
///
/// ```no_run
/// # fn test() {
/// let ptx = vcuda_tests::require_toolchain!(vcuda_tests::toolchain::compile_ptx(
///     &vcuda_tests::kernels::VADD.path(),
///     75
/// ));
/// # }
/// ```
#[macro_export]
macro_rules! require_toolchain {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) if $crate::toolchain::ToolchainError::is_missing(&e) => {
                $crate::skip(&e);
                return;
            }
            Err(e) => panic!("{}", e),
        }
    };
}

/// How a host program links the CUDA runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cudart {
    /// `-cudart static` (nvcc's default): libcudart_static.a inside the executable.
    Static,
    /// `-cudart shared`: libcudart.so.13, found through an rpath to the toolchain.
    Shared,
}

/// The located toolchain.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub nvcc: PathBuf,
    pub cuda_root: PathBuf,
    pub nvrtc: PathBuf,
    cache: PathBuf,
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// The toolchain, located once per process.
pub fn toolchain() -> Result<&'static Toolchain> {
    static TOOLCHAIN: OnceLock<std::result::Result<Toolchain, String>> = OnceLock::new();
    TOOLCHAIN
        .get_or_init(|| Toolchain::locate().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|detail| ToolchainError::Missing {
            what: "CUDA toolchain",
            detail: detail.clone(),
        })
}

impl Toolchain {
    fn locate() -> Result<Self> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let (mut nvcc, mut root, mut nvrtc) = (
            var("VCUDA_NVCC"),
            var("VCUDA_CUDA_ROOT"),
            var("VCUDA_NVRTC"),
        );
        if nvcc.is_none() || root.is_none() || nvrtc.is_none() {
            for (key, value) in setup_env()? {
                let slot = match key.as_str() {
                    "VCUDA_NVCC" => &mut nvcc,
                    "VCUDA_CUDA_ROOT" => &mut root,
                    "VCUDA_NVRTC" => &mut nvrtc,
                    _ => continue,
                };
                slot.get_or_insert(value.into());
            }
        }
        let missing = |what| ToolchainError::Missing {
            what,
            detail: "neither the environment nor scripts/setup.sh --env names it".into(),
        };
        let cache = match var("VCUDA_CACHE") {
            Some(dir) => PathBuf::from(dir).join("kernels"),
            None => workspace_root().join("target").join("vcuda-kernels"),
        };
        Ok(Self {
            nvcc: nvcc.ok_or_else(|| missing("nvcc"))?.into(),
            cuda_root: root.ok_or_else(|| missing("CUDA root"))?.into(),
            nvrtc: nvrtc.ok_or_else(|| missing("libnvrtc"))?.into(),
            cache,
        })
    }

    fn require_nvcc(&self) -> Result<()> {
        if self.nvcc.is_file() {
            return Ok(());
        }
        Err(ToolchainError::Missing {
            what: "nvcc",
            detail: format!("no file at {}", self.nvcc.display()),
        })
    }

    /// Compiles a `.cu` file to PTX for `sm_<arch>` (`nvcc -ptx -arch=sm_<arch>`).
    pub fn compile_ptx(&self, source: &Path, arch: u32) -> Result<String> {
        let path = self.compile_ptx_file(source, arch)?;
        std::fs::read_to_string(&path).map_err(|e| io(&path, e))
    }

    /// [`Toolchain::compile_ptx`], returning the cached file's path (do not modify it).
    pub fn compile_ptx_file(&self, source: &Path, arch: u32) -> Result<PathBuf> {
        let arch = format!("-arch=sm_{arch}");
        self.nvcc_cached(source, "ptx", &["-ptx", &arch])
    }

    /// Compiles a `.cu` file to a fatbin (`nvcc -fatbin <args>`), e.g. with
    /// `["-gencode", "arch=compute_80,code=[sm_80,compute_80]"]` or
    /// `["-Xfatbin", "-compress-all"]`.
    pub fn compile_fatbin(&self, source: &Path, args: &[&str]) -> Result<Vec<u8>> {
        let mut all = vec!["-fatbin"];
        all.extend_from_slice(args);
        let path = self.nvcc_cached(source, "fatbin", &all)?;
        std::fs::read(&path).map_err(|e| io(&path, e))
    }

    /// Compiles and links a host program (`.cu` with `main`) against the toolchain's cudart;
    /// returns the executable's path (in the cache: do not modify it).
    pub fn compile_program(&self, source: &Path, cudart: Cudart) -> Result<PathBuf> {
        let lib = self.cuda_root.join("lib");
        let lib_dir = format!("-L{}", lib.display());
        let mut args = vec![lib_dir];
        match cudart {
            Cudart::Static => args.extend(["-cudart".into(), "static".into()]),
            Cudart::Shared => args.extend([
                "-cudart".into(),
                "shared".into(),
                "-Xlinker".into(),
                format!("-rpath={}", lib.display()),
            ]),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nvcc_cached(source, "bin", &args)
    }

    /// Runs nvcc on `source` with `args` into the cache (if not there yet); returns the output.
    fn nvcc_cached(&self, source: &Path, ext: &str, args: &[&str]) -> Result<PathBuf> {
        self.require_nvcc()?;
        let text = std::fs::read(source).map_err(|e| io(source, e))?;
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("kernel");
        let key = self.key("nvcc", ext, args, &text);
        let out = self.cache.join(format!("{stem}-{key}.{ext}"));
        if out.is_file() {
            return Ok(out);
        }
        let tmp = self.temp_path(&out)?;
        let mut cmd = Command::new(&self.nvcc);
        cmd.args(args).arg(source).arg("-o").arg(&tmp);
        let output = cmd.output().map_err(|e| io(&self.nvcc, e))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(ToolchainError::Command {
                command: format!("{cmd:?}"),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        std::fs::rename(&tmp, &out).map_err(|e| io(&out, e))?;
        Ok(out)
    }

    /// Compiles CUDA C `source` to PTX with NVRTC (no GPU needed). `name` is the program's
    /// file name in diagnostics; `options` are NVRTC options such as
    /// `--gpu-architecture=compute_75` (NVRTC 13 defaults to compute_75).
    pub fn nvrtc_compile(&self, source: &str, name: &str, options: &[&str]) -> Result<String> {
        let key = self.key("nvrtc", name, options, source.as_bytes());
        let out = self.cache.join(format!("nvrtc-{key}.ptx"));
        if let Ok(ptx) = std::fs::read_to_string(&out) {
            return Ok(ptx);
        }
        let ptx = nvrtc(&self.nvrtc)?.compile(source, name, options)?;
        let tmp = self.temp_path(&out)?;
        std::fs::write(&tmp, &ptx).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &out).map_err(|e| io(&out, e))?;
        Ok(ptx)
    }

    /// The cache key: the compiler's identity, what is asked of it, and the source.
    fn key(&self, tool: &str, what: &str, args: &[&str], source: &[u8]) -> String {
        let mut h = XxHash3_128::new();
        let compiler = if tool == "nvrtc" {
            &self.nvrtc
        } else {
            &self.nvcc
        };
        let identity = std::fs::metadata(compiler)
            .map(|m| format!("{}:{:?}", m.len(), m.modified().ok()))
            .unwrap_or_default();
        for part in [tool, what, &compiler.to_string_lossy(), &identity] {
            h.write(part.as_bytes());
            h.write(&[0]);
        }
        for arg in args {
            h.write(arg.as_bytes());
            h.write(&[0]);
        }
        h.write(source);
        format!("{:032x}", h.finish_128())
    }

    /// A unique temporary path beside `out` (renamed into place: concurrent tests never see
    /// half-written outputs).
    fn temp_path(&self, out: &Path) -> Result<PathBuf> {
        static N: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.cache).map_err(|e| io(&self.cache, e))?;
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(format!(
            ".tmp{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Ok(out.with_file_name(name))
    }
}

/// Every installed toolkit of the matrix (`VCUDA_CUDA_MATRIX`, `:`-separated CUDA roots, the
/// pinned one first), each with its `CUDA_VERSION` from `cuda.h`.
pub fn matrix() -> Result<Vec<(u32, Toolchain)>> {
    let base = toolchain()?;
    let roots = match std::env::var("VCUDA_CUDA_MATRIX") {
        Ok(v) if !v.is_empty() => v,
        _ => setup_env()?
            .into_iter()
            .find(|(k, _)| k == "VCUDA_CUDA_MATRIX")
            .map(|(_, v)| v)
            .unwrap_or_else(|| base.cuda_root.to_string_lossy().into_owned()),
    };
    let mut out = Vec::new();
    for root in roots.split(':').filter(|r| !r.is_empty()) {
        let root = PathBuf::from(root);
        let header = root.join("include").join("cuda.h");
        let text = std::fs::read_to_string(&header).map_err(|e| io(&header, e))?;
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("#define CUDA_VERSION "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ToolchainError::Missing {
                what: "CUDA_VERSION",
                detail: format!("not defined in {}", header.display()),
            })?;
        out.push((
            version,
            Toolchain {
                nvcc: root.join("bin").join("nvcc"),
                nvrtc: root.join("lib").join("libnvrtc.so.13"),
                cuda_root: root,
                cache: base.cache.clone(),
            },
        ));
    }
    Ok(out)
}

/// [`Toolchain::compile_ptx`] on the process's toolchain.
pub fn compile_ptx(source: &Path, arch: u32) -> Result<String> {
    toolchain()?.compile_ptx(source, arch)
}

/// [`Toolchain::compile_ptx_file`] on the process's toolchain.
pub fn compile_ptx_file(source: &Path, arch: u32) -> Result<PathBuf> {
    toolchain()?.compile_ptx_file(source, arch)
}

/// [`Toolchain::compile_fatbin`] on the process's toolchain.
pub fn compile_fatbin(source: &Path, args: &[&str]) -> Result<Vec<u8>> {
    toolchain()?.compile_fatbin(source, args)
}

/// [`Toolchain::compile_program`] on the process's toolchain.
pub fn compile_program(source: &Path, cudart: Cudart) -> Result<PathBuf> {
    toolchain()?.compile_program(source, cudart)
}

/// [`Toolchain::nvrtc_compile`] on the process's toolchain.
pub fn nvrtc_compile(source: &str, name: &str, options: &[&str]) -> Result<String> {
    toolchain()?.nvrtc_compile(source, name, options)
}

fn io(path: &Path, source: std::io::Error) -> ToolchainError {
    ToolchainError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The `export KEY='VALUE'` lines of `scripts/setup.sh --env`.
fn setup_env() -> Result<Vec<(String, String)>> {
    let script = workspace_root().join("scripts").join("setup.sh");
    if !script.is_file() {
        return Err(ToolchainError::Missing {
            what: "scripts/setup.sh",
            detail: format!("no file at {}", script.display()),
        });
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg("--env")
        .output()
        .map_err(|e| io(&script, e))?;
    if !output.status.success() {
        return Err(ToolchainError::Command {
            command: format!("bash {} --env", script.display()),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(parse_exports(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().strip_prefix("export ")?.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

// NVRTC through dlopen.

type NvrtcResult = c_int;
type NvrtcProgram = *mut std::ffi::c_void;

/// The NVRTC entry points we use, from a library kept loaded for the process's lifetime.
struct Nvrtc {
    create: unsafe extern "C" fn(
        *mut NvrtcProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile: unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> NvrtcResult,
    ptx_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcResult,
    ptx: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> NvrtcResult,
    log_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcResult,
    log: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> NvrtcResult,
    destroy: unsafe extern "C" fn(*mut NvrtcProgram) -> NvrtcResult,
    error_string: unsafe extern "C" fn(NvrtcResult) -> *const c_char,
    _libs: [libloading::os::unix::Library; 2],
}

/// Loads libnvrtc once; later calls share it.
fn nvrtc(path: &Path) -> Result<&'static Nvrtc> {
    static NVRTC: OnceLock<std::result::Result<Nvrtc, (bool, String)>> = OnceLock::new();
    let loaded =
        NVRTC.get_or_init(|| Nvrtc::load(path).map_err(|e| (e.is_missing(), e.to_string())));
    match loaded {
        Ok(nvrtc) => Ok(nvrtc),
        Err((true, detail)) => Err(ToolchainError::Missing {
            what: "libnvrtc",
            detail: detail.clone(),
        }),
        Err((false, message)) => Err(ToolchainError::NvrtcLoad {
            path: path.to_owned(),
            message: message.clone(),
        }),
    }
}

impl Nvrtc {
    fn load(path: &Path) -> Result<Self> {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        if !path.is_file() {
            return Err(ToolchainError::Missing {
                what: "libnvrtc",
                detail: format!("no file at {}", path.display()),
            });
        }
        let load_error = |e: libloading::Error| ToolchainError::NvrtcLoad {
            path: path.to_owned(),
            message: e.to_string(),
        };
        // libnvrtc dlopens "libnvrtc-builtins.so.13.0" by bare name, which the loader finds
        // only on LD_LIBRARY_PATH; loaded first (globally) from beside it, it is found by its
        // soname instead.
        let dir = path.parent().unwrap_or(Path::new("."));
        let builtins_path = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
            })
            .ok_or_else(|| ToolchainError::Missing {
                what: "libnvrtc-builtins",
                detail: format!("none in {}", dir.display()),
            })?;
        // SAFETY: NVRTC's libraries have no initialisers with requirements on the caller; both
        // stay loaded for the rest of the process (they live in a static).
        let builtins = unsafe { Library::open(Some(&builtins_path), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(load_error)?;
        // SAFETY: as above.
        let lib = unsafe { Library::open(Some(path), RTLD_NOW) }.map_err(load_error)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol has the C signature of the field it is stored in (NVRTC's
                // public header nvrtc.h), and the library outlives the pointer (see _libs).
                *unsafe { lib.get($name) }.map_err(load_error)?
            };
        }
        Ok(Self {
            create: sym!("nvrtcCreateProgram"),
            compile: sym!("nvrtcCompileProgram"),
            ptx_size: sym!("nvrtcGetPTXSize"),
            ptx: sym!("nvrtcGetPTX"),
            log_size: sym!("nvrtcGetProgramLogSize"),
            log: sym!("nvrtcGetProgramLog"),
            destroy: sym!("nvrtcDestroyProgram"),
            error_string: sym!("nvrtcGetErrorString"),
            _libs: [builtins, lib],
        })
    }

    fn compile(&self, source: &str, name: &str, options: &[&str]) -> Result<String> {
        let fail = |call, code, log: String| ToolchainError::Nvrtc {
            call,
            name: name.to_owned(),
            code,
            message: self.message(code),
            log,
        };
        let c = |s: &str, call| CString::new(s).map_err(|_| fail(call, -1, "NUL in input".into()));
        let c_source = c(source, "source")?;
        let c_name = c(name, "name")?;
        let c_options = options
            .iter()
            .map(|o| c(o, "options"))
            .collect::<Result<Vec<_>>>()?;
        let option_ptrs: Vec<*const c_char> = c_options.iter().map(|o| o.as_ptr()).collect();
        let count = c_int::try_from(option_ptrs.len()).unwrap_or(c_int::MAX);

        let mut program: NvrtcProgram = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated strings; no headers.
        let code = unsafe {
            (self.create)(
                &mut program,
                c_source.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if code != 0 {
            return Err(fail("nvrtcCreateProgram", code, String::new()));
        }
        let result = self.compile_program(program, &option_ptrs, count, &fail);
        // SAFETY: `program` was created above and is destroyed once.
        unsafe { (self.destroy)(&mut program) };
        result
    }

    fn compile_program(
        &self,
        program: NvrtcProgram,
        options: &[*const c_char],
        count: c_int,
        fail: &dyn Fn(&'static str, c_int, String) -> ToolchainError,
    ) -> Result<String> {
        // SAFETY: `options` holds `count` pointers to live NUL-terminated strings.
        let code = unsafe { (self.compile)(program, count, options.as_ptr()) };
        if code != 0 {
            return Err(fail("nvrtcCompileProgram", code, self.program_log(program)));
        }
        let mut size = 0usize;
        // SAFETY: valid program and out-pointer.
        let code = unsafe { (self.ptx_size)(program, &mut size) };
        if code != 0 {
            return Err(fail("nvrtcGetPTXSize", code, String::new()));
        }
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` holds the `size` bytes NVRTC said it writes.
        let code = unsafe { (self.ptx)(program, buf.as_mut_ptr().cast()) };
        if code != 0 {
            return Err(fail("nvrtcGetPTX", code, String::new()));
        }
        Ok(c_buffer_to_string(buf))
    }

    fn program_log(&self, program: NvrtcProgram) -> String {
        let mut size = 0usize;
        // SAFETY: valid program and out-pointer.
        if unsafe { (self.log_size)(program, &mut size) } != 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` holds the `size` bytes NVRTC said it writes.
        if unsafe { (self.log)(program, buf.as_mut_ptr().cast()) } != 0 {
            return String::new();
        }
        c_buffer_to_string(buf)
    }

    fn message(&self, code: c_int) -> String {
        // SAFETY: nvrtcGetErrorString accepts any value and returns a static string or NULL.
        let text = unsafe { (self.error_string)(code) };
        if text.is_null() {
            return format!("NVRTC error {code}");
        }
        // SAFETY: non-null pointers from nvrtcGetErrorString are static C strings.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

fn c_buffer_to_string(mut buf: Vec<u8>) -> String {
    if let Some(nul) = buf.iter().position(|&b| b == 0) {
        buf.truncate(nul);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_setup_exports() {
        let got = parse_exports("export A='/x y'\nnoise\nexport B=plain\n");
        assert_eq!(
            got,
            [("A".into(), "/x y".into()), ("B".into(), "plain".into())]
        );
    }

    #[test]
    fn missing_is_a_skip_other_errors_are_not() {
        let missing = ToolchainError::Missing {
            what: "nvcc",
            detail: "no file".into(),
        };
        assert!(missing.is_missing());
        assert!(missing.to_string().contains("scripts/setup.sh"));
        let failed = ToolchainError::Command {
            command: "nvcc".into(),
            status: "exit status: 1".into(),
            stderr: "error".into(),
        };
        assert!(!failed.is_missing());
    }
}
