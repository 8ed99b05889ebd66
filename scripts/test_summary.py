#!/usr/bin/env python3
"""The closing summary of scripts/test.sh.

    scripts/test_summary.py REPORT_DIR     # print the summary; exit 1 if anything failed
    scripts/test_summary.py --self-test    # check the parser on made-up cargo output

REPORT_DIR (written by scripts/test.sh) holds:
  steps.tsv        one line per step: name, exit status, seconds, log file name
  <step>.log       what the step printed (stdout and stderr)
  skips.tsv        one line per skipped test (vcuda-testkit: binary, test, reason)

For every `cargo test` step, every test binary cargo ran is listed with its passed / failed /
ignored / skipped counts (a skipped test is one that called vcuda_testkit::skip; libtest counts
it as passed, the summary does not), the names of failed tests, and the skip reasons. A binary
that started but printed no `test result:` line (it crashed, or was killed) is a failure.
The last line reads `summary: N passed, N failed, N skipped`.
"""

import os
import re
import sys
from collections import OrderedDict

RUNNING = re.compile(r"^\s+Running (?P<what>.+?) \((?P<path>[^)]+)\)\s*$")
DOCTESTS = re.compile(r"^\s+Doc-tests (?P<crate>\S+)\s*$")
RESULT = re.compile(
    r"^test result: (?P<verdict>ok|FAILED)\. (?P<passed>\d+) passed; (?P<failed>\d+) failed; "
    r"(?P<ignored>\d+) ignored"
)
FAILED_TEST = re.compile(r"^test (?P<name>\S+)(?: - .*)? \.\.\. FAILED\s*$")
HASH_SUFFIX = re.compile(r"-[0-9a-f]{16}$")


class Binary:
    def __init__(self, key, label):
        self.key = key  # the executable's file name (as the skip log names it), or doc:<crate>
        self.label = label
        self.passed = self.failed = self.ignored = 0
        self.finished = False
        self.failed_tests = []
        self.skips = []  # (test, reason)

    @property
    def ok(self):
        return self.finished and self.failed == 0


def parse_cargo_log(text, step):
    """The test binaries of one `cargo test` run, in the order cargo ran them."""
    binaries = OrderedDict()
    current = None
    for line in text.splitlines():
        m = RUNNING.match(line)
        if m:
            exe = os.path.basename(m.group("path"))
            name = HASH_SUFFIX.sub("", exe)
            current = Binary(exe, f"{name} ({m.group('what')})")
            binaries[(step, exe)] = current
            continue
        m = DOCTESTS.match(line)
        if m:
            key = "doc:" + m.group("crate")
            current = Binary(key, f"{m.group('crate')} (doc tests)")
            binaries[(step, key)] = current
            continue
        if current is None:
            continue
        m = FAILED_TEST.match(line)
        if m and not current.finished:
            current.failed_tests.append(m.group("name"))
            continue
        m = RESULT.match(line)
        if m and not current.finished:
            current.passed = int(m.group("passed"))
            current.failed = int(m.group("failed"))
            current.ignored = int(m.group("ignored"))
            current.finished = True
    return list(binaries.values())


def read_skips(path):
    skips = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3:
                    skips.setdefault(parts[0], []).append((parts[1], parts[2]))
    except FileNotFoundError:
        pass
    return skips


