"""The `git autosync` front end: run, start, stop, status, sync, log, systemd, list,
history, restore, clone, share.

This file parses the arguments of every command, and starts and stops the daemon. Each
other command lives in the module that does its work (COMMANDS), imported only when that
command runs: `start`, `stop` and `log` load neither the daemon nor a transport.
"""

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import import_module
from typing import cast

from . import VERSION, checks, pidfile
from .config import SHARED_FILE, Config
from .git import Repo
from .util import HUMAN, NOT_RUNNING, OK, RETRY, Error, os_error, printable

# command -> the module holding its cmd_<command> function; those in NO_REPOSITORY take the
# arguments only, the others (repository, arguments)
COMMANDS = {"run": "daemon", "start": "cli", "stop": "cli", "status": "status",
            "list": "listing", "sync": "sync", "log": "cli", "systemd": "systemd",
            "history": "history", "restore": "history", "clone": "share", "share": "share"}
NO_REPOSITORY = ("systemd", "list", "clone")  # (systemd disable works for a deleted one)

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
                                   "copies, no answer within 10 s). No network access.")
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
    p = sub.add_parser("share", help="write and commit the shared settings file .autosync",
                       description=f"Write {SHARED_FILE} at the top of the work tree from "
                                   "this clone's settings (the keys every clone may take "
                                   "from it that are set here), show it, and commit it; "
                                   "the daemon pushes it. Every clone then uses these "
                                   "settings unless its own git config sets them.")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="only show what would be written")
    p = sub.add_parser("clone", help="a new device in one step: clone, install, start",
                       description="git clone URL into DIR, install git-autosync into it as "
                                   "'make install REPO=DIR' does, then start the daemon "
                                   "(--start) or enable its systemd user unit (--systemd). "
                                   f"The repository's {SHARED_FILE} settings apply by "
                                   "themselves. On failure nothing this command made is "
                                   "left behind.")
    p.add_argument("url", metavar="URL", help="the shared repository, as for git clone")
    p.add_argument("directory", metavar="DIR", nargs="?",
                   help="where to clone (default: the repository's name, as git clone)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--start", action="store_true", help="start the daemon now")
    how.add_argument("--systemd", action="store_true",
                     help="enable the systemd user unit instead (starts now and at login)")
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
    name = "list" if getattr(args, "all", False) else args.command  # (status --all)
    function = getattr(import_module(f"{__package__}.{COMMANDS[name]}"), f"cmd_{name}")
    if name in NO_REPOSITORY:
        return cast(Callable[[argparse.Namespace], int], function)(args)
    repo = Repo(args.dir or os.getcwd())
    return cast(Callable[[Repo, argparse.Namespace], int], function)(repo, args)


def log_path(repo: Repo) -> str:
    return os.path.join(repo.ensure_state_dir(), "log")


# -- start / stop ----------------------------------------------------------------
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


# -- sync / log -------------------------------------------------------------------------------
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
