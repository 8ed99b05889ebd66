//! `vcuda conform`: run a set of CUDA programs through the shim and say, for each, whether it
//! passed and if not why. The programs judge themselves by their exit status, as NVIDIA's
//! cuda-samples do (0 pass, 2 waived, anything else failure). With `--native`, each also runs
//! against the real driver, and the two exit statuses must agree.
//!
//! Programs come from directories (every executable file, two levels deep, so a build tree
//! with one directory per sample works) or from list files (one `PATH [ARGS...]` per line, `#`
//! comments). Each runs in its own directory, so it finds its data files, with stdin closed and
//! in its own process group, which a timeout kills whole.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::executor_cmd::BackendKind;

/// Arguments of `vcuda conform`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: vcuda conform --json report.json ~/cuda-samples-build\n\
    Exit status: 0 when every program passed or was waived, 1 otherwise."
)]
pub struct ConformArgs {
    /// Backend of the executor each program runs on.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Also run each program natively (needs a GPU and its driver) and compare exit statuses.
    #[arg(long)]
    pub native: bool,
    /// Seconds one program may run (each way) before it is killed and counted as a timeout.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the results as JUnit XML (for CI dashboards).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Only programs whose name contains this.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Directories of programs, or list files (`PATH [ARGS...]` per line).
    #[arg(required = true, value_name = "DIR|LIST")]
    pub programs: Vec<PathBuf>,
}

/// Why `vcuda conform` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no programs found in {0:?}")]
    Empty(Vec<PathBuf>),
    #[error("--timeout {0}: expected a positive number of seconds")]
    Timeout(f64),
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConformError + '_ {
    move |source| ConformError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One program to run.
#[derive(Debug, Clone)]
struct Program {
    name: String,
    path: PathBuf,
    args: Vec<String>,
}

/// How one run ended.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    /// Exit status, or 128 + signal.
    status: i32,
    timed_out: bool,
    seconds: f64,
    stdout_tail: String,
    stderr_tail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Pass,
    Waived,
    Fail,
}

/// One program's result.
#[derive(Debug, Clone, Serialize)]
struct Entry {
    name: String,
    path: PathBuf,
    verdict: Verdict,
    reason: String,
    shim: RunResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    native: Option<RunResult>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    passed: usize,
    waived: usize,
    failed: usize,
    /// Failure reasons, by how many programs share them (most first in the printout).
    reasons: BTreeMap<String, usize>,
    programs: Vec<Entry>,
}

/// cuda-samples' `EXIT_WAIVED`: the program's requirements are not met (and it says which).
const EXIT_WAIVED: i32 = 2;
/// Bytes of each stream kept for the report.
const TAIL: usize = 4096;

