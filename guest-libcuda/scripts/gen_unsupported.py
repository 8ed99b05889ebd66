#!/usr/bin/env python3
"""Regenerates src/unsupported.rs from the installed CUDA toolkit's headers:

* `names`: every driver-API name of cudaTypedefs.h (and cudaProfilerTypedefs.h) that no
  `proc(name …)` clause of src/api/*.rs (and none of the entries procaddr.rs declares itself)
  implements: what cuGetProcAddress resolves to a stub;
* `symbols`: every function cuda.h declares, under the name the C
  preprocessor gives it (`cuLinkCreate` → `cuLinkCreate_v2`; with
  CUDA_API_PER_THREAD_DEFAULT_STREAM, `cuGraphLaunch` → `cuGraphLaunch_ptsz`), that the shim does
  not export: exported as stubs, so that `dlsym` finds every driver symbol a program or library
  built against these headers asks for.

A name in both lists (most of them) is one stub, listed once under `both`.

Usage: eval "$(scripts/setup.sh --env)"; guest-libcuda/scripts/gen_unsupported.py"""
import os, re, pathlib, subprocess

here = pathlib.Path(__file__).resolve().parent.parent
include = pathlib.Path(os.environ["VCUDA_CUDA_ROOT"]) / "include"

text = (include / "cudaTypedefs.h").read_text() + (include / "cudaProfilerTypedefs.h").read_text()
names = sorted({re.sub(r"_v\d+(_pt..)?$", "", m)
                for m in re.findall(r"PFN_(cu\w+?_v\d+(?:_pt(?:ds|sz))?)\b", text)})
implemented = set()
exported = set()
for f in sorted((here / "src" / "api").glob("*.rs")):
    src = f.read_text()
    implemented |= set(re.findall(r"\bproc\((cu\w+) ", src))
    exported |= set(re.findall(r"^    fn (cu\w+)\(", src, re.M))
    exported |= set(re.findall(r"\bper_thread\((cu\w+),", src))
for f in ("procaddr.rs", "export_table.rs"):
    src = (here / "src" / f).read_text()
    implemented |= set(re.findall(r'"(cu\w+)",\s*own\(', src))
    exported |= set(re.findall(r'extern "C" fn (cu\w+)\(', src))


def declared(defines):
    """Function names cuda.h declares, after the preprocessor's renaming."""
    out = subprocess.run(
        ["cc", "-E", "-x", "c", *defines, f"-I{include}", "-"],
        input="#include <cuda.h>\n",
        capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    return set(re.findall(r"\bCUresult (?:CUDAAPI )?(cu\w+) ?\(", flat))


symbols = sorted((declared([]) | declared(["-DCUDA_API_PER_THREAD_DEFAULT_STREAM"])) - exported)
stub_names = [n for n in names if n not in implemented]
both = sorted(set(stub_names) & set(symbols))
path = here / "src" / "unsupported.rs"
src = path.read_text()
head = src[: src.index("stubs! {\n") + len("stubs! {\n")]
group = lambda title, items: f"    {title}:\n" + "".join(f"    {n}\n" for n in items)
body = group("both", both) + "    ;\n"
body += group("names", [n for n in stub_names if n not in both]) + "    ;\n"
body += group("symbols", [n for n in symbols if n not in both])
path.write_text(head + body + "}\n")
print(f"{len(stub_names)} cuGetProcAddress stubs, {len(symbols)} exported stubs, {len(both)} both")
