"""Issue 2 - local benchmarks: save-to-commit latency against the git floor, a burst of
10,000 files, start-up time and memory against tree size (1k/10k/100k files), idle CPU, and
one edit in a 100,000-file tree through the commit helper against plain git.
"""

import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from cluster import Cluster
from harness import (against_floor, alive, benchmark, cpu_seconds, head_oid, memory_kb, ms,
                     past_debounce, percentile, poll, start_mosquitto, stop_daemon, write_atomic)
from conftest import git

DEBOUNCE_MS = 100


# -- shared pieces --------
def tree_repo(ctx, files):
    """A committed work tree of `files` files in files/10 directories, built once per run
    and shared by the benchmarks that need it (none of them installs hooks into it)."""
    cache = ctx.trees
    if files in cache:
        return cache[files]
    repo = ctx.workdir(f"tree{files}")
    ctx.git(repo, "init", "-q", "-b", "main")
    ctx.git(repo, "config", "autosync.host", "bench")  # (autosync's defaults otherwise)
    ctx.git(repo, "config", "gc.auto", "0")  # no background gc during measurements
    per_dir = 10
    for d in range(files // per_dir):
        sub = repo / f"d{d:05d}"
        sub.mkdir()
        for i in range(per_dir):
            (sub / f"f{i}.txt").write_text(f"file {d} {i}\n")
    ctx.git(repo, "add", "-A")
    ctx.git(repo, "commit", "-q", "-m", f"{files} files")
    ctx.git(repo, "gc", "-q")  # a packed, settled repository, as a long-lived one is
    cache[files] = repo
    return repo


def wait_commit_with(repo, path, text, old, timeout=30.0):
    """Wait for a HEAD (other than `old`) whose tree has `text` at `path`; return the
    perf_counter time at which that HEAD was first seen."""
    checked = {old}
    found = []

    def cond():
        oid = head_oid(repo)
        if oid in checked or oid is None:
            return False
        seen = time.perf_counter()
        checked.add(oid)
        got = subprocess.run(["git", "cat-file", "blob", f"{oid}:{path}"], cwd=repo,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        if got.decode(errors="replace") == text:
            found.append(seen)
            return True
        return False
    poll(cond, timeout, f"a commit of {path} in {repo}")
    return found[0]


def local_cluster(ctx, name, **config):
    cl = ctx.keep_cluster(Cluster(ctx.workdir(name), ctx.env, ctx.toolkit, **config))
    return cl


def wait_pushed(cl, clone, timeout=30.0):
    poll(lambda: cl.server_head() == head_oid(clone.path), timeout, "the push to finish",
         interval=0.005)


# -- save-to-commit latency --------
DEFAULTS = {"debounce": 1000, "maxDelay": 10000}  # autosync's own defaults (config.py)


def save_to_commit(ctx, name, n, **config):
    """n lone saves (each more than the debounce after the last commit, as a person saves)
    on a running daemon with config, against write + git add + git commit by hand.
    Returns (autosync samples, floor samples) in seconds."""
    cl = local_cluster(ctx, name, **config)
    a = cl.clone("a")
    floor_repo = ctx.workdir(name + "-floor") / "plain"
    ctx.git(floor_repo.parent, "clone", "-q", str(cl.server), str(floor_repo))
    # warm up both paths once (page cache, python imports)
    old = head_oid(a.path)
    a.write("notes.md", "warm-up\n")
    last = wait_commit_with(a.path, "notes.md", "warm-up\n", old)
    wait_pushed(cl, a)
    autosync, floor = [], []
    rnd = random.Random(2)
    for i in range(n):
        text = f"edit {i} {rnd.random()}\n"
        # the floor: what a person typing git commands by hand cannot beat
        t0 = time.perf_counter()
        write_atomic(floor_repo / "notes.md", text)
        git(floor_repo, "add", "notes.md", env=ctx.env)
        git(floor_repo, "commit", "-q", "-m", "edit", env=ctx.env)
        floor.append(time.perf_counter() - t0)
        past_debounce(last, config["debounce"])  # a lone save
        old = head_oid(a.path)
        t0 = time.perf_counter()
        a.write("notes.md", text)
        last = wait_commit_with(a.path, "notes.md", text, old)
        autosync.append(last - t0)
        wait_pushed(cl, a)  # the next sample starts with an idle daemon
    return autosync, floor


@benchmark("local_latency", "Save-to-commit latency of a lone save vs the git floor, at the "
                            "defaults and at debounce 100 ms")
def local_latency(ctx, res):
    n = ctx.size(40, 30)
    for tag, config in (("defaults: debounce 1000 ms, maxDelay 10000 ms", DEFAULTS),
                        ("debounce 100 ms, maxDelay 1000 ms",
                         {"debounce": DEBOUNCE_MS, "maxDelay": 1000})):
        autosync, floor = save_to_commit(ctx, f"latency{config['debounce']}", n, **config)
        against_floor(res, tag, autosync, floor, "git add + commit", "lone save -> commit",
                      3.0, ("autosync", "git floor"))
    res.figure("samples per setting", n)
    res.note("floor = write + `git add` + `git commit` by hand in a plain clone; a lone "
             "save (one file, more than the debounce after the previous commit) is committed "
             "20 ms after it is finished whatever the debounce (watch.SETTLE)")


# -- a burst of files --------
def write_files(top, files, t0=None, progress=None):
    """files/100 directories of 100 files; every 1000 files, (seconds since t0, count)."""
    for d in range(files // 100):
        sub = top / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:02d}.txt").write_text(f"{d} {i}\n")
        if progress is not None and (d + 1) % 10 == 0:
            progress.append((round(time.perf_counter() - t0, 3), (d + 1) * 100))


def wait_all_committed(ctx, clone, prefix, files, t0, timeline):
    """Poll HEAD until its tree holds `files` files under `prefix`; (seconds, commits)."""
    before = head_oid(clone.path)
    seen = {before}

    def done():
        oid = head_oid(clone.path)
        if oid in seen or oid is None:
            return False
        t = time.perf_counter() - t0
        seen.add(oid)
        out = git(clone.path, "ls-tree", "-r", "--name-only", oid, prefix, env=ctx.env)
        count = out.count("\n") + 1 if out else 0
        timeline.append((round(t, 3), count))
        return oid if count >= files else False
    last = poll(done, 300, f"{files} files under {prefix} to be committed", interval=0.005)
    commits = int(git(clone.path, "rev-list", "--count", f"{before}..{last}", env=ctx.env))
    return timeline[-1][0], commits


@benchmark("burst", "Bursts at the defaults (debounce 1000 ms, maxDelay 10000 ms): 10,000 "
                   "files at once, a directory moved in, 100 files copied one every 50 ms")
def burst(ctx, res):
    files = ctx.size(10000, 2000)
    cl = local_cluster(ctx, "burst", **DEFAULTS)
    a = cl.clone("a")
    # 1. written in place, one by one, as an unzip or a cp -r does
    timeline, progress = [], [(0.0, 0)]
    t0 = time.perf_counter()
    write_files(a.path / "written", files, t0, progress)
    written = time.perf_counter() - t0
    total, commits = wait_all_committed(ctx, a, "written", files, t0, timeline)
    res.figure("files", files)
    res.figure("written in place: time to write them", round(written, 3), "s")
    res.figure("written in place: time until all committed", round(total, 3), "s")
    res.figure("written in place: commits", commits)
    res.target("commits for files written in place", commits, "<=", 2)
    res.series["timeline"] = {"written": round(written, 3), "points": timeline,
                              "progress": progress, "files": files}
    wait_pushed(cl, a, timeout=120)
    # 2. a finished directory moved into the tree: one rename
    outside = ctx.workdir("burst-outside") / "moved"
    write_files(outside, files)
    t0 = time.perf_counter()
    os.rename(outside, a.path / "moved")
    total, commits = wait_all_committed(ctx, a, "moved", files, t0, [])
    res.figure("moved in: time until all committed", round(total, 3), "s")
    res.figure("moved in: commits", commits)
    res.target("commits for a directory of files moved in", commits, "<=", 2)
    wait_pushed(cl, a, timeout=120)
    # 3. files copied one by one, one every 50 ms (a slow copy, a download manager)
    source = ctx.workdir("burst-copies")
    for i in range(100):
        (source / f"c{i:03d}.txt").write_text(f"copy {i}\n" * 50)
    (a.path / "copied").mkdir()
    t0 = time.perf_counter()
    for i in range(100):
        pause = t0 + i * 0.05 - time.perf_counter()  # the copy's own pace
        if pause > 0:
            time.sleep(pause)
        shutil.copyfile(source / f"c{i:03d}.txt", a.path / "copied" / f"c{i:03d}.txt")
    total, commits = wait_all_committed(ctx, a, "copied", 100, t0, [])
    res.figure("100 copied one every 50 ms: time until all committed", round(total, 3), "s")
    res.figure("100 copied one every 50 ms: commits", commits)
    res.target("commits for 100 files copied one every 50 ms", commits, "<=", 3)
    res.note("autosync's defaults: debounce 1000 ms, maxDelay 10000 ms; files in 100 "
             "directories of 100")
    wait_pushed(cl, a, timeout=120)


# -- start-up time and memory against tree size --------
def watcher_alone(ctx, repo):
    """(seconds to ready, VmHWM kB) of libexec/autosync-watch, ready = its 'watching' line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([ctx.toolkit.tool("autosync-watch"), "-C", str(repo)],
                            env=ctx.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "watching" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"autosync-watch exited {proc.returncode}")
        ready = time.perf_counter() - t0
        if "watching" not in line:
            raise RuntimeError("autosync-watch never said it was watching")
        return ready, memory_kb(proc.pid)["VmHWM"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


def daemon_start(ctx, repo):
    """(seconds for `git autosync start` to return ready, {VmHWM, VmRSS, tree} kB): tree
    is the peak resident memory of the daemon and its git children together, sampled every
    10 ms from the moment the daemon's pid file appears until it is ready."""
    from cluster import Clone
    from scale import TreeSampler
    clone = Clone(repo, ctx.env, ctx.toolkit)
    ctx.defer(stop_daemon, clone)
    t0 = time.perf_counter()
    start = subprocess.Popen(["git", "autosync", "start"], cwd=repo, env=ctx.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    poll(lambda: clone.pid is not None or start.poll() is not None, 60,
         "the daemon's pid file", interval=0.002)
    sampler = TreeSampler([clone.pid], interval=0.01) if clone.pid else None
    if sampler:
        sampler.start()
    _, err = start.communicate(timeout=120)
    ready = time.perf_counter() - t0
    peak = sampler.stop() if sampler else {}
    if start.returncode != 0:
        raise RuntimeError(f"git autosync start exited {start.returncode}: {err.decode()}")
    pid = clone.pid
    mem = memory_kb(pid)
    mem["tree"] = max(peak.get(pid, 0), mem["VmHWM"])
    stop_daemon(clone)
    poll(lambda: not alive(pid), 30, "the daemon to stop", interval=0.02)
    return ready, mem


def memory_floor(ctx, repo):
    """{what: peak RSS kB} of what runs at once at every start-up, each run alone under GNU
    time: the catch-up `git status`, the daemon's interpreter doing nothing, and the idle
    `git check-ignore` the watcher keeps. None without GNU time."""
    from apply import rss_wrapper, run_measured
    rss_file = ctx.scratch / "floor.rss"
    wrapper = rss_wrapper(rss_file)
    if wrapper is None:
        return None
    python = ctx.toolkit.prefix / "lib" / "git-autosync" / "venv" / "bin" / "python"
    runs = {"git status": ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all",
                           "--no-renames", "--ignore-submodules=none"],
            "python -c pass": [str(python), "-c", "pass"],
            "git check-ignore --stdin": ["git", "check-ignore", "--stdin", "--no-index",
                                         "-z", "-v", "-n"]}
    floor = {}
    for name, cmd in runs.items():
        peaks = [run_measured(cmd, repo, ctx.env, wrapper, rss_file)[1] for _ in range(3)]
        if None in peaks:
            return None
        floor[name] = min(peaks)
    return floor


@benchmark("scale", "Start-up time and memory vs tree size (1k/10k/100k files)")
def scale(ctx, res):
    sizes = ctx.size([1000, 10000, 100000], [1000, 10000])
    reps = ctx.size(3, 1)
    curve = []
    for files in sizes:
        repo = tree_repo(ctx, files)
        starts, hwm, rss, tree = [], [], [], []
        w_starts, w_hwm = [], []
        for _ in range(reps):
            t, mem = daemon_start(ctx, repo)
            starts.append(t), hwm.append(mem["VmHWM"]), rss.append(mem["VmRSS"])
            tree.append(mem["tree"])
            t, peak = watcher_alone(ctx, repo)
            w_starts.append(t), w_hwm.append(peak)
        point = {"files": files, "dirs": files // 10,
                 "daemon_start_s": round(percentile(starts, 50), 3),
                 "daemon_hwm_mb": round(max(hwm) / 1024, 1),
                 "daemon_rss_mb": round(max(rss) / 1024, 1),
                 "tree_peak_mb": round(max(tree) / 1024, 1),
                 "watcher_start_s": round(percentile(w_starts, 50), 3),
                 "watcher_hwm_mb": round(max(w_hwm) / 1024, 1)}
        curve.append(point)
        res.figure(f"{files} files: daemon start", point["daemon_start_s"], "s")
        res.figure(f"{files} files: daemon peak RSS", point["daemon_hwm_mb"], "MB")
        res.figure(f"{files} files: daemon + git children peak RSS", point["tree_peak_mb"],
                   "MB")
        res.figure(f"{files} files: watcher alone start", point["watcher_start_s"], "s")
        res.figure(f"{files} files: watcher alone peak RSS", point["watcher_hwm_mb"], "MB")
    res.series["curve"] = curve
    top = curve[-1]
    res.target(f"daemon start-up, {top['files']} files in {top['dirs']} dirs",
               top["daemon_start_s"], "<=", 0.6, "s")
    res.target(f"daemon + git children peak RSS at start-up, {top['files']} files",
               top["tree_peak_mb"], "<=", 40.0, "MB")
    floor = memory_floor(ctx, tree_repo(ctx, top["files"]))
    if floor:
        for name, kb in floor.items():
            res.figure(f"{top['files']} files, alone: {name} peak RSS", round(kb / 1024, 1),
                       "MB")
        res.figure(f"{top['files']} files: the three alone, summed (the start-up's floor)",
                   round(sum(floor.values()) / 1024, 1), "MB")
    res.note("start-up = `git autosync start` until it returns (the daemon signals ready after "
             "its watches are set and the start-up catch-up status ran); warm page cache; "
             f"median of {reps}; daemon RSS = its VmHWM; daemon + git children = resident "
             "memory of the whole tree sampled every 10 ms during the start; 'alone' = "
             "each process run by itself under GNU time, least of 3")


# -- idle CPU --------
@benchmark("idle_cpu", "CPU used by an idle daemon")
def idle_cpu(ctx, res):
    window = ctx.size(60.0, 10.0)
    try:
        broker = start_mosquitto(ctx)
    except (Exception, pytest.skip.Exception) as e:  # optional for this figure
        res.note(f"measured without a notification transport ({e.__class__.__name__}: {e})")
        broker = None
    cl = local_cluster(ctx, "idle", broker_url=broker.url if broker else None)
    a = cl.clone("a")
    pid = a.pid
    wait_pushed(cl, a)
    settle_cpu(pid)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)  # the measurement itself: nothing should happen meanwhile
    used, elapsed = cpu_seconds(pid) - c0, time.monotonic() - t0
    res.figure("window", round(elapsed, 1), "s")
    res.figure("transport", "mqtt" if broker else "none (polling)")
    res.figure("CPU used", round(used, 3), "s")
    res.figure("CPU per minute", round(used * 60.0 / elapsed, 3), "s")
    res.target(f"idle CPU over {elapsed:.0f} s", round(used, 3), "<", 0.05, "s")


def settle_cpu(pid, quiet=1.0, timeout=20.0):
    """Wait until the process used no CPU tick for `quiet` seconds (start-up work done)."""
    state = {"cpu": cpu_seconds(pid), "since": time.monotonic()}

    def quiet_enough():
        now = cpu_seconds(pid)
        if now != state["cpu"]:
            state.update(cpu=now, since=time.monotonic())
        return time.monotonic() - state["since"] >= quiet
    poll(quiet_enough, timeout, "the daemon to go idle", interval=0.1)


# -- one edit in a big tree: the commit helper against plain git --------
@benchmark("commit_ratio", "One edit in a 100,000-file tree: the running daemon (defaults) and "
                          "autosync-commit vs git add+commit")
def commit_ratio(ctx, res):
    files = ctx.size(100000, 10000)
    n = ctx.size(15, 5)
    repo = tree_repo(ctx, files)  # the daemon's
    plain_repo = ctx.workdir("commit-ratio") / "plain"  # git's and the helper's: the same tree
    ctx.git(plain_repo.parent, "clone", "-q", str(repo), str(plain_repo))
    ctx.git(plain_repo, "config", "autosync.host", "bench")
    dirs = files // 10
    helper = ctx.toolkit.tool("autosync-commit")
    rnd = random.Random(6)
    ours, plain, daemon = [], [], []

    def edit(top):
        path = f"d{rnd.randrange(dirs):05d}/f{rnd.randrange(10)}.txt"
        old = head_oid(top)
        write_atomic(top / path, f"edited {rnd.random()}\n")
        return path, old

    def run_ours():
        path, old = edit(plain_repo)
        t0 = time.perf_counter()
        subprocess.run([helper, "-C", str(plain_repo), path], env=ctx.env, check=True,
                       stdout=subprocess.DEVNULL)
        ours.append(time.perf_counter() - t0)
        assert head_oid(plain_repo) != old, "autosync-commit made no commit"

    def run_daemon():
        """A lone save with the daemon running at its defaults: save to commit."""
        past_debounce(state["last"], DEFAULTS["debounce"])  # a lone save
        t0 = time.perf_counter()
        path, old = edit(repo)
        poll(lambda: head_oid(repo) != old, 60, "the daemon's commit", interval=0.002)
        state["last"] = time.perf_counter()
        daemon.append(state["last"] - t0)

    def run_plain():
        path, old = edit(plain_repo)
        t0 = time.perf_counter()
        git(plain_repo, "add", "--", path, env=ctx.env)
        git(plain_repo, "commit", "-q", "-m", f"edit {path}", env=ctx.env)
        plain.append(time.perf_counter() - t0)
        assert head_oid(plain_repo) != old

    from cluster import Clone
    clone = Clone(repo, ctx.env, ctx.toolkit)
    ctx.defer(stop_daemon, clone)
    clone.start()
    state = {"last": time.perf_counter()}
    run_ours(), run_plain(), run_daemon()  # warm-up, not counted
    ours.clear(), plain.clear(), daemon.clear()
    for i in range(n):  # rotate which goes first, so drift hits all alike
        steps = [run_ours, run_plain, run_daemon]
        for step in steps[i % 3:] + steps[:i % 3]:
            step()
    stop_daemon(clone)
    d = percentile(daemon, 50)
    res.figure("daemon save to commit p50 (defaults, lone saves)", ms(d), "ms")
    res.figure("daemon save to commit min", ms(min(daemon)), "ms")
    o, p = percentile(ours, 50), percentile(plain, 50)
    res.figure("files", files)
    res.figure("samples each", n)
    res.figure("autosync-commit p50", ms(o), "ms")
    res.figure("git add + git commit p50", ms(p), "ms")
    res.figure("autosync-commit min", ms(min(ours)), "ms")
    res.figure("git add + git commit min", ms(min(plain)), "ms")
    ratio = round(o / p, 2)
    res.figure("autosync-commit CLI / plain git p50 (includes python start-up)", ratio, "x")
    daemon_ratio = round(d / p, 2)
    res.target(f"running daemon, save to commit / git add + commit, {files} files (defaults)",
               daemon_ratio, "<=", 1.3, "x")
    res.series["samples"] = {"daemon commit": [ms(x) for x in daemon],
                             "autosync-commit": [ms(x) for x in ours],
                             "git add+commit": [ms(x) for x in plain]}