pub fn run(args: ConformArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(ConformError::Timeout(args.timeout).into());
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut programs = Vec::new();
    for p in &args.programs {
        collect(p, &mut programs)?;
    }
    if let Some(f) = &args.filter {
        programs.retain(|p| p.name.contains(f.as_str()));
    }
    if programs.is_empty() {
        return Err(ConformError::Empty(args.programs.clone()).into());
    }
    let vcuda = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let backend = match args.backend {
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
        BackendKind::Auto => "auto",
    };
    let width = programs
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let total = programs.len();
    let mut entries = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        let mut cmd = Command::new(&vcuda);
        cmd.args(["exec", "--backend", backend, "--"])
            .arg(&p.path)
            .args(&p.args);
        let shim = run_one(cmd, p, timeout)?;
        let native = if args.native {
            let mut cmd = Command::new(&p.path);
            cmd.args(&p.args);
            Some(run_one(cmd, p, timeout)?)
        } else {
            None
        };
        let (verdict, reason) = judge(&shim, native.as_ref(), args.timeout);
        eprintln!(
            "[{:>3}/{total}] {:<width$} {:<6} {:>7.1} s  {reason}",
            i + 1,
            p.name,
            match verdict {
                Verdict::Pass => "pass",
                Verdict::Waived => "waived",
                Verdict::Fail => "FAIL",
            },
            shim.seconds,
        );
        entries.push(Entry {
            name: p.name.clone(),
            path: p.path.clone(),
            verdict,
            reason,
            shim,
            native,
        });
    }
    let count = |v| entries.iter().filter(|e| e.verdict == v).count();
    let mut reasons = BTreeMap::new();
    for e in entries.iter().filter(|e| e.verdict == Verdict::Fail) {
        *reasons.entry(reason_class(&e.reason)).or_insert(0) += 1;
    }
    let report = Report {
        backend: backend.to_string(),
        passed: count(Verdict::Pass),
        waived: count(Verdict::Waived),
        failed: count(Verdict::Fail),
        reasons,
        programs: entries,
    };
    let judged = report.passed + report.failed;
    println!(
        "{} programs: {} passed, {} failed, {} waived ({:.1}% of those not waived pass)",
        total,
        report.passed,
        report.failed,
        report.waived,
        if judged == 0 {
            0.0
        } else {
            100.0 * report.passed as f64 / judged as f64
        }
    );
    let mut by_count: Vec<_> = report.reasons.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in by_count {
        println!("  {n:>4}  {reason}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?).map_err(io(path))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&report)).map_err(io(path))?;
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Adds the programs at `path` (a directory or a list file).
fn collect(path: &Path, out: &mut Vec<Program>) -> Result<(), ConformError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_dir() {
        let mut found = Vec::new();
        walk(path, 2, &mut found)?;
        found.sort();
        for p in found {
            let name = p
                .strip_prefix(path)
                .unwrap_or(&p)
                .with_extension("")
                .to_string_lossy()
                .into_owned();
            out.push(Program {
                name,
                path: p,
                args: Vec::new(),
            });
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(prog) = words.next() else { continue };
        let prog = base.join(prog);
        let name = prog
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| prog.display().to_string());
        out.push(Program {
            name,
            path: prog,
            args: words.map(str::to_owned).collect(),
        });
    }
    Ok(())
}

/// Executable regular files under `dir`, at most `depth` levels down (no libraries).
fn walk(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) -> Result<(), ConformError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_dir() {
            if depth > 1 {
                walk(&path, depth - 1, out)?;
            }
        } else if meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
            && !name.contains(".so")
            && !name.ends_with(".sh")
            && !name.ends_with(".py")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs `cmd` for `p` in its directory, in a new process group, killed whole at `timeout`.
fn run_one(mut cmd: Command, p: &Program, timeout: Duration) -> Result<RunResult, ConformError> {
    let dir = p.path.parent().unwrap_or(Path::new("."));
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(io(&p.path))?;
    // Drain both pipes on threads, so a chatty program never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io(&p.path))? {
            break s;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            // SAFETY: kill(2) with a negative pid signals the process group this function
            // created for the child (`process_group(0)`); it touches no memory.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            break child.wait().map_err(io(&p.path))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = start.elapsed().as_secs_f64();
    let tail = |h: std::thread::JoinHandle<Vec<u8>>| {
        let v = h.join().unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&v[v.len().saturating_sub(TAIL)..]))
    };
    Ok(RunResult {
        status: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        timed_out,
        seconds,
        stdout_tail: tail(out),
        stderr_tail: tail(err),
    })
}

/// The verdict on one program, and the reason when it did not pass.
fn judge(shim: &RunResult, native: Option<&RunResult>, timeout: f64) -> (Verdict, String) {
    if shim.timed_out {
        return (Verdict::Fail, format!("timeout after {timeout} s"));
    }
    if let Some(n) = native {
        if n.timed_out {
            return (Verdict::Fail, "native run timed out".into());
        }
        if n.status != shim.status {
            return (
                Verdict::Fail,
                format!(
                    "exit {} through the shim, {} natively: {}",
                    shim.status,
                    n.status,
                    why(shim)
                ),
            );
        }
    }
    match shim.status {
        0 => (Verdict::Pass, String::new()),
        EXIT_WAIVED => (
            Verdict::Waived,
            format!(
                "waived: {}",
                last_line(&shim.stdout_tail, &shim.stderr_tail)
            ),
        ),
        s if s > 128 => (
            Verdict::Fail,
            format!("crashed (signal {}): {}", s - 128, why(shim)),
        ),
        s => (Verdict::Fail, format!("exit {s}: {}", why(shim))),
    }
}

/// The most telling line of a failed run: what the shim or the executor said, else the
/// program's own last words.
fn why(r: &RunResult) -> String {
    const TELLING: &[&str] = &[
        "is not supported by the vcuda shim",
        "unsupported",
        "not supported",
        "NO_BINARY_FOR_GPU",
        "no binary",
        "illegal address",
        "too many",
    ];
    for needle in TELLING {
        if let Some(l) = r
            .stderr_tail
            .lines()
            .chain(r.stdout_tail.lines())
            .find(|l| l.contains(needle))
        {
            return l.trim().to_string();
        }
    }
    last_line(&r.stdout_tail, &r.stderr_tail)
}

