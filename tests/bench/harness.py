"""What every benchmark needs: a registry, a result record, the run context, statistics and
/proc readings. The clusters, clones and brokers themselves come from tests/cluster.py and
tests/brokers.py; nothing here duplicates them.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from conftest import Toolkit, git, isolated_env, wait_for  # noqa: E402

BENCHMARKS = {}  # name -> (function, title), in registration order


def benchmark(name, title):
    """Register `fn(ctx, result)` as benchmark NAME."""
    def register(fn):
        BENCHMARKS[name] = (fn, title)
        return fn
    return register


class Skip(Exception):
    """Raised by a benchmark that cannot run here (a missing server or module)."""


class Result:
    """Figures, targets and chart series of one benchmark, as stored in results.json."""

    def __init__(self, name, title):
        self.name, self.title = name, title
        self.status = "ok"
        self.reason = None
        self.seconds = None
        self.figures = {}  # name -> {"value": v, "unit": u}
        self.targets = []  # {"name", "value", "op", "limit", "unit", "pass"}
        self.series = {}  # chart data
        self.notes = []

    def figure(self, name, value, unit=""):
        self.figures[name] = {"value": value, "unit": unit}
        return value

    def target(self, name, value, op, limit, unit=""):
        ok = value is not None and {"<=": value <= limit, "<": value < limit,
                                    "==": value == limit, ">=": value >= limit}[op]
        self.targets.append({"name": name, "value": value, "op": op, "limit": limit,
                             "unit": unit, "pass": bool(ok)})
        return ok

    def note(self, text):
        self.notes.append(text)

    def as_dict(self):
        return {"title": self.title, "status": self.status, "reason": self.reason,
                "seconds": self.seconds, "figures": self.figures, "targets": self.targets,
                "series": self.series, "notes": self.notes}


class Context:
    """One bench run: the installed toolkit, a scratch directory, the isolated environment,
    the size knobs (--quick) and a cleanup stack per benchmark."""

    def __init__(self, scratch, toolkit, quick):
        self.scratch = Path(scratch)
        self.toolkit = toolkit
        self.quick = quick
        home = self.scratch / "home"
        home.mkdir(exist_ok=True)
        base = isolated_env(home)
        base.pop("GIT_AUTOSYNC_DEBUG", None)  # measure the product as users run it
        self.env = dict(base, PATH=f"{toolkit.bin}{os.pathsep}{base['PATH']}")
        self.stack = None
        self.trees = {}  # shared work trees built once per run (local.tree_repo)
        self._n = 0

    def size(self, full, quick):
        return quick if self.quick else full

    def workdir(self, name):
        """A fresh directory under the scratch area."""
        self._n += 1
        path = self.scratch / f"{self._n:02d}-{name}"
        path.mkdir()
        return path

    def defer(self, fn, *args):
        """Run fn(*args) when the current benchmark ends, even on failure."""
        self.stack.callback(_quietly, fn, *args)

    def keep_cluster(self, cluster):
        """Stop every daemon of `cluster` at the end: `git autosync stop`, then SIGKILL."""
        def stop():
            for c in cluster.clones:
                stop_daemon(c)
        self.defer(stop)
        return cluster

    def git(self, cwd, *args):
        return git(cwd, *args, env=self.env)


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # cleanup must go on with the next item
        print(f"bench: cleanup {getattr(fn, '__name__', fn)} failed: {e}", file=sys.stderr)


def stop_daemon(clone):
    """Stop a clone's daemon by its pid: politely, then by force."""
    pid = clone.pid
    if not pid or not alive(pid):
        return
    try:
        clone.autosync("stop", "--timeout", "20", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_mosquitto(ctx):
    """A real mosquitto on a free loopback port (tests/brokers.py), stopped at the end."""
    try:
        from brokers import Mosquitto
    except ImportError as e:
        raise Skip(f"tests/brokers.py not available ({e})")
    broker = Mosquitto(ctx.workdir("mosquitto"))
    ctx.defer(broker.stop)
    broker.start()
    return broker


# -- installing --------------------------------------------------------------------------
def install_toolkit(prefix, home):
    """`make -s install PREFIX=prefix`, as the `toolkit` fixture does."""
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}"],
                         env=isolated_env(Path(home)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bench: make install failed:\n{res.stdout}")
    return Toolkit(prefix)


def install_into(ctx, repo):
    res = subprocess.run([ctx.toolkit.tool("autosync-install"), "install", str(repo)],
                         env=ctx.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"autosync-install failed: {res.stdout}")


# -- statistics ----------------------------------------------------------------------------
def percentile(samples, p):
    """Linear-interpolated percentile (p in 0..100) of a non-empty list."""
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(samples):
    return {"n": len(samples), "min": min(samples), "p50": percentile(samples, 50),
            "p90": percentile(samples, 90), "p99": percentile(samples, 99),
            "max": max(samples), "mean": sum(samples) / len(samples)}


def ms(seconds):
    return round(seconds * 1000.0, 2)


def against_floor(res, tag, ours, floor, floor_name, what, limit, series_names):
    """The figures of autosync's samples and of plain git's in one setting (tag), and the
    target on the ratio of their medians."""
    s, f = summary(ours), summary(floor)
    for k in ("p50", "p90", "p99", "max"):
        res.figure(f"[{tag}] autosync {k}", ms(s[k]), "ms")
    res.figure(f"[{tag}] {floor_name} p50", ms(f["p50"]), "ms")
    res.target(f"[{tag}] {what} p50 / {floor_name} p50", round(s["p50"] / f["p50"], 2),
               "<=", limit, "x")
    res.series[f"histogram ({tag})"] = {series_names[0]: [ms(x) for x in ours],
                                       series_names[1]: [ms(x) for x in floor]}


def past_debounce(last, debounce_ms):
    """Sleep until debounce_ms (and 50 ms) after perf_counter time last: the next save is
    a lone one (the load's own pace, not a wait for a result)."""
    pause = last + debounce_ms / 1000.0 + 0.05 - time.perf_counter()
    if pause > 0:
        time.sleep(pause)


# -- /proc readings ---------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def memory_kb(pid):
    """{'VmHWM': kB, 'VmRSS': kB} of a live process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid):
    """user+system CPU of a process (all its threads) and of its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


# -- git, cheaply ---------------------------------------------------------------------------
def head_oid(repo):
    """HEAD's commit id by reading the ref files (cheap enough to poll every few ms)."""
    gitdir = Path(repo) / ".git"
    if not gitdir.is_dir():
        gitdir = Path(repo)
    try:
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        try:
            return (gitdir / ref).read_text().strip()
        except FileNotFoundError:
            for line in (gitdir / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except (OSError, ValueError):
        return None
    return None


def write_atomic(path, text):
    """Save as editors do: a temp file renamed over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def poll(condition, timeout, what, interval=0.002):
    """wait_for with a fine interval, for latency measurements."""
    return wait_for(condition, timeout=timeout, what=what, interval=interval)


def make_tree(root, files, per_dir=10, text="x\n"):
    """`files` small files spread over files/per_dir directories d0000/f00.txt ..."""
    root = Path(root)
    dirs = max(1, files // per_dir)
    n = 0
    for d in range(dirs):
        sub = root / f"d{d:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir if d < dirs - 1 else files - n):
            (sub / f"f{i:03d}.txt").write_text(text)
            n += 1
    return dirs


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def timed():
    """with timed() as t: ...; t() -> seconds elapsed (monotonic)."""
    start = time.perf_counter()
    end = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
