#!/usr/bin/env python3
"""Builds NVIDIA's cuda-samples (headless, single-GPU) with the pip CUDA toolchain, no CMake.

    scripts/cuda-samples.py build --src CUDA_SAMPLES_CHECKOUT --out DIR [--jobs N] [--filter TEXT]

Each sample's CMakeLists.txt is read for what CMake would do: `add_executable` (sources),
`target_link_libraries` (CUDA::cuda_driver -> the vcuda shim's libcuda.so, CUDA::nvrtc, ...),
`CUDA_SEPARABLE_COMPILATION` (-rdc=true, as CMake builds it), the custom commands that build a
kernel fatbin or PTX next to the binary, and the files it copies there. The code is built for
sm_75 SASS plus compute_75 PTX (CMake's list of SASS targets only grows the binaries, and the cpu
backend runs the PTX). Each sample lands in DIR/<sample>/ with its data files; `vcuda conform
DIR` then runs them all.

Samples that need what a headless single-GPU machine without a display cannot have (OpenGL, EGL,
Vulkan, DirectX, NvSci, MPI, several GPUs) are listed, with the reason, in DIR/excluded.tsv; build
failures (e.g. a library the pip toolkit lacks) in DIR/build-failures.tsv. Builds are cached: a
sample whose CMakeLists.txt and sources are unchanged is not rebuilt.

Needs: VCUDA_NVCC and VCUDA_CUDA_ROOT (scripts/setup.sh prints them), VCUDA_SHIM_DIR (a directory
holding the shim as libcuda.so; default: target/debug).
"""

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

GENCODE = ["-gencode", "arch=compute_75,code=[sm_75,compute_75]"]

# CMake targets -> what the link line needs (None: a capability this setting lacks).
LIBS = {
    "CUDA::cuda_driver": ["-lcuda"],
    "CUDA::cudart": [],
    "CUDA::cudart_static": [],
    "CUDA::nvrtc": ["-lnvrtc"],
    "CUDA::nvJitLink": ["-lnvJitLink"],
    "CUDA::cublas": ["-lcublas"],
    "CUDA::cublasLt": ["-lcublasLt"],
    "CUDA::cufft": ["-lcufft"],
    "CUDA::curand": ["-lcurand"],
    "CUDA::cusparse": ["-lcusparse"],
    "CUDA::cusolver": ["-lcusolver"],
    "CUDA::nppc": ["-lnppc"],
    "CUDA::nvml": ["-lnvidia-ml"],
    "OpenMP::OpenMP_CXX": ["-Xcompiler", "-fopenmp"],
}
# Words in a CMakeLists.txt that mean the sample needs a display, another API or several GPUs.
EXCLUDE = [
    (r"OpenGL|GLUT|GLEW|glfw", "OpenGL interop (needs a display)"),
    (r"\bEGL\b", "EGL interop (needs a display)"),
    (r"Vulkan", "Vulkan interop"),
    (r"NVSCI|NvSci|nvsci", "NvSci (Tegra/DRIVE only)"),
    (r"\bMPI\b", "MPI (several processes and GPUs)"),
    (r"DirectX|D3D|d3d", "DirectX interop (Windows)"),
    (r"X11", "X11 (needs a display)"),
    (r"libNVVM|nvvm", "libNVVM (a separate compiler library, not the driver API)"),
]
EXCLUDE_NAMES = {
    "simpleMultiGPU": "several GPUs",
    "simpleP2P": "several GPUs (peer access)",
    "p2pBandwidthLatencyTest": "several GPUs (peer access)",
    "conjugateGradientMultiDeviceCG": "several GPUs",
    "streamOrderedAllocationP2P": "several GPUs",
    "topologyQuery": "several GPUs",
    "simpleIPC": "several processes sharing one GPU through IPC (run by hand)",
}


