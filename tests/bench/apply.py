"""Applying a big incoming change: the installed `autosync-merge` helper bringing a clone
from commit A to commit B (10,000 files touched) against plain `git merge --ff-only` doing
the same in the same run. If the target is missed, one extra run under cProfile names the
hotspots in the notes.
"""

import json
import os
import pstats
import shutil
import subprocess
import sys
import time

from harness import benchmark, ms, percentile

PROFILE_LINES = 15


def build_source(ctx, dirs, per_dir):
    """A repository with A = dirs x per_dir small text files and B = a realistic mix on top:
    80% of A's files modified, 10% deleted, 10% unchanged, as many new files added as were
    deleted. Returns (repo, A, B, mix)."""
    repo = ctx.workdir("merge-apply-source")
    ctx.git(repo, "init", "-q", "-b", "main")
    ctx.git(repo, "config", "gc.auto", "0")
    for d in range(dirs):
        sub = repo / f"d{d:03d}"
        sub.mkdir()
        for i in range(per_dir):
            (sub / f"f{i:03d}.txt").write_text(f"file {d} {i}\nsecond line\n")
    ctx.git(repo, "add", "-A")
    ctx.git(repo, "commit", "-q", "-m", "A")
    a = ctx.git(repo, "rev-parse", "HEAD")
    modified = deleted = added = 0
    for d in range(dirs):
        sub = repo / f"d{d:03d}"
        for i in range(per_dir):
            kind = i % 10
            path = sub / f"f{i:03d}.txt"
            if kind == 9:  # every tenth file deleted ...
                path.unlink()
                deleted += 1
            elif kind == 8:  # ... every tenth left alone ...
                pass
            else:
                path.write_text(f"file {d} {i}\nsecond line, changed in B\n")
                modified += 1
            if kind == 0:  # ... and as many new ones added
                (sub / f"new{i:03d}.txt").write_text(f"new in B {d} {i}\n")
                added += 1
    ctx.git(repo, "add", "-A")
    ctx.git(repo, "commit", "-q", "-m", "B")
    b = ctx.git(repo, "rev-parse", "HEAD")
    ctx.git(repo, "gc", "-q")  # packed and settled, as a long-lived repository is
    return repo, a, b, {"modified": modified, "added": added, "deleted": deleted}


def clone_at(ctx, source, name, a):
    path = ctx.workdir(name) / "clone"
    ctx.git(path.parent, "clone", "-q", str(source), str(path))
    ctx.git(path, "config", "gc.auto", "0")
    ctx.git(path, "config", "autosync.host", name)
    ctx.git(path, "reset", "-q", "--hard", a)
    return path


