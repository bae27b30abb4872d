"""Issue 12 - how the sync engine scales with the number of clones on one channel, and how
fairly it treats clones that fight over one file.

sync_scale: a scale curve (4, 8, 16 clones, 2 edits/s in all), each clone editing its own
file, a bare server with the post-receive hook, a real mosquitto, a real daemon per clone;
then the issue's heavier points (4 clones at 1 edit/s each, 8 clones at 2 edits/s each).
sync_fairness: three clones saving one shared file 10 times a second each.

The daemons' log lines are matched by the regexes just below (one place: the redesign may
change their wording).
"""

import os
import random
import re
import threading
import time

from cluster import Cluster
from servers import terminate
from conftest import git
from harness import (alive, benchmark, cpu_seconds, head_oid, memory_kb, percentile,
                     start_mosquitto, write_atomic)

# -- what the daemons' logs ($GIT_DIR/autosync/log) say -----------------------------------------
LOG_PUSHED = re.compile(r"\bpushed [0-9a-f]{7,40} to ")  # one successful push
LOG_REJECTED = re.compile(r"\bpush(?: to '[^']*')? rejected")  # one rejected push
# a push that failed otherwise; against a local server under contention that is git's
# "[remote rejected] (failed to update ref)": another push took the ref lock first
LOG_PUSH_FAILED = re.compile(r"\bcannot push to ")
LOG_MERGE_COMMIT = re.compile(r"\bmerged [0-9a-f]{7,40} as [0-9a-f]{7,40}")  # a merge made here
LOG_FAST_FORWARD = re.compile(r"\bmerged [0-9a-f]{7,40}$", re.M)  # took a fetched tip as it is
LOG_TROUBLE = re.compile(r"^.* (?:WARNING|ERROR|CRITICAL) .*$|^Traceback.*$", re.M)
LOG_CONNECTED = "subscribing to"  # the daemon is on the broker
HOST_IN_SUBJECT = re.compile(r"\(host ([A-Za-z0-9._-]{1,64})\)\s*$")  # autosync commit subjects

CLUSTER_CONFIG = {"debounce": 100, "maxDelay": 1000, "pollInterval": 60}
SETTINGS = "debounce 100 ms, maxDelay 1000 ms, MQTT (mosquitto on loopback), server hook on"
POLL = 0.05  # s between convergence checks (cheap file reads only)


# -- a cluster of N running daemons on a channel of its own --------------------------------------
def start_cluster(ctx, broker, name, names):
    cl = ctx.keep_cluster(Cluster(ctx.workdir(name), ctx.env, ctx.toolkit,
                                  broker_url=broker.url, channel=name, **CLUSTER_CONFIG))
    git(cl.server, "config", "autosync.channel", name, env=ctx.env)  # the hook's topic too
    clones = [cl.clone(n) for n in names]
    bounded_wait(lambda: all(LOG_CONNECTED in c.log() for c in clones), 60,
                 f"{len(clones)} daemons to reach the broker")
    bounded_wait(lambda: len({head_oid(c.path) for c in clones} | {head_oid(cl.server)}) == 1,
                 60, "the clones to start on the server's commit")
    return cl, clones


def stop_all(clones, timeout=30.0):
    """SIGTERM every daemon by pid at once (each commits what is pending), wait, then
    SIGKILL whatever is left. Faster than N sequential `git autosync stop`."""
    pids = [p for p in (c.pid for c in clones) if p and alive(p)]
    terminate(lambda: [p for p in pids if alive(p)], timeout)


