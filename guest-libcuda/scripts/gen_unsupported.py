#!/usr/bin/env python3
"""Regenerates src/unsupported.rs: every driver-API name of cudaTypedefs.h (and
cudaProfilerTypedefs.h) that no `proc(name …)` clause of src/api/*.rs (and none of the entries
procaddr.rs declares itself) implements. Usage: eval "$(scripts/setup.sh --env)"; guest-libcuda/scripts/gen_unsupported.py"""
import os, re, pathlib

here = pathlib.Path(__file__).resolve().parent.parent
include = pathlib.Path(os.environ["VCUDA_CUDA_ROOT"]) / "include"
text = (include / "cudaTypedefs.h").read_text() + (include / "cudaProfilerTypedefs.h").read_text()
names = sorted({re.sub(r"_v\d+(_pt..)?$", "", m)
                for m in re.findall(r"PFN_(cu\w+?_v\d+(?:_pt(?:ds|sz))?)\b", text)})
implemented = set()
for f in sorted((here / "src" / "api").glob("*.rs")):
    implemented |= set(re.findall(r"\bproc\((cu\w+) ", f.read_text()))
procaddr = (here / "src" / "procaddr.rs").read_text()
implemented |= set(re.findall(r'"(cu\w+)",\s*own\(', procaddr))
src = (here / "src" / "unsupported.rs").read_text()
head = src[: src.index("stubs! {\n") + len("stubs! {\n")]
body = "".join(f"    {n}\n" for n in names if n not in implemented)
(here / "src" / "unsupported.rs").write_text(head + body + "}\n")
