"""The `git autosync` front end: run, start, stop, status, sync, log, systemd, list,
history, restore, clone, share.

Each command is a thin layer over a module that can also be used alone (daemon, sync,
commit); this file parses arguments, starts and stops the daemon, and formats status.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from . import VERSION, checks, history, pidfile, pushlog, share, systemd
from .config import Config
from .copies import is_conflict_copy
from .daemon import Daemon, State
from .git import Repo
from .sync import Engine, sync_once
from .util import (
    HUMAN,
    NOT_RUNNING,
    OK,
    RETRY,
    Error,
    log,
    os_error,
    printable,
    setup_logging,
    shown,
)

DESCRIPTION = """\
Keep a git work tree in sync like a Dropbox folder: every saved file is committed,
pushed, and announced to the other clones, which fetch and merge it at once.

commands:
  run       watch and sync in the foreground until Ctrl-C / SIGTERM
  start     start the background daemon for this repository
  stop      stop it (pending changes are committed first)
  status    what the daemon is doing (--json for scripts)
  list      every repository autosync is installed in, one line each (= status --all)
  sync      one-shot: commit, fetch, merge, push
  log       show the end of the daemon's log (-f to follow)
  systemd   enable | disable [--timer]: sync at login with a systemd user unit
  history   the versions of a file, newest first (--json for scripts)
  restore   bring back an older version of a file, or a deleted one, as a new commit
  clone     URL [DIR] [--start] [--systemd]: a new device in one step
  share     write and commit .autosync, the settings every clone takes

Run 'git autosync COMMAND -h' for a command's options. Configuration lives in
'git config autosync.*' (see 'man git-autosync').

exit codes: 0 ok, 1 needs a human, 2 usage, 3 not running, 75 retry later"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="git autosync", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-C", dest="dir", default=None, metavar="DIR",
                    help="run as if started in DIR")
    ap.add_argument("--version", action="version", version=f"git-autosync {VERSION}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("run", help="watch and sync in the foreground",
                       description="Watch the work tree and sync it until SIGINT/SIGTERM; "
                                   "pending changes are committed before exiting.")
    p.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub.add_parser("start", help="start the background daemon",
                   description="Start the daemon in the background; its pid and log are in "
                               "$GIT_DIR/autosync/. Refuses a second daemon for one repository.")
    p = sub.add_parser("stop", help="stop the background daemon",
                       description="Stop the daemon; it commits pending changes first.")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p = sub.add_parser("status", help="show what the daemon is doing",
                       description="Show whether the daemon runs, the last commit, push and "
                                   "pull, the notification transport, commits waiting to be "
                                   "pushed, conflict copies and warnings. Exit 3 when not "
                                   "running.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true",
                   help="every repository on this machine, one line each: the same as list")
    p = sub.add_parser("list", help="every repository autosync is installed in",
                       description="Every repository autosync is installed in on this "
                                   "machine, one line each: path, running or not, last sync, "
                                   "pending changes, unpushed commits, conflict copies, the "
                                   "first warning. Exit 1 when one needs attention (missing, "
                                   "not a repository, uninstalled by hand, an error, conflict "
                                   "copies). No network access.")
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    sub.add_parser("sync", help="commit, fetch, merge and push once",
                   description="One-shot sync: commit every change, fetch, merge (keeping both "
                               "versions of conflicting files), push and notify.")
    p = sub.add_parser("log", help="show the daemon's log",
                       description="Show the end of $GIT_DIR/autosync/log.")
    p.add_argument("-n", type=int, default=20, metavar="N", help="lines (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p = sub.add_parser("systemd", help="sync at login with a systemd user unit",
                       description="enable: install the systemd user units and enable and "
                                   "start this repository's daemon unit (with --timer: a "
                                   "one-shot sync every five minutes instead). disable: stop "
                                   "and disable this repository's units (--timer: the timer "
                                   "only) and remove the unit files no other repository "
                                   "uses; every file removed is listed.")
    p.add_argument("action", choices=("enable", "disable"))
    p.add_argument("--timer", action="store_true",
                   help="the periodic one-shot sync instead of the daemon")
    p.add_argument("-C", dest="dir", default=argparse.SUPPRESS, metavar="DIR",
                   help="the repository (default: the current one)")
    p = sub.add_parser("history", help="list the versions of a file",
                       description="List the versions of PATH, newest first: when (local "
                                   "time), which host, the size and the commit; renames "
                                   "followed, its deletion and its conflict copies "
                                   "included.")
    p.add_argument("path", metavar="PATH", help="a file, relative to the current directory "
                                                "(taken literally: no patterns)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("restore", help="bring back an older version of a file",
                       description="Write PATH as it was as of WHEN or COMMIT (default: the "
                                   "version before the current one; for a deleted file, its "
                                   "last version) and commit it as a new commit, which a "
                                   "running daemon pushes. A local edit not committed yet "
                                   "is committed first: both stay in history.")
    p.add_argument("path", metavar="PATH", help="a file, relative to the current directory "
                                                "(taken literally: no patterns)")
    p.add_argument("--at", metavar="WHEN|COMMIT", default=None,
                   help="a commit ('git autosync history PATH' lists them) or a date "
                        "('yesterday', '2 hours ago', '2026-11-24 10:00')")
    share.add_parsers(sub)  # share, clone
    return ap


