"""`make bench`: install the toolkit for real, run the benchmarks, write
tests/bench/out/results.json and report.html, print a table of targets.

    .venv/bin/python tests/bench/run.py [--quick] [--only NAME[,NAME]] [--list] [--keep]

Every figure that has a floor (plain git doing the same work) is measured beside it in the
same run, so ratios hold on a noisy machine. Every daemon and broker is stopped by pid at
the end of its benchmark, even when it fails.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402  (sets up sys.path for tests/)
import local  # noqa: E402,F401  (registers benchmarks)
import sync  # noqa: E402,F401
import apply  # noqa: E402,F401
import scale  # noqa: E402,F401
import watchers  # noqa: E402,F401
import report  # noqa: E402
from harness import BENCHMARKS, ROOT, Context, Result, Skip  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def machine_info():
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None

    def version(*cmd):
        try:
            res = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=10)
            return res.stdout.strip().splitlines()[0] if res.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    mosq = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    mem = first("/proc/meminfo", "MemTotal")
    return {"cpu": first("/proc/cpuinfo", "model name"), "cores": os.cpu_count(),
            "memory": mem, "kernel": platform.release(), "python": platform.python_version(),
            "git": version("git", "--version"),
            "mosquitto": version(mosq, "-h") if mosq else None,
            "filesystem_tmp": tempfile.gettempdir()}


def git_commit():
    res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                            "libexec", "hooks"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "") if res.returncode == 0 else None


def run_one(ctx, name):
    fn, title = BENCHMARKS[name]
    res = Result(name, title)
    print(f"== {name}: {title}", flush=True)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        ctx.stack = stack
        try:
            fn(ctx, res)
        except (Skip, pytest.skip.Exception) as e:  # tests/brokers.py skips like pytest
            res.status, res.reason = "skipped", str(e)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # one failing benchmark must not hide the others
            res.status = "error"
            res.reason = f"{e.__class__.__name__}: {e}".strip()[:2000]
            traceback.print_exc()
    res.seconds = round(time.monotonic() - start, 1)
    for k, v in res.figures.items():
        print(f"   {k}: {v['value']}{(' ' + v['unit']) if v['unit'] else ''}")
    if res.status != "ok":
        print(f"   {res.status}: {res.reason}")
    return res


def main(argv):
    ap = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    if args.list:
        for name, (_, title) in BENCHMARKS.items():
            print(f"{name:16} {title}")
        return 0
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            print(f"bench: unknown benchmark '{unknown[0]}'", file=sys.stderr)
            print(f"hint: {sys.executable} {sys.argv[0]} --list", file=sys.stderr)
            return 2
    scratch = Path(tempfile.mkdtemp(prefix="autosync-bench-"))
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    try:
        print(f"installing the toolkit (make install PREFIX={scratch}/prefix)", flush=True)
        toolkit = harness.install_toolkit(scratch / "prefix", scratch / "installhome")
        ctx = Context(scratch, toolkit, args.quick)
        for name in names:
            results[name] = run_one(ctx, name)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    date, commit = started.isoformat(timespec="seconds"), git_commit()
    doc = {"date": date, "git_commit": commit,
           "mode": "quick" if args.quick else "full", "machine": machine_info(),
           "benchmarks": {n: dict(r.as_dict(), date=date, git_commit=commit)
                          for n, r in results.items()}}
    print()
    print(report.table(doc))
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.quick:  # a full-size run updates its benchmarks' entries; others stay
        try:
            old = json.loads((OUT / "results.json").read_text())
            kept = {n: dict(b, date=b.get("date", old["date"]),
                            git_commit=b.get("git_commit", old["git_commit"]))
                    for n, b in old["benchmarks"].items() if old.get("mode") == "full"}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            kept = {}
        doc["benchmarks"] = {n: doc["benchmarks"].get(n) or kept[n] for n in BENCHMARKS
                             if n in doc["benchmarks"] or n in kept}
    # a quick run (a smoke test of the benchmarks) keeps the figures of the real ones
    results_json, report_html = ((OUT / "quick.json", OUT / "quick.html") if args.quick
                                 else (OUT / "results.json", OUT / "report.html"))
    results_json.write_text(json.dumps(doc, indent=1) + "\n")
    report_html.write_text(report.html(doc))
    if not args.quick and report.update_readme(ROOT / "README.md", doc):
        print(f"\nwrote the performance table in {ROOT / 'README.md'}")
    print(f"wrote {results_json} and {report_html}")
    # a missed target is a finding to report, not a failure of `make bench`
    return 1 if any(r.status == "error" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