def summarize(report_dir, out=sys.stdout):
    """Prints the summary; returns the exit status (0: everything passed)."""
    steps = []
    with open(os.path.join(report_dir, "steps.tsv"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                steps.append((parts[0], int(parts[1]), parts[2], parts[3]))
    skips = read_skips(os.path.join(report_dir, "skips.tsv"))
    p = lambda s="": print(s, file=out)  # noqa: E731

    total_passed = total_failed = total_skipped = total_ignored = 0
    bad = False
    p()
    p("=" * 78)
    p("test summary")
    p("=" * 78)
    p("steps:")
    for name, rc, secs, _ in steps:
        verdict = "ok" if rc == 0 else f"FAILED (exit {rc})"
        p(f"  {verdict:<18} {name}  [{secs} s]")
        bad |= rc != 0
    for name, rc, _, log in steps:
        if not name.startswith("cargo test"):
            continue
        try:
            with open(os.path.join(report_dir, log), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        binaries = parse_cargo_log(text, name)
        p()
        p(f"{name}: {len(binaries)} test binaries")
        if not binaries and rc != 0:
            p("  (no test binary ran: see the step's output above, e.g. a compile error)")
        for b in binaries:
            b.skips = skips.get(b.key, [])
            skipped = len(b.skips)
            passed = max(b.passed - skipped, 0)
            if not b.finished:
                verdict = "CRASHED"
                detail = "no `test result` line: the binary crashed or was killed"
            elif b.failed:
                verdict = "FAILED"
                detail = f"{passed} passed, {b.failed} failed"
            else:
                verdict = "ok" if skipped == 0 else "ok/skips"
                detail = f"{passed} passed"
            if skipped:
                detail += f", {skipped} skipped"
            if b.ignored:
                detail += f", {b.ignored} ignored (opt-in)"
            p(f"  {verdict:<9} {b.label}: {detail}")
            for t in b.failed_tests:
                p(f"              failed: {t}")
            for test, reason in b.skips:
                p(f"              skipped {test}: {reason}")
            total_passed += passed
            total_failed += b.failed + (0 if b.finished else 1)
            total_skipped += skipped
            total_ignored += b.ignored
            bad |= not b.ok
    p()
    failed_steps = [name for name, rc, _, _ in steps if rc != 0]
    if failed_steps:
        p("failed steps: " + ", ".join(failed_steps))
    p(f"opt-in tests not run (#[ignore]): {total_ignored}")
    p(f"summary: {total_passed} passed, {total_failed} failed, {total_skipped} skipped")
    return 1 if bad else 0


SAMPLE = """\
   Compiling vcuda-ptx v0.1.0
     Running unittests src/lib.rs (target/debug/deps/vcuda_ptx-0123456789abcdef)

running 3 tests
test a ... ok
test b ... ok
test c ... ignored
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/uml_virtio.rs (target/debug/deps/uml_virtio-fedcba9876543210)

running 2 tests
test one ... ok
test two ... FAILED

failures:
---- two stdout ----
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s

error: test failed, to rerun pass `-p vcuda-tests --test uml_virtio`
     Running tests/crashy.rs (target/debug/deps/crashy-00000000000000aa)

running 1 test
error: test failed, to rerun pass `-p vcuda-tests --test crashy`

Caused by:
  process didn't exit successfully: `crashy` (signal: 6, SIGABRT: process abort signal)
     Running tests/linux_boot.rs (target/debug/deps/linux_boot-00000000000000bb)

running 2 tests
test boots ... ok
test banner ... ok
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests vcuda_ptx

running 1 test
test src/lib.rs - parse (line 3) ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s

error: 2 targets failed:
    `-p vcuda-tests --test uml_virtio`
    `-p vcuda-tests --test crashy`
"""


def self_test():
    import io
    import tempfile

    binaries = parse_cargo_log(SAMPLE, "cargo test")
    got = [(b.label, b.passed, b.failed, b.ignored, b.finished, b.failed_tests) for b in binaries]
    want = [
        ("vcuda_ptx (unittests src/lib.rs)", 2, 0, 1, True, []),
        ("uml_virtio (tests/uml_virtio.rs)", 1, 1, 0, True, ["two"]),
        ("crashy (tests/crashy.rs)", 0, 0, 0, False, []),
        ("linux_boot (tests/linux_boot.rs)", 2, 0, 0, True, []),
        ("vcuda_ptx (doc tests)", 1, 0, 0, True, []),
    ]
    assert got == want, f"parse: got {got}"
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "cargo-test.log"), "w") as f:
            f.write(SAMPLE)
        with open(os.path.join(d, "steps.tsv"), "w") as f:
            f.write("fmt\t0\t1\tfmt.log\ncargo test\t101\t9\tcargo-test.log\n")
        with open(os.path.join(d, "skips.tsv"), "w") as f:
            f.write("linux_boot-00000000000000bb\tboots\tLinux boot: KVM is PVM-based\n")
        out = io.StringIO()
        rc = summarize(d, out)
        text = out.getvalue()
        assert rc == 1, text
        assert "summary: 5 passed, 2 failed, 1 skipped" in text, text
        assert "CRASHED   crashy (tests/crashy.rs)" in text, text
        assert "skipped boots: Linux boot: KVM is PVM-based" in text, text
        assert "failed: two" in text, text
        # All green: exit 0.
        with open(os.path.join(d, "cargo-test.log"), "w") as f:
            f.write(SAMPLE.split("     Running tests/uml_virtio.rs")[0])
        with open(os.path.join(d, "steps.tsv"), "w") as f:
            f.write("cargo test\t0\t9\tcargo-test.log\n")
        out = io.StringIO()
        assert summarize(d, out) == 0, out.getvalue()
        assert "summary: 2 passed, 0 failed, 0 skipped" in out.getvalue(), out.getvalue()
    print("test_summary self-test: ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) == 2:
        sys.exit(summarize(sys.argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