def cmake_calls(text, name):
    """The argument lists of every `name(...)` call (nested parentheses allowed)."""
    out = []
    for m in re.finditer(r"\b" + name + r"\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def strip_comments(text):
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def plan(sample_dir, cuda_include, cuda_lib):
    """What to build for one sample: dict, or (None, reason) when excluded."""
    cm = strip_comments((sample_dir / "CMakeLists.txt").read_text(errors="replace"))
    name = sample_dir.name
    if name in EXCLUDE_NAMES:
        return None, EXCLUDE_NAMES[name]
    for pattern, reason in EXCLUDE:
        if re.search(pattern, cm):
            return None, reason
    execs = cmake_calls(cm, "add_executable")
    if not execs:
        return None, "no executable (a library or a helper)"
    words = execs[0].split()
    target, sources = words[0], [w for w in words[1:] if not w.startswith("$")]
    libs, missing = [], []
    for call in cmake_calls(cm, "target_link_libraries"):
        for w in call.split()[1:]:
            if w in ("PUBLIC", "PRIVATE", "INTERFACE"):
                continue
            if w in LIBS:
                libs += LIBS[w]
            elif w.startswith("CUDA::") or "::" in w:
                missing.append(w)
    if missing:
        return None, "needs " + ", ".join(sorted(set(missing)))
    absent = sorted({
        l[2:] for l in libs
        if l.startswith("-l") and l != "-lcuda" and not list(cuda_lib.glob(f"lib{l[2:]}.so*"))
    })
    if absent:
        return None, "needs lib" + ", lib".join(absent) + " (not in the pip toolchain this build uses)"
    rdc = "CUDA_SEPARABLE_COMPILATION ON" in cm
    includes = []
    for call in cmake_calls(cm, "include_directories") + cmake_calls(cm, "target_include_directories"):
        for w in call.split():
            if w.startswith("$") or w in ("PUBLIC", "PRIVATE", "INTERFACE", target):
                continue
            if (sample_dir / w).is_dir():
                includes.append(str((sample_dir / w).resolve()))
    extra = []
    if "--extended-lambda" in cm:
        extra.append("--extended-lambda")
    # Kernels built beside the binary: `set(CUDA_FATBIN_FILE ".../X.fatbin")` or `..._PTX_FILE`,
    # with `set(CUDA_KERNEL_SOURCE ".../Y.cu")`.
    side = []
    sets = dict(
        (m.group(1), m.group(2))
        for m in re.finditer(r"set\(\s*(\w+)\s+\"?([^\s\")]+)\"?\s*\)", cm)
    )
    src = sets.get("CUDA_KERNEL_SOURCE", "")
    for var, kind in (("CUDA_FATBIN_FILE", "fatbin"), ("CUDA_PTX_FILE", "ptx"), ("CUDA_CUBIN_FILE", "cubin")):
        if var in sets and src:
            side.append((kind, Path(sets[var]).name, Path(src.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")).name))
    # Files copied next to the binary (NVRTC samples copy their kernel and CUDA headers).
    copies = []
    for m in re.finditer(r"copy(_if_different|_directory)?\s+([^\n]*?)\s+\$\{CMAKE_CURRENT_BINARY_DIR\}(/[^\s)]*)?", cm):
        for f in m.group(2).split():
            f = f.replace("${CMAKE_CURRENT_SOURCE_DIR}", str(sample_dir)).replace("${CUDA_INCLUDE_DIR}", cuda_include)
            copies.append((f, m.group(3).lstrip("/") if m.group(3) else ""))
    return {
        "name": name,
        "target": target,
        "dir": sample_dir,
        "sources": sources,
        "libs": libs,
        "rdc": rdc,
        "includes": includes,
        "extra": extra,
        "side": side,
        "copies": copies,
    }, None


def digest(p):
    h = hashlib.sha256()
    for f in sorted(p["dir"].rglob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    h.update(repr((GENCODE, p["libs"], p["rdc"], p["extra"], p["includes"])).encode())
    return h.hexdigest()


def build(p, out, env):
    dst = out / p["name"]
    stamp = dst / ".vcuda-build"
    want = digest(p)
    if stamp.is_file() and stamp.read_text() == want:
        return p["name"], True, "cached"
    if dst.exists():
        shutil.rmtree(dst)
    # Everything but build files goes along: data, kernels read at run time, headers.
    shutil.copytree(p["dir"], dst, ignore=shutil.ignore_patterns("CMakeLists.txt", ".vscode", "*.md"))
    common = env["samples"] / "Common"
    nvcc = env["nvcc"]
    base = [nvcc, "-O2", "-std=c++17", "-I", str(common), "-I", str(p["dir"]), "-Wno-deprecated-gpu-targets"] + p["extra"]
    for inc in p["includes"]:
        base += ["-I", inc]
    log = []

    def run(cmd):
        r = subprocess.run(cmd, cwd=dst, capture_output=True, text=True)
        log.append(" ".join(cmd) + "\n" + r.stdout + r.stderr)
        return r.returncode == 0

    for kind, output, source in p["side"]:
        flags = ["-fatbin"] + GENCODE if kind == "fatbin" else (["-ptx", "-arch=compute_75"] if kind == "ptx" else ["-cubin", "-arch=sm_75"])
        if not run(base + flags + ["-o", output, str(p["dir"] / source)]):
            return p["name"], False, "side kernel: " + log[-1][-400:]
    for src, sub in p["copies"]:
        s = Path(src)
        target = dst / sub if sub else dst
        if s.is_dir():
            shutil.copytree(s, target / s.name if not sub else target, dirs_exist_ok=True)
        elif s.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(s, target)
    cmd = base + GENCODE + (["-rdc=true"] if p["rdc"] else [])
    cmd += [str(p["dir"] / s) for s in p["sources"]]
    cmd += ["-o", p["target"], "-L" + str(env["cuda_lib"]), "-L" + str(env["link_dir"])]
    cmd += ["-L" + str(env["shim"])] + p["libs"]
    # DT_RPATH, not DT_RUNPATH: it also serves the libraries NVRTC dlopens (its builtins),
    # which a pip toolkit does not put on the system's search path.
    cmd += ["-Xlinker", "--disable-new-dtags", "-Xlinker", "-rpath=" + str(env["cuda_lib"])]
    if not run(cmd):
        return p["name"], False, log[-1][-600:]
    stamp.write_text(want)
    return p["name"], True, "built"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--src", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    b.add_argument("--filter", default="")
    a = ap.parse_args()
    nvcc = os.environ.get("VCUDA_NVCC")
    root = os.environ.get("VCUDA_CUDA_ROOT")
    if not nvcc or not root:
        sys.exit("cuda-samples: VCUDA_NVCC and VCUDA_CUDA_ROOT must be set (source what scripts/setup.sh prints)")
    repo = Path(__file__).resolve().parent.parent
    shim = Path(os.environ.get("VCUDA_SHIM_DIR", repo / "target/debug"))
    if not (shim / "libcuda.so").exists():
        sys.exit(f"cuda-samples: no libcuda.so in {shim} (cargo build -p guest-libcuda, or set VCUDA_SHIM_DIR)")
    samples = a.src / "Samples"
    if not samples.is_dir():
        sys.exit(f"cuda-samples: {samples} is not a directory (give --src a cuda-samples checkout)")
    env = {"nvcc": nvcc, "cuda_lib": Path(root) / "lib", "shim": shim, "samples": a.src}
    a.out.mkdir(parents=True, exist_ok=True)
    # The pip wheels ship libX.so.N without the libX.so link `-lX` needs: add the links.
    link_dir = a.out / ".link"
    link_dir.mkdir(exist_ok=True)
    for lib in env["cuda_lib"].glob("lib*.so.*"):
        plain = link_dir / (lib.name.split(".so")[0] + ".so")
        if not (env["cuda_lib"] / plain.name).exists() and not plain.exists():
            plain.symlink_to(lib)
    env["link_dir"] = link_dir
    plans, excluded = [], []
    for cm in sorted(samples.glob("*/*/CMakeLists.txt")):
        d = cm.parent
        if a.filter and a.filter not in d.name:
            continue
        p, why = plan(d, str(Path(root) / "include"), env["cuda_lib"])
        if p is None:
            excluded.append((f"{d.parent.name}/{d.name}", why))
        else:
            plans.append(p)
    (a.out / "excluded.tsv").write_text("".join(f"{n}\t{w}\n" for n, w in excluded))
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for i, (name, ok, what) in enumerate(pool.map(lambda p: build(p, a.out, env), plans)):
            print(f"[{i + 1}/{len(plans)}] {name}: {'ok' if ok else 'FAILED'} ({what.splitlines()[0] if ok else 'see build-failures.tsv'})", file=sys.stderr)
            if not ok:
                failures.append((name, what.replace("\t", " ").replace("\n", " | ")))
    (a.out / "build-failures.tsv").write_text("".join(f"{n}\t{w}\n" for n, w in failures))
    print(f"cuda-samples: {len(plans) - len(failures)} built, {len(failures)} failed to build, {len(excluded)} excluded (see {a.out}/excluded.tsv)")


if __name__ == "__main__":
    main()