def rss_wrapper(out_file):
    """GNU time, when installed, reports the peak RSS of the process tree it starts (wait4's
    ru_maxrss: the largest single process, the helper or a git command it ran). Measured
    through it because a child of this (large) python inherits its RSS high-water mark."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time and subprocess.run([gnu_time, "-f", "%M", "-o", os.devnull, "true"],
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL).returncode == 0:
        return [gnu_time, "-f", "%M", "-o", str(out_file)]
    return None


def run_measured(cmd, cwd, env, wrapper=None, rss_file=None):
    """(seconds, peak RSS kB or None, stdout, stderr, returncode) of one process run to its
    end; with `wrapper` (rss_wrapper) the peak is the tree's, else it is not measured."""
    full = (wrapper or []) + list(cmd)
    t0 = time.perf_counter()
    proc = subprocess.run(full, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    rss = None
    if wrapper:
        try:
            rss = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return elapsed, rss, proc.stdout.decode(errors="replace"), \
        proc.stderr.decode(errors="replace"), proc.returncode


def check_at(ctx, repo, b, who):
    """The clone is at B with a clean work tree (what both commands must achieve)."""
    head = ctx.git(repo, "rev-parse", "HEAD")
    if head != b:
        raise RuntimeError(f"{who}: HEAD is {head[:10]}, not B {b[:10]}")
    dirty = ctx.git(repo, "status", "--porcelain", "--untracked-files=all")
    if dirty:
        lines = dirty.splitlines()
        raise RuntimeError(f"{who}: work tree differs from B after the update "
                           f"({len(lines)} paths, e.g. {lines[:3]})")


def profile_helper(ctx, repo, a, b, res):
    """One untimed run of the installed helper under cProfile; the top functions by
    cumulative time go into the notes."""
    ctx.git(repo, "reset", "-q", "--hard", a)
    helper = ctx.toolkit.tool("autosync-merge")
    with open(helper) as f:
        shebang = f.readline()[2:].strip().split()
    python = shebang[0] if shebang and os.path.isabs(shebang[0]) else sys.executable
    stats_file = ctx.scratch / "merge-apply.prof"
    trace = ctx.scratch / "merge-apply.trace2.json"
    t, _, _, err, rc = run_measured([python, "-m", "cProfile", "-o", str(stats_file), helper,
                                     "-C", str(repo), b], repo,
                                    dict(ctx.env, GIT_TRACE2_EVENT=str(trace)))
    if rc != 0 or not stats_file.exists():
        res.note(f"profile run failed (exit {rc}): {err.strip()[-500:]}")
        return
    git_time = git_commands(trace)
    if git_time:
        res.note("git commands the helper ran (count, total wall time): " + "; ".join(
            f"git {name} x{n} {ms(sec)} ms" for name, (n, sec) in git_time))
        print("   git commands of that run (count, total ms):")
        for name, (n, sec) in git_time:
            print(f"   {n:>7} {ms(sec):>11}  git {name}")
    stats = pstats.Stats(str(stats_file))
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append((ct, tt, nc, f"{os.path.basename(filename)}:{line}({func})"))
    rows.sort(reverse=True)
    res.note(f"profile (one run under cProfile, {ms(t)} ms with profiling overhead), top "
             f"{PROFILE_LINES} by cumulative time: " + "; ".join(
                 f"{where} cum {ms(ct)} ms self {ms(tt)} ms calls {nc}"
                 for ct, tt, nc, where in rows[:PROFILE_LINES]))
    by_self = sorted(rows, key=lambda r: r[1], reverse=True)[:PROFILE_LINES]
    res.note("top by own time: " + "; ".join(
        f"{where} self {ms(tt)} ms calls {nc}" for ct, tt, nc, where in by_self))
    res.series["profile"] = [{"function": w, "cumulative_ms": ms(ct), "own_ms": ms(tt),
                              "calls": nc} for ct, tt, nc, w in rows[:40]]
    print(f"   profile of one autosync-merge run ({ms(t)} ms under cProfile):")
    print(f"   {'cumulative ms':>13} {'own ms':>9} {'calls':>7}  function")
    for ct, tt, nc, where in rows[:PROFILE_LINES]:
        print(f"   {ms(ct):>13} {ms(tt):>9} {nc:>7}  {where}")
    print("   by own time:")
    for ct, tt, nc, where in by_self:
        print(f"   {ms(ct):>13} {ms(tt):>9} {nc:>7}  {where}")


def git_commands(trace):
    """[(git subcommand, (count, seconds))] from a GIT_TRACE2_EVENT file, costliest first."""
    names, totals = {}, {}
    try:
        lines = trace.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "cmd_name":
            names[ev.get("sid")] = ev.get("name")
        elif ev.get("event") == "exit" and ev.get("sid") in names:
            name = names[ev["sid"]]
            n, sec = totals.get(name, (0, 0.0))
            totals[name] = (n + 1, sec + float(ev.get("t_abs", 0.0)))
    return sorted(totals.items(), key=lambda kv: kv[1][1], reverse=True)


@benchmark("merge-apply", "Applying a 10,000-file change: autosync-merge vs git merge --ff-only")
def merge_apply(ctx, res):
    dirs, per_dir = ctx.size((100, 100), (20, 100))
    repeats = ctx.size(5, 3)
    source, a, b, mix = build_source(ctx, dirs, per_dir)
    files = dirs * per_dir
    settings = (f"{files} files in {dirs} dirs; A->B modifies {mix['modified']}, adds "
                f"{mix['added']}, deletes {mix['deleted']}; median of {repeats}")
    plain_repo = clone_at(ctx, source, "merge-apply-git", a)
    ours_repo = clone_at(ctx, source, "merge-apply-autosync", a)
    helper = ctx.toolkit.tool("autosync-merge")
    rss_file = ctx.scratch / "merge-apply.rss"
    wrapper = rss_wrapper(rss_file)
    ours, plain, ours_rss, plain_rss = [], [], [], []

    def reset(repo):
        """Back to A, not timed. The files are then dated a minute back, as files in a
        folder are when someone else's change arrives (autosync reads a file written in
        the last 3 s instead of trusting its stat data), and the index refreshed; the dirty
        pages are written back so neither side pays for them."""
        ctx.git(repo, "reset", "-q", "--hard", a)
        past = time.time() - 60
        for dirpath, dirnames, filenames in os.walk(repo):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                os.utime(os.path.join(dirpath, name), (past, past))
        ctx.git(repo, "update-index", "-q", "--refresh")
        os.sync()

    def run_plain(record=True):
        reset(plain_repo)
        t, rss, _, err, rc = run_measured(["git", "merge", "--ff-only", "-q", b], plain_repo,
                                          ctx.env, wrapper, rss_file)
        if rc != 0:
            raise RuntimeError(f"git merge --ff-only failed (exit {rc}): {err.strip()}")
        check_at(ctx, plain_repo, b, "git merge --ff-only")
        if record:
            plain.append(t), plain_rss.append(rss)

    def run_ours(record=True):
        reset(ours_repo)
        t, rss, out, err, rc = run_measured([helper, "-C", str(ours_repo), b], ours_repo,
                                            ctx.env, wrapper, rss_file)
        if rc != 0:
            raise RuntimeError(f"autosync-merge failed (exit {rc}) after {ms(t)} ms: "
                               f"{(err or out).strip()[-1500:]}")
        check_at(ctx, ours_repo, b, "autosync-merge")
        if record:
            ours.append(t), ours_rss.append(rss)

    res.figure("files", files)
    res.figure("change A -> B", f"modify {mix['modified']}, add {mix['added']}, "
                                f"delete {mix['deleted']}")
    res.figure("repeats each", repeats)
    run_plain(record=False)  # warm-up (page cache, python imports), not counted
    try:
        run_ours(record=False)
        for i in range(repeats):  # alternate which goes first, so drift hits both alike
            steps = [run_plain, run_ours]
            for step in (steps if i % 2 else steps[::-1]):
                step()
    finally:
        p = percentile(plain, 50) if plain else None
        if p is not None:
            res.figure(f"git merge --ff-only p50 ({settings})", ms(p), "ms")
            if wrapper and None not in plain_rss:
                res.figure("git merge --ff-only peak RSS", round(max(plain_rss) / 1024, 1),
                           "MB")
    o = percentile(ours, 50)
    res.figure(f"autosync-merge p50 ({settings})", ms(o), "ms")
    res.figure("autosync-merge min / max", f"{ms(min(ours))} / {ms(max(ours))}", "ms")
    res.figure("git merge --ff-only min / max", f"{ms(min(plain))} / {ms(max(plain))}", "ms")
    if wrapper and None not in ours_rss:
        res.figure("autosync-merge peak RSS (largest process of its tree)",
                   round(max(ours_rss) / 1024, 1), "MB")
    ratio = round(o / p, 2)
    res.figure("autosync-merge / git merge --ff-only p50", ratio, "x")
    ok = res.target(f"autosync-merge / git merge --ff-only, {settings}", ratio, "<=", 1.5, "x")
    res.series["samples"] = {"autosync-merge": [ms(x) for x in ours],
                             "git merge --ff-only": [ms(x) for x in plain]}
    res.note("each run starts from `git reset --hard A` (not timed, files dated 60 s back) in its own clone; both "
             "timed as whole processes (autosync-merge includes python start-up); warm page "
             "cache, dirty pages synced before each run; " + ("both run under GNU time (same ~1 ms for each); peak RSS = its "
                          "%M, the largest single process of the tree" if wrapper else
                          "peak RSS not measured (GNU time not installed)"))
    if not ok:
        profile_helper(ctx, ours_repo, a, b, res)