def main(argv: list[str]) -> int:
    ap = parser()
    if not argv:
        ap.print_help()
        return 2
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 2
    if args.command == "systemd":  # (disable works for a repository deleted already)
        return cmd_systemd(args)
    if args.command == "list" or getattr(args, "all", False):  # (no repository needed)
        from . import listing
        return listing.show(args.json)
    if args.command == "clone":  # (no repository yet)
        return share.cmd_clone(args)
    repo = Repo(args.dir or os.getcwd())
    return COMMANDS[args.command](repo, args)


def log_path(repo: Repo) -> str:
    return os.path.join(repo.ensure_state_dir(), "log")


# -- run / start / stop ----------------------------------------------------------------
def cmd_run(repo: Repo, args: argparse.Namespace) -> int:
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository; its post-receive hook does the work",
                    "run 'git autosync run' in a clone with a work tree")
    setup_logging(args.log, verbose=args.verbose)
    config = Config(repo)  # once per daemon start: .autosync is read here
    for problem in checks.problems(config):  # `start` printed them; the log keeps them
        log.warning("%s", problem.line())
    ready_fd = os.environ.pop("GIT_AUTOSYNC_READY_FD", None)

    def ready() -> None:
        if ready_fd is not None:
            try:
                os.write(int(ready_fd), b"1")
                os.close(int(ready_fd))
            except OSError:
                pass
    return Daemon(repo, ready_hook=ready, config=config).run()


def cmd_start(repo: Repo, args: argparse.Namespace) -> int:
    pid = pidfile.running_pid(repo)
    if pid:
        raise Error(f"already running for '{repo.cwd}' (pid {pid})",
                    f"git -C {shlex.quote(repo.cwd)} autosync stop")
    config = Config(repo)
    _ = config.branch  # fail here, not in the background, on a detached HEAD
    for problem in checks.problems(config):  # no remote, a broker URL that is not one
        print(f"warning: {problem.message}\nhint: {problem.hint}", file=sys.stderr)
    logfile = log_path(repo)
    rfd, wfd = os.pipe()
    env = dict(os.environ, GIT_AUTOSYNC_READY_FD=str(wfd))
    front = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "git-autosync")
    try:
        out = open(logfile, "ab")
    except OSError as e:
        raise os_error(e, f"cannot open the log '{logfile}'") from None
    with out:
        proc = subprocess.Popen([sys.executable, front, "-C", repo.cwd, "run", "--log", logfile],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                pass_fds=(wfd,), start_new_session=True, env=env, cwd=repo.cwd)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        ready = r.read(1)  # returns at "ready" or when the daemon exits (EOF)
    if ready != b"1":
        code = proc.wait(timeout=30)
        tail = _tail(logfile, 5)
        reason = next((line for line in reversed(tail) if "git-autosync:" in line
                       or "WARNING" in line or "ERROR" in line), tail[-1] if tail else "no log")
        raise Error(f"the daemon did not start (exit {code}): {printable(reason.strip())}",
                    f"git -C {shlex.quote(repo.cwd)} autosync log",
                    code=RETRY if code == RETRY else HUMAN)  # (a full disk: retry later)
    print(f"started git-autosync for '{repo.cwd}' (pid {proc.pid}); log: {logfile}")
    return OK