/// `s` without ANSI escape sequences (colours a program or its log prints).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn last_line(stdout: &str, stderr: &str) -> String {
    stderr
        .lines()
        .chain(stdout.lines())
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// A failure reason without its specifics (numbers, addresses), to group programs by cause.
fn reason_class(reason: &str) -> String {
    if let Some(i) = reason.find("vcuda: ") {
        if let Some(name) = reason[i + 7..].split_whitespace().next() {
            if reason.contains("is not supported by the vcuda shim") {
                return format!("unsupported entry point {name}");
            }
        }
    }
    let mut out = String::new();
    let mut last_digit = false;
    for c in reason.chars().take(120) {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn junit(r: &Report) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"vcuda conform ({})\" \
         tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
        r.backend,
        r.programs.len(),
        r.failed,
        r.waived
    );
    for e in &r.programs {
        s.push_str(&format!(
            "  <testcase name=\"{}\" time=\"{:.3}\">",
            xml_escape(&e.name),
            e.shim.seconds
        ));
        match e.verdict {
            Verdict::Pass => {}
            Verdict::Waived => {
                s.push_str(&format!("<skipped message=\"{}\"/>", xml_escape(&e.reason)))
            }
            Verdict::Fail => s.push_str(&format!(
                "<failure message=\"{}\">{}</failure>",
                xml_escape(&e.reason),
                xml_escape(&e.shim.stderr_tail)
            )),
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: i32, stdout: &str, stderr: &str) -> RunResult {
        RunResult {
            status,
            timed_out: false,
            seconds: 0.1,
            stdout_tail: stdout.into(),
            stderr_tail: stderr.into(),
        }
    }

    #[test]
    fn verdicts_follow_the_samples_exit_convention_and_name_the_cause() {
        assert_eq!(judge(&result(0, "", ""), None, 1.0).0, Verdict::Pass);
        let (v, why) = judge(&result(2, "Requires SM 9.0\n", ""), None, 1.0);
        assert_eq!(
            (v, why.as_str()),
            (Verdict::Waived, "waived: Requires SM 9.0")
        );
        let stderr = "noise\nvcuda: cuGraphCreate is not supported by the vcuda shim; returning \
                      CUDA_ERROR_NOT_SUPPORTED\nmore noise\n";
        let (v, why) = judge(&result(1, "FAILED\n", stderr), None, 1.0);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(reason_class(&why), "unsupported entry point cuGraphCreate");
        let (v, why) = judge(&result(139, "", ""), None, 1.0);
        assert!(
            v == Verdict::Fail && why.starts_with("crashed (signal 11)"),
            "{why}"
        );
        let mut t = result(0, "", "");
        t.timed_out = true;
        assert!(judge(&t, None, 5.0).1.contains("timeout"));
        // Natively 0, through the shim 1: a failure even if the program printed PASS.
        let (v, _) = judge(&result(1, "PASS", ""), Some(&result(0, "", "")), 1.0);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(
            reason_class("exit 1: error at 0x1234, line 56"),
            "exit N: error at NxN, line N"
        );
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("vcuda-conform-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = Program {
            name: "sleeper".into(),
            path: dir.join("x"),
            args: vec![],
        };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let t0 = Instant::now();
        let r = run_one(cmd, &prog, Duration::from_millis(300)).unwrap();
        assert!(r.timed_out);
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn junit_escapes_what_programs_print() {
        let e = Entry {
            name: "a<b>".into(),
            path: "x".into(),
            verdict: Verdict::Fail,
            reason: "\"quoted\" & more".into(),
            shim: result(1, "", "bad\u{1}byte <tag>"),
            native: None,
        };
        let xml = junit(&Report {
            backend: "cpu".into(),
            passed: 0,
            waived: 0,
            failed: 1,
            reasons: BTreeMap::new(),
            programs: vec![e],
        });
        assert!(xml.contains("name=\"a&lt;b&gt;\""), "{xml}");
        assert!(xml.contains("&quot;quoted&quot; &amp; more"), "{xml}");
        assert!(xml.contains("badbyte &lt;tag&gt;"), "{xml}");
    }
}