def bounded_wait(condition, timeout, what, interval=POLL):
    """Poll `condition` until it holds; seconds waited, or None when `timeout` ran out."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        if condition():
            return time.perf_counter() - t0
        if time.perf_counter() >= deadline:
            print(f"   gave up waiting for {what} after {timeout:.0f} s", flush=True)
            return None
        time.sleep(interval)


def log_tail(clone, offset):
    p = clone.path / ".git" / "autosync" / "log"
    try:
        with open(p, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(clone):
    try:
        return (clone.path / ".git" / "autosync" / "log").stat().st_size
    except OSError:
        return 0


def log_counts(text):
    return {"pushed": len(LOG_PUSHED.findall(text)),
            "rejected": len(LOG_REJECTED.findall(text)),
            "push failed": len(LOG_PUSH_FAILED.findall(text)),
            "merge commits": len(LOG_MERGE_COMMIT.findall(text)),
            "fast-forwards": len(LOG_FAST_FORWARD.findall(text)),
            "trouble": LOG_TROUBLE.findall(text)}


def trouble_summary(troubles, limit=5):
    """The distinct warning/error messages (timestamps cut off), most frequent first."""
    counts = {}
    for line in troubles:
        msg = re.sub(r"^\S+ \S+ ", "", line)
        msg = re.sub(r"\b[0-9a-f]{10,40}\b", "<id>", msg)
        msg = re.sub(r"\d+(\.\d+)?s\b", "<n>s", msg)
        msg = re.sub(r"attempt \d+", "attempt <n>", msg)
        counts[msg] = counts.get(msg, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]


def merges(ctx, repo, rev):
    return int(git(repo, "rev-list", "--merges", "--count", rev, env=ctx.env))


# -- /proc: CPU and memory of whole daemon process trees -----------------------------------------
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def children_map():
    """{ppid: [pid, ...]} of every process now."""
    kids = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss_kb(pid, kids):
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, ()))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except (OSError, ValueError, IndexError):
            pass
    return total


class TreeSampler(threading.Thread):
    """Samples the resident memory of each daemon's process tree (the daemon and the git
    processes it runs) every `interval` s; keeps the peak per daemon."""

    def __init__(self, pids, interval=0.5):
        super().__init__(daemon=True)
        self.pids, self.interval = list(pids), interval
        self.peak = {p: 0 for p in self.pids}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            kids = children_map()
            for p in self.pids:
                self.peak[p] = max(self.peak[p], tree_rss_kb(p, kids))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.peak


def cpu_total(pids):
    """user+system CPU of the daemons and of the git processes they ran and waited for."""
    total = 0.0
    for p in pids:
        try:
            total += cpu_seconds(p)
        except (OSError, ValueError):
            pass
    return total


def pace(t0, at):
    """Sleep until t0 + at (pacing the load generator by the clock)."""
    delay = t0 + at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


# -- sync_scale ----------------------------------------------------------------------------------
def scale_point(ctx, broker, n, rate, seconds, seed, timeout):
    """n clones, `rate` edits/s in all (round robin, each clone its own file) for `seconds`;
    returns the measurements of this point."""
    cl, clones = start_cluster(ctx, broker, f"scale{n}x{rate:g}", [f"c{i:02d}" for i in range(n)])
    try:
        server_before = head_oid(cl.server)
        merges_before = merges(ctx, cl.server, server_before)
        offsets = [log_size(c) for c in clones]
        pids = [c.pid for c in clones]
        sampler = TreeSampler(pids)
        sampler.start()
        rnd = random.Random(seed)
        edits = max(n, round(rate * seconds))
        final = {}
        cpu0 = cpu_total(pids)
        t0 = time.perf_counter()
        for i in range(edits):
            pace(t0, i / rate)
            c = clones[i % n]
            text = f"{c.name} edit {i} {rnd.random():.9f}\n"
            write_atomic(c.path / f"{c.name}.txt", text)
            final[f"{c.name}.txt"] = text
        t_last = time.perf_counter()
        late = t_last - t0 - (edits - 1) / rate  # how far the generator fell behind

        def done():
            target = head_oid(cl.server)
            if target == server_before or any(head_oid(c.path) != target for c in clones):
                return False
            return all(c.read(p) == text for c in clones for p, text in final.items())
        converge = bounded_wait(done, timeout, f"{n} clones to converge")
        cpu1 = cpu_total(pids)
        wall = time.perf_counter() - t0
        peaks = sampler.stop()
        hwm = [memory_kb(p).get("VmHWM", 0) for p in pids if alive(p)]
        head = head_oid(cl.server)
        dirty = sum(1 for c in clones if not c.clean()) if converge is not None else None
        counts = [log_counts(log_tail(c, off)) for c, off in zip(clones, offsets, strict=True)]
    finally:
        stop_all(clones)
    pushed = sum(k["pushed"] for k in counts)
    rejected = sum(k["rejected"] for k in counts)
    failed = sum(k["push failed"] for k in counts)
    return {"clones": n, "rate": rate, "seconds": seconds, "edits": edits,
            "generator_late_s": round(late, 3),
            "converge_s": None if converge is None else round(converge, 2),
            "merge_commits": merges(ctx, cl.server, head) - merges_before,
            "merge_commits_logged": sum(k["merge commits"] for k in counts),
            "fast_forwards": sum(k["fast-forwards"] for k in counts),
            "pushed": pushed, "rejected": rejected, "push_failed": failed,
            "rejected_pct": round(100.0 * (rejected + failed) / (pushed + rejected + failed), 1)
            if pushed + rejected + failed else 0.0,
            "cpu_s": round(cpu1 - cpu0, 2), "wall_s": round(wall, 2),
            "cpu_per_edit_per_clone_ms": round(1000.0 * (cpu1 - cpu0) / edits / n, 2),
            "peak_tree_rss_mb": round(max(peaks.values()) / 1024.0, 1),
            "peak_daemon_hwm_mb": round(max(hwm) / 1024.0, 1) if hwm else None,
            "dirty_clones": dirty,
            "trouble": trouble_summary([t for k in counts for t in k["trouble"]]),
            "trouble_lines": sum(len(k["trouble"]) for k in counts)}


def report_point(res, p):
    tag = f"{p['clones']} clones @ {p['rate']:g} edits/s in all"
    res.figure(f"[{tag}] settings",
               f"{p['clones']} clones, each its own file, {p['rate']:g} edits/s in all "
               f"({p['rate'] / p['clones']:g}/s per clone), round robin, {p['edits']} edits "
               f"over {p['seconds']:g} s; {SETTINGS}")
    res.figure(f"[{tag}] converge after the last edit", p["converge_s"], "s")
    res.figure(f"[{tag}] merge commits", p["merge_commits"])
    res.figure(f"[{tag}] merge commits per edit", round(p["merge_commits"] / p["edits"], 2))
    res.figure(f"[{tag}] pushes / rejected / failed otherwise",
               f"{p['pushed']} / {p['rejected']} / {p['push_failed']}")
    res.figure(f"[{tag}] rejected + failed pushes (% of push attempts)", p["rejected_pct"], "%")
    res.figure(f"[{tag}] daemon CPU per edit per clone", p["cpu_per_edit_per_clone_ms"], "ms")
    res.figure(f"[{tag}] daemon CPU in all (of {p['wall_s']:g} s wall, 2 cores)",
               p["cpu_s"], "s")
    res.figure(f"[{tag}] peak RSS of one daemon tree (sampled every 0.5 s)",
               p["peak_tree_rss_mb"], "MB")
    res.figure(f"[{tag}] peak daemon VmHWM", p["peak_daemon_hwm_mb"], "MB")
    res.figure(f"[{tag}] warning/error lines in the daemon logs", p["trouble_lines"])
    if p["dirty_clones"]:
        res.figure(f"[{tag}] clones with a dirty work tree at convergence", p["dirty_clones"])
    if p["generator_late_s"] > 0.5:
        res.note(f"{tag}: the load generator fell {p['generator_late_s']} s behind its clock")
    for msg, count in p["trouble"]:
        res.note(f"{tag}: {count}x in the daemon logs: {msg[:300]}")


@benchmark("sync_scale", "Clones on one channel (4, 8, 16), each editing its own file")
def sync_scale(ctx, res):
    """The curve at 2 edits/s in all, then the issue's heavier points. Targets: 16 clones."""
    broker = start_mosquitto(ctx)
    points = [  # (clones, edits/s in all, seconds)
        (4, 2.0, ctx.size(20.0, 6.0)),
        (8, 2.0, ctx.size(20.0, 6.0)),
        (16, 2.0, ctx.size(30.0, 10.0)),
        (4, 4.0, ctx.size(15.0, 5.0)),  # issue: 4 clones at 1 edit/s each
        (8, 16.0, ctx.size(10.0, 4.0)),  # issue: 8 clones at 2 edits/s each
    ]
    timeout = ctx.size(90.0, 60.0)
    results = []
    for i, (n, rate, seconds) in enumerate(points):
        print(f"   {n} clones, {rate:g} edits/s in all, {seconds:g} s ...", flush=True)
        p = scale_point(ctx, broker, n, rate, seconds, seed=12 + i, timeout=timeout)
        results.append(p)
        report_point(res, p)
    res.series["points"] = results
    head = next(p for p in results if p["clones"] == 16 and p["rate"] == 2.0)
    tag = "16 clones @ 2 edits/s in all"
    res.target(f"{tag}: converge after the last edit", head["converge_s"], "<=", 3.0, "s")
    res.target(f"{tag}: merge commits per edit", round(head["merge_commits"] / head["edits"], 2),
               "<=", 0.5)
    res.target(f"{tag}: rejected + failed pushes", head["rejected_pct"], "<=", 10.0,
               "% of pushes")
    res.note("converge = from the last save until every clone's HEAD is the server's branch "
             "and every clone's work tree holds every file's last content (checked every "
             f"{POLL * 1000:.0f} ms); merge commits = git rev-list --merges on the final head, "
             "minus those before the run; pushes and rejected pushes counted from the daemons' "
             "log lines (rejected % = (rejected + failed) / all attempts: on a local server a "
             "failed push is one that lost the server's ref lock to another push); "
             "CPU = utime+stime of each daemon and of the git processes it waited "
             "for, over the run until convergence; with a local-path remote, git push runs the "
             "server's receive-pack and post-receive hook as its children, so they count in "
             "the pushing daemon's tree (CPU and sampled RSS)")