def cmd_stop(repo: Repo, args: argparse.Namespace) -> int:
    pid = pidfile.running_pid(repo)
    if not pid:
        print(f"git-autosync is not running for '{repo.cwd}'")
        return NOT_RUNNING
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + args.timeout
    while pidfile.running_pid(repo):
        if time.monotonic() > deadline:
            raise Error(f"daemon (pid {pid}) did not stop within {args.timeout:.0f}s",
                        f"kill {pid}   (pending changes are committed at the next start)",
                        code=RETRY)
        time.sleep(0.05)
    print(f"stopped git-autosync for '{repo.cwd}' (pid {pid})")
    return OK


# -- status --------------------------------------------------------------------------------
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
                "nested", "error", "refused", "kept", "held"):
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


def _ago(ts: float | None) -> str:
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
        lines.append(f"  last commit:   {_ago(lc['time'])}  {lc['commit'][:10]} {lc['message']}")
    lp = info.get("last_push")
    lines.append(f"  last push:     {_ago(lp and lp['time'])}"
                 + (f"  {lp['commit'][:10]}" if lp else ""))
    lines.append(f"  last pull:     {_ago(info.get('last_pull'))}")
    if info["running"]:
        t = info.get("transport")
        lines.append("  notifications: " + (
            f"{t} ({'connected' if info['transport_connected'] else 'not connected'})"
            if t else "none (polling the remote)" if info["has_remote"] else
            "none (local only)"))
        lines.append(f"  pending:       {info.get('pending') or 0} changed paths")
    if info["unpushed"] is not None:
        lines.append(f"  unpushed:      {info['unpushed']} commits")
    lines += [f"  {label + ':':<15}{text}" for label, text in notes(info)]
    print(printable("\n".join(lines)))  # (a branch, a commit subject: a peer wrote them)
    return OK if info["running"] else NOT_RUNNING


# -- sync / log -------------------------------------------------------------------------------
def cmd_sync(repo: Repo, args: argparse.Namespace) -> int:
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository; nothing to sync")
    setup_logging()
    engine = Engine.one_shot(repo)
    outcome = sync_once(engine)
    for c in outcome.conflicts:
        print(f"conflict: {shown(c.path)}" + (f": other version kept as {shown(c.copy)}"
                                              if c.copy else ": modified version kept"))
    for e in outcome.refused:
        print(f"warning: {printable(e.message)}")
    print(f"pushed {outcome.pushed[:10]} to {engine.config.remote}" if outcome.pushed
          else "up to date")
    return OK


def _tail(path: str, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * n))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def cmd_log(repo: Repo, args: argparse.Namespace) -> int:
    path = log_path(repo)
    if not os.path.exists(path):
        print(f"no log yet: '{path}'")
        return OK
    for line in _tail(path, args.n):
        print(printable(line))
    if args.follow:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            while True:  # until Ctrl-C, like tail -f
                new = f.readline()
                if new:
                    sys.stdout.write(printable(new.decode(errors="replace")))
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
    return OK


# -- history / restore ---------------------------------------------------------------------
def cmd_history(repo: Repo, args: argparse.Namespace) -> int:
    path = history.resolve(repo, args.path, history.start_dir(repo, args.dir))
    found = history.versions(repo, path)
    if args.json:
        print(json.dumps([v.as_json() for v in found], indent=1))
    else:
        print(history.render(path, found))
    return OK


def cmd_restore(repo: Repo, args: argparse.Namespace) -> int:
    path = history.resolve(repo, args.path, history.start_dir(repo, args.dir))
    setup_logging()  # (what the commits say, as for sync)
    print(history.render_restored(history.restore(repo, path, args.at)))
    return OK


# -- systemd ---------------------------------------------------------------------------------
def cmd_systemd(args: argparse.Namespace) -> int:
    path = getattr(args, "dir", None) or os.getcwd()
    top = systemd.repository(path, args.action)
    if args.action == "enable":
        lines = systemd.enable(top, args.timer)
    else:
        lines = systemd.disable_all(path, top, args.timer)
    print("\n".join(lines))
    return OK


Command = Callable[[Repo, argparse.Namespace], int]
COMMANDS: dict[str, Command] = {"run": cmd_run, "start": cmd_start, "stop": cmd_stop,
                                "status": cmd_status, "sync": cmd_sync, "log": cmd_log,
                                "history": cmd_history, "restore": cmd_restore,
                                "share": share.cmd_share}
