"""Issue 14 part 4 - the polling watcher (autosync.watcher=poll) on the 100,000-file tree the
start-up benchmark builds (100,000 files in 10,000 directories), beside the inotify watcher
in the same run: the real daemon's idle CPU (its whole process tree), its start-up and
memory, and save-to-commit latency for a save to a file nobody touched lately (by rename,
as most editors save, and in place) and for the same file saved again.
"""

import random
import time

from cluster import Clone
from harness import alive, benchmark, cpu_seconds, head_oid, memory_kb, ms, past_debounce, \
    percentile, poll, stop_daemon, write_atomic
from local import tree_repo, wait_commit_with
from scale import children_map

DEBOUNCE_MS = 1000  # autosync's default (the daemon runs at its defaults here)


def tree_cpu(pid):
    """CPU seconds of a daemon, the processes it ran and waited for, and the ones it still
    runs (its `git check-ignore`)."""
    kids, total, todo = children_map(), 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, ()))
        try:
            total += cpu_seconds(p)
        except (OSError, ValueError):
            pass
    return total


def settle(pid, timeout=60.0):
    """Wait until the start-up work is over: two 0.5 s windows in a row below 20% of a core
    (polling never goes quiet altogether)."""
    calm = [0]
    last = [tree_cpu(pid), time.monotonic()]

    def calm_enough():
        now_cpu, now = tree_cpu(pid), time.monotonic()
        if now - last[1] < 0.5:
            return False
        rate = (now_cpu - last[0]) / (now - last[1])
        last[:] = [now_cpu, now]
        calm[0] = calm[0] + 1 if rate < 0.2 else 0
        return calm[0] >= 2
    poll(calm_enough, timeout, "the daemon to finish starting", interval=0.1)


def start(ctx, repo, kind):
    """The daemon with autosync.watcher=kind: (clone, seconds to ready, VmHWM kB)."""
    ctx.git(repo, "config", "autosync.watcher", kind)
    clone = Clone(repo, ctx.env, ctx.toolkit)
    ctx.defer(stop_daemon, clone)
    t0 = time.perf_counter()
    clone.start()
    ready = time.perf_counter() - t0
    status = clone.autosync("status").stdout
    line = next((s for s in status.splitlines() if s.strip().startswith("watcher:")), "")
    if f"watcher:       {kind} " not in line:
        raise RuntimeError(f"the daemon does not say it runs the {kind} watcher: {line!r}")
    return clone, ready, memory_kb(clone.pid)["VmHWM"]


def idle(pid, window):
    """CPU seconds per wall second of the daemon's process tree over `window` seconds."""
    settle(pid)
    c0, t0 = tree_cpu(pid), time.monotonic()
    time.sleep(window)  # the measurement itself: nothing happens in the tree meanwhile
    return (tree_cpu(pid) - c0) / (time.monotonic() - t0)


def saves(repo, n, rnd, dirs, how, timeout):
    """n lone saves (each more than the debounce after the previous commit), save -> commit
    seconds: `rename` (a temp file renamed over it, the directory changes), `inplace` (the
    file truncated and written, its directory untouched), each to a random file; `again`
    (renamed over, always the same file, saved just before)."""
    samples = []
    last = time.perf_counter()
    fixed = f"d{rnd.randrange(dirs):05d}/f{rnd.randrange(10)}.txt"
    for i in range(n + (1 if how == "again" else 0)):
        path = fixed if how == "again" else f"d{rnd.randrange(dirs):05d}/f{rnd.randrange(10)}.txt"
        text = f"{how} {i} {rnd.random()}\n"
        past_debounce(last, DEBOUNCE_MS)
        old = head_oid(repo)
        t0 = time.perf_counter()
        if how == "inplace":
            with open(repo / path, "w") as f:
                f.write(text)
        else:
            write_atomic(repo / path, text)
        last = wait_commit_with(repo, path, text, old, timeout=timeout)
        if how != "again" or i:  # (the first save of `again` makes the file a hot one)
            samples.append(last - t0)
    return samples


@benchmark("poll_watcher", "The polling watcher (autosync.watcher=poll, its defaults) on "
                           "100,000 files in 10,000 directories beside inotify: idle CPU, "
                           "save-to-commit latency")
def poll_watcher(ctx, res):
    files = ctx.size(100000, 10000)
    dirs = files // 10
    n_cold, n_hot = ctx.size(10, 3), ctx.size(10, 3)
    window = ctx.size(10.0, 5.0)
    repo = tree_repo(ctx, files)  # (shared with scale and commit_ratio: put back at the end)
    ctx.defer(ctx.git, repo, "config", "--unset", "autosync.watcher")
    rnd = random.Random(14)
    tag = f"{files} files in {dirs} dirs, debounce {DEBOUNCE_MS} ms"
    found, hot = {}, []
    for kind in ("inotify", "poll"):
        clone, ready, hwm = start(ctx, repo, kind)
        pid = clone.pid
        found[kind] = cpu = idle(pid, window)
        res.figure(f"[{kind}] daemon start", round(ready, 3), "s")
        res.figure(f"[{kind}] daemon peak RSS", round(hwm / 1024, 1), "MB")
        res.figure(f"[{kind}] idle CPU, daemon and its git children, over {window:.0f} s",
                   round(cpu, 4), "CPU s per s")
        if kind == "inotify":
            base = saves(repo, n_hot, rnd, dirs, "rename", 30)
            res.figure(f"[inotify, {tag}] lone save -> commit p50", ms(percentile(base, 50)),
                       "ms")
            res.series[f"inotify: lone save -> commit (ms, {tag})"] = [ms(x) for x in base]
        else:
            for how, what, n, timeout in (
                    ("again", "the same file saved again (hot)", n_hot, 30),
                    ("rename", "a file not touched lately, saved by rename", n_cold, 60),
                    ("inplace", "a file not touched lately, written in place", n_cold, 120)):
                got = saves(repo, n, rnd, dirs, how, timeout)
                hot = hot or got
                for k in (50, 90):
                    res.figure(f"[poll, {tag}] {what} -> commit p{k}",
                               ms(percentile(got, k)), "ms")
                res.figure(f"[poll, {tag}] {what} -> commit max", ms(max(got)), "ms")
                res.series[f"poll: {what} (ms)"] = [ms(x) for x in got]
        stop_daemon(clone)
        poll(lambda: not alive(pid), 30, "the daemon to stop", interval=0.05)
    res.target(f"poll watcher idle CPU, {files} files in {dirs} dirs", round(found["poll"], 4),
               "<=", 0.02, "CPU s per s")
    res.target(f"poll watcher, the same file saved again -> commit p50, {files} files "
               "(within a second, as with inotify)", ms(percentile(hot, 50)), "<=", 1000, "ms")
    res.figure("samples", f"{n_hot} hot, {n_cold} of each cold kind")
    res.note("the real daemon (git autosync start) in the shared 100,000-file tree, no remote; "
             "idle CPU = CPU seconds of the daemon and its children per wall second, after "
             "start-up settled; a save is a lone save (more than the debounce after the "
             "previous commit); 'not touched lately' = a random file of the tree, found by "
             "the round robin (directories and files at 5,000 stat calls a second in all, "
             "pollwatch.POLL_RATE); 'saved again' = the file saved just before, in the hot "
             "set (looked at every 50 ms)")
