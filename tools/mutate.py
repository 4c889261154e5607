"""Mutation testing: do the tests catch realistic bugs planted in the kernels?

Reads the planted bugs (mutants) from csrc/mutations.toml, copies the working tree (tracked and
untracked, not ignored files) to a scratch folder, builds the extension there once, checks that the
named tests pass unmutated, then for each mutant: applies it, rebuilds incrementally (C++/CUDA
files only), runs its tests with the ``ci`` hypothesis profile and records whether they fail
(killed) or pass (survived). The checkout itself is never modified.

    python tools/mutate.py                 # every mutant (tens of minutes on 2 cores)
    python tools/mutate.py --only ID ...   # some of them
    python tools/mutate.py --list          # the list, checked against the tree, nothing run

Run it before resolving an issue that changes a kernel; quote the score. Exit status: 0 when every
mutant was killed, 1 when one survived, 2 when the list or the baseline is broken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    raise SystemExit("tools/mutate.py needs Python 3.11 or newer (tomllib)") from None

ROOT = Path(__file__).resolve().parent.parent
MUTANTS_FILE = ROOT / "csrc" / "mutations.toml"
NATIVE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")
TEST_TIMEOUT_S = 900  # a mutant that hangs a test counts as killed


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str
    cpu: tuple[str, ...] = ()  # CPU flags without which the mutated code is compiled out

    def missing_cpu_flags(self) -> list[str]:
        """The flags of `cpu` this machine lacks (by /proc/cpuinfo; none where it cannot tell)."""
        flags = cpu_flags()
        return [] if flags is None else [f for f in self.cpu if f not in flags]

    @property
    def native(self) -> bool:
        return self.file.endswith(NATIVE_SUFFIXES)


def cpu_flags() -> set[str] | None:
    """This machine's CPU flags (the kernel's names: avx2, avx512f, ...), None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def load_mutants(tree: Path) -> list[Mutant]:
    """The mutants of csrc/mutations.toml, each checked to apply to `tree` exactly once."""
    with open(MUTANTS_FILE, "rb") as f:
        rows = tomllib.load(f).get("mutant", [])
    mutants, problems = [], []
    for row in rows:
        m = Mutant(row["id"], row["file"], row["find"], row["replace"], tuple(row["tests"]), row["why"],
                   tuple(row.get("cpu", ())))
        path = tree / m.file
        if any(m.id == other.id for other in mutants):
            problems.append(f"{m.id}: duplicate id")
        elif not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
        elif (count := path.read_text().count(m.find)) != 1:
            problems.append(f"{m.id}: `find` occurs {count} times in {m.file} (must be once)")
        elif m.find == m.replace:
            problems.append(f"{m.id}: `replace` equals `find`")
        mutants.append(m)
    if problems:
        raise SystemExit("csrc/mutations.toml is out of step with the tree:\n  " + "\n  ".join(problems))
    return mutants


def copy_tree(dest: Path) -> None:
    """The checkout as it is now, tracked and untracked files, without what git ignores."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def build(tree: Path, log: Path) -> bool:
    env = dict(os.environ, ROIOPS_WITH_CUDA=os.environ.get("ROIOPS_WITH_CUDA", "0"))
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                              cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    return done.returncode == 0


def run_tests(tree: Path, tests: tuple[str, ...], log: Path) -> str:
    """'pass', 'fail' or 'timeout' for the tests in `tree`."""
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider",
           "--hypothesis-profile=ci"]
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            done = subprocess.run(cmd, cwd=tree, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=TEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "timeout"
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest could not run {tests} (exit {done.returncode}); see {log}")
    return "pass" if done.returncode == 0 else "fail"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the scratch tree and its log")
    args = parser.parse_args()

    mutants = load_mutants(ROOT)
    if args.only:
        unknown = set(args.only) - {m.id for m in mutants}
        if unknown:
            parser.error(f"unknown mutant ids: {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id:45s} {m.file}: {m.why}")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="roiops-mutants-"))
    log = scratch / "mutate.log"
    tree = scratch / "tree"
    print(f"scratch tree {tree} (log: {log})", flush=True)
    try:
        copy_tree(tree)
        if not build(tree, log):
            print("the unmutated tree does not build; see the log", file=sys.stderr)
            return 2
        for tests in dict.fromkeys(m.tests for m in mutants):
            if run_tests(tree, tests, log) != "pass":
                print(f"baseline: {' '.join(tests)} fails unmutated; fix that first", file=sys.stderr)
                return 2
        results = []
        stale_build = False  # the extension still holds the previous (native) mutant
        for m in mutants:
            if missing := m.missing_cpu_flags():
                results.append((m, f"not run (no {', '.join(missing)})"))
                print(f"{results[-1][1]:17s} {m.id}", flush=True)
                continue
            path = tree / m.file
            original = path.read_text()
            start = time.monotonic()
            path.write_text(original.replace(m.find, m.replace))
            try:
                if (m.native or stale_build) and not build(tree, log):
                    verdict = "does not compile"  # not a realistic mutant: fix the entry
                else:
                    verdict = {"fail": "killed", "timeout": "killed (timeout)", "pass": "SURVIVED"}[
                        run_tests(tree, m.tests, log)]
            finally:
                path.write_text(original)
            stale_build = m.native
            results.append((m, verdict))
            print(f"{verdict:17s} {m.id}  ({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    killed = sum(v.startswith("killed") for _, v in results)
    ran = [(m, v) for m, v in results if not v.startswith("not run")]
    not_run = len(results) - len(ran)
    note = f" ({not_run} not run: this CPU compiles their code out)" if not_run else ""
    print(f"\nmutation score: {killed} of {len(ran)} killed{note}")
    for m, verdict in results:
        if not verdict.startswith("killed"):
            print(f"  {verdict}: {m.id} ({m.file}): {m.why}")
    if any(v == "does not compile" for _, v in results):
        return 2
    return 0 if killed == len(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
