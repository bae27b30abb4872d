"""`git autosync status`: what the daemon of one repository is doing, from its pid file,
the state it writes, the push log and git itself (no network access); `list` shows the
same for every repository (listing.py).
"""

import argparse
import json
import os
import time
from typing import Any

from . import checks, pidfile, pushlog
from .config import Config
from .copies import is_conflict_copy
from .daemon import State
from .git import Repo
from .sync import Engine
from .util import NOT_RUNNING, OK, printable, shown


def gather_status(repo: Repo) -> dict[str, Any]:
    config = Config(repo)
    pid = pidfile.running_pid(repo)
    state = State.read(repo)
    info: dict[str, Any] = {
        "repository": repo.cwd, "running": bool(pid), "pid": pid or None,
        "branch": config["branch"] or repo.current_branch(), "remote": config.remote,
        "channel": config.channel}
    head = repo.run("log", "-1", "--format=%H%x00%ct%x00%s", check=False).stdout.decode()
    if head.strip():
        oid, ts, subject = head.rstrip("\n").split("\0", 2)
        info["last_commit"] = {"commit": oid, "time": int(ts), "message": subject}
    branch = info["branch"]
    unpushed = None
    if branch and config.has_remote and repo.rev(f"refs/heads/{branch}"):
        remote = Engine(repo, config).remote  # there is one: config.has_remote
        if remote is not None:
            unpushed = remote.unpushed()
    info["unpushed"] = unpushed
    files = repo.out("ls-files", "-z").split("\0") if not repo.bare else []
    info["conflict_copies"] = [f for f in files if is_conflict_copy(f)]
    live = bool(pid) and state.get("pid") == pid
    for key in ("last_push", "last_pull", "push_error", "pull_error", "transport",
                "transport_connected", "transport_error", "pending", "skipped_large",
                "nested", "error", "refused", "kept", "held", "watcher"):
        info[key] = state.get(key) if live or key in ("last_push", "last_pull") else None
    # the daemon's last push, or one `sync` or the hook's push helper made since
    info["last_push"] = pushlog.newest(info["last_push"], pushlog.last(repo))
    info["has_remote"] = config.has_remote
    info["config_warnings"] = [{"message": p.message, "hint": p.hint}
                               for p in checks.problems(config)]
    if info["transport_error"] and any(w["message"].startswith(info["transport_error"])
                                       for w in info["config_warnings"]):
        info["transport_error"] = None  # the same bad broker URL, said once
    in_progress = repo.operation_in_progress()
    if in_progress:
        info["error"] = f"a {in_progress} started by hand is in progress; autosync waits"
    current = repo.current_branch()
    if config["branch"] and current != config["branch"]:
        info["error"] = (f"'{current or 'a detached HEAD'}' is checked out; autosync syncs "
                         f"'{config['branch']}' and leaves this one alone")
    try:  # a full disk: nothing can be committed, and the daemon's state goes stale
        disk = os.statvfs(repo.git_dir)
        if disk.f_bavail * disk.f_frsize < 1024 * 1024:
            info["error"] = (f"the disk holding '{repo.git_dir}' is full: nothing can be "
                             "committed (autosync retries by itself once there is space)")
    except OSError:
        pass
    if os.path.isdir(os.path.join(repo.state_dir, "update")):
        info["interrupted_merge"] = True
    return info


def ago(ts: float | None) -> str:
    if not ts:
        return "never"
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def notes(info: dict[str, Any]) -> list[tuple[str, str]]:
    """What status shows after the counts, in its order, as (label, text): conflict copies,
    then warnings (a config warning followed by its hint) and paths moved aside. `list`
    shows the first warning."""
    out = [("conflict copy", shown(c)) for c in info["conflict_copies"]]
    for w in info["config_warnings"]:
        out += [("warning", w["message"]), ("hint", w["hint"])]
    for key, label in (("push_error", "push failing"), ("pull_error", "pull failing"),
                       ("transport_error", "notifications"), ("error", "attention")):
        if info.get(key):
            out.append(("warning", f"{label}: {info[key]}"))
    refused = info.get("refused")
    if refused:
        out.append(("warning", printable(str(refused["reason"]))))
    for k in info.get("kept") or []:
        out.append(("moved aside", f"{shown(str(k['path']))} (autosync does not commit it; "
                                   f"a merge added that path) -> {shown(str(k['where']))}"))
    if info.get("interrupted_merge"):
        out.append(("warning", "a merge was interrupted; the next start or sync completes it"))
    for p in info.get("skipped_large") or []:
        out.append(("warning", "not committed (larger than autosync.maxFileSize): "
                    + shown(p)))
    for p in info.get("held") or []:
        out.append(("warning", "not committed (ignored until a merge changed .gitignore; "
                    f"git add it by hand to share it): {shown(p)}"))
    for p in info.get("nested") or []:
        out.append(("warning", f"nested repository not synced: {shown(p)}"))
    return out


def cmd_status(repo: Repo, args: argparse.Namespace) -> int:
    info = gather_status(repo)
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return OK if info["running"] else NOT_RUNNING
    running = f"running (pid {info['pid']})" if info["running"] else "not running"
    where = (f" <-> {info['remote']}" if info["has_remote"] else
             f", local only (no remote '{info['remote']}')")
    lines = [f"git-autosync: {running} in {info['repository']}",
             f"  branch:        {info['branch'] or '(detached)'}{where}"
             f" (channel {info['channel']})"]
    lc = info.get("last_commit")
    if lc:
        lines.append(f"  last commit:   {ago(lc['time'])}  {lc['commit'][:10]} {lc['message']}")
    lp = info.get("last_push")
    lines.append(f"  last push:     {ago(lp and lp['time'])}"
                 + (f"  {lp['commit'][:10]}" if lp else ""))
    lines.append(f"  last pull:     {ago(info.get('last_pull'))}")
    if info["running"]:
        t = info.get("transport")
        lines.append("  notifications: " + (
            f"{t} ({'connected' if info['transport_connected'] else 'not connected'})"
            if t else "none (polling the remote)" if info["has_remote"] else
            "none (local only)"))
        if info.get("watcher"):
            lines.append(f"  watcher:       {info['watcher']}")
        lines.append(f"  pending:       {info.get('pending') or 0} changed paths")
    if info["unpushed"] is not None:
        lines.append(f"  unpushed:      {info['unpushed']} commits")
    lines += [f"  {label + ':':<15}{text}" for label, text in notes(info)]
    print(printable("\n".join(lines)))  # (a branch, a commit subject: a peer wrote them)
    return OK if info["running"] else NOT_RUNNING