# -- sync_fairness -------------------------------------------------------------------------------
class HeadSampler(threading.Thread):
    """Records (seconds since t0, oid) each time a repository's HEAD moves, every 10 ms."""

    def __init__(self, repos, t0, interval=0.01):
        super().__init__(daemon=True)
        self.repos, self.t0, self.interval = dict(repos), t0, interval
        self.moves = {name: [] for name in self.repos}
        self.done = threading.Event()

    def run(self):
        last = {}
        while not self.done.is_set():
            now = time.perf_counter() - self.t0
            for name, path in self.repos.items():
                oid = head_oid(path)
                if oid and oid != last.get(name):
                    last[name] = oid
                    self.moves[name].append((now, oid))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.moves


def commit_graph(ctx, repo, head):
    """({oid: [parents]}, {oid: host of an edit commit, None for merges})."""
    parents, hosts = {}, {}
    out = git(repo, "log", "--format=%H %P%x09%s", head, env=ctx.env)
    for line in out.splitlines():
        ids, _, subject = line.partition("\t")
        oid, *ps = ids.split()
        parents[oid] = ps
        m = HOST_IN_SUBJECT.search(subject)
        hosts[oid] = m.group(1) if m and len(ps) <= 1 else None
    return parents, hosts


def arrivals(moves, parents):
    """{oid: first time it was in the history of the sampled HEAD} (HEAD only moves forward
    to descendants here, so each commit is reached once)."""
    seen = {}
    for t, head in moves:
        todo = [head]
        while todo:
            oid = todo.pop()
            if oid in seen or oid not in parents:
                continue
            seen[oid] = t
            todo.extend(parents[oid])
    return seen


def longest_gap(times, start, end):
    """The longest stretch of [start, end] without any of `times` in it."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


@benchmark("sync_fairness", "Three clones saving one shared file 10 times a second each")
def sync_fairness(ctx, res):
    seconds = ctx.size(30.0, 8.0)
    per_clone_rate = 10.0
    broker = start_mosquitto(ctx)
    cl, clones = start_cluster(ctx, broker, "fairness", ["a", "b", "c"])
    names = [c.name for c in clones]
    path = "shared.txt"
    try:
        offsets = [log_size(c) for c in clones]
        t0 = time.perf_counter()
        sampler = HeadSampler({**{c.name: c.path for c in clones}, "server": cl.server}, t0)
        sampler.start()
        writes = {n: 0 for n in names}
        total = int(seconds * per_clone_rate)
        for k in range(total):
            for j, c in enumerate(clones):  # the three clones a third of a period apart
                pace(t0, (k + j / len(clones)) / per_clone_rate)
                write_atomic(c.path / path, f"{c.name} write {k}\n")
                writes[c.name] += 1
        storm_end = time.perf_counter() - t0

        def done():
            heads = {head_oid(c.path) for c in clones} | {head_oid(cl.server)}
            return len(heads) == 1
        converge = bounded_wait(done, ctx.size(120.0, 60.0), "the three clones to converge")
        if converge is not None:  # the heads agree; the work trees must be clean too
            bounded_wait(lambda: all(c.clean() for c in clones), 30, "clean work trees", 0.2)
        moves = sampler.stop()
        counts = {c.name: log_counts(log_tail(c, off))
                  for c, off in zip(clones, offsets, strict=True)}
    finally:
        stop_all(clones)
    head = head_oid(cl.server)
    parents, hosts = commit_graph(ctx, cl.server, head)
    on_server = arrivals(moves["server"], parents)
    made = {n: arrivals(moves[n], parents) for n in names}
    edits = {n: [o for o, h in hosts.items() if h == n and o in on_server] for n in names}
    rows = {}
    for n in names:
        got = made[n]
        others = [o for m in names if m != n for o in edits[m]]
        landed = [o for o in others if on_server[o] <= storm_end]  # landed during the storm
        during = [o for o in landed if got.get(o, float("inf")) <= storm_end]
        delays = [max(0.0, got[o] - on_server[o]) for o in others
                  if o in got and on_server[o] <= storm_end]
        own_wait = [max(0.0, on_server[o] - got[o]) for o in edits[n] if o in got]
        rows[n] = {"writes": writes[n], "commits": len(edits[n]),
                   "pushed": counts[n]["pushed"], "rejected": counts[n]["rejected"],
                   "push failed": counts[n]["push failed"],
                   "merge commits": counts[n]["merge commits"],
                   "fast-forwards": counts[n]["fast-forwards"],
                   "others' commits": len(others), "landed during the storm": len(landed),
                   "taken in during the storm": len(during),
                   "taken in after the storm": len(landed) - len(during),
                   "landed-to-here max s": round(max(delays), 2) if delays else None,
                   "landed-to-here p90 s": round(percentile(delays, 90), 2) if delays else None,
                   "own commit-to-server max s": round(max(own_wait), 2) if own_wait else None,
                   "longest storm stretch with nothing from the others s": round(
                       longest_gap([got[o] for o in others if o in got], 0.0, storm_end), 2),
                   "trouble": counts[n]["trouble"]}
    res.figure("settings", f"3 clones each saving {path} {per_clone_rate:g} times a second "
               f"(atomic writes, a third of a period apart) for {seconds:g} s; {SETTINGS}; "
               "HEADs sampled every 10 ms")
    res.figure("converge after the storm", None if converge is None else round(converge, 2), "s")
    for n, r in rows.items():
        res.figure(f"[{n}] writes / commits of its own", f"{r['writes']} / {r['commits']}")
        res.figure(f"[{n}] pushes / rejected / failed otherwise",
                   f"{r['pushed']} / {r['rejected']} / {r['push failed']}")
        res.figure(f"[{n}] merge commits / fast-forwards",
                   f"{r['merge commits']} / {r['fast-forwards']}")
        res.figure(f"[{n}] others' commits that landed during the storm: "
                   "in HEAD here during / only after it",
                   f"{r['taken in during the storm']} / {r['taken in after the storm']}")
        res.figure(f"[{n}] others' commits: landed on the server -> in HEAD here, p90 / max",
                   f"{r['landed-to-here p90 s']} / {r['landed-to-here max s']}", "s")
        res.figure(f"[{n}] own commits: made here -> on the server, max",
                   r["own commit-to-server max s"], "s")
        res.figure(f"[{n}] longest stretch of the storm taking in nothing from the others",
                   r["longest storm stretch with nothing from the others s"], "s")
    worst_gap = max(r["longest storm stretch with nothing from the others s"]
                    for r in rows.values())
    worst_delay = max((r["landed-to-here max s"] for r in rows.values()
                       if r["landed-to-here max s"] is not None), default=None)
    res.figure("worst clone: longest stretch of the storm taking in nothing from the others",
               worst_gap, "s")
    res.figure("worst clone: landed on the server -> in its HEAD (commits landed during the "
               "storm)", worst_delay, "s")
    worst_out = max((r["own commit-to-server max s"] for r in rows.values()
                     if r["own commit-to-server max s"] is not None), default=None)
    res.figure("worst clone: own commit made -> on the server", worst_out, "s")
    copies = [p for p in git(cl.server, "ls-tree", "-r", "--name-only", head,
                             env=ctx.env).splitlines() if ".conflict-" in p]
    res.figure("conflict copies in the final tree", len(copies))
    res.target("every clone takes in the others' work at least every", worst_gap, "<=", 5.0, "s")
    res.target("others' commits reach a clone after landing on the server within", worst_delay,
               "<=", 5.0, "s")
    res.target("every clone's own commits reach the server within", worst_out, "<=", 5.0, "s")
    res.series["clones"] = {n: {k: v for k, v in r.items() if k != "trouble"}
                            for n, r in rows.items()}
    for msg, count in trouble_summary([t for r in rows.values() for t in r["trouble"]]):
        res.note(f"{count}x in the daemon logs: {msg[:300]}")
    res.note("taken in = an edit commit of another clone became part of this clone's HEAD "
             "(integrate writes the work tree before HEAD moves); landed = first seen in the "
             "server's branch; a commit of several coalesced saves counts once")
