"""`git autosync list` (= `status --all`): every repository autosync is installed in on this
machine, one line each.

The repositories are the ones install recorded (install.Registry); what each line says is
what `git autosync status` computes for it (status.gather_status: the pid file, the state the
daemon wrote, the last push, commits not on the remote as of the last fetch, conflict copies
among the tracked files), so the two never disagree. Nothing here touches the network: a
dead server cannot make it hang. A repository that was moved, deleted, is no repository any
more or lost its hook is said so on its line, never with a traceback.
"""

import argparse
import json
import os
import shlex
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import pidfile
from .commit import changed_entries
from .git import Repo, TimedOut
from .install import Installer, Registry
from .status import ago, gather_status, notes
from .util import HUMAN, OK, Error, printable, shown

RUNNING, STOPPED, BARE = "running", "stopped", "bare"
MISSING, NOT_GIT, NOT_INSTALLED, ERROR, SILENT = (
    "missing", "not a git repository", "not installed", "error", "not responding")
PATIENCE = 10.0  # seconds one repository may take (a network mount that went away: never)
WORKERS = 4  # repositories inspected at once (git processes)


@dataclass
class Entry:
    """One line: a repository and what status says of it (None: not known or not
    applicable, e.g. the pending changes of a bare repository)."""

    path: str
    state: str  # RUNNING, STOPPED, BARE (a server: its hook does the work), or a problem
    toolkit: str = ""  # the libexec directory that installed it
    pid: int | None = None
    last_sync: int | None = None  # the newest push or pull, seconds since the epoch
    pending: int | None = None  # changed paths not committed yet
    unpushed: int | None = None  # commits the remote lacks, as of the last fetch
    conflict_copies: list[str] = field(default_factory=list)
    warning: str | None = None  # the first warning status shows
    hint: str | None = None  # what fixes it, when there is one command for that
    attention: bool = False  # needs a human: a problem state, an error, conflict copies
    watcher: str | None = None  # how a running daemon sees changes: "poll (work tree on nfs4)"

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def as_json(self) -> dict[str, Any]:
        return dict(asdict(self), running=self.running)

    def cells(self) -> list[str]:
        """The columns of its line, each saying what it is (no header needed)."""
        if self.state in (MISSING, NOT_GIT, NOT_INSTALLED, ERROR, SILENT):
            return [shown(self.path), self.state, "-", "-", "-", "-", printable(
                self.warning or "")]
        state = f"running (pid {self.pid})" if self.running else self.state
        synced = "never synced" if not self.last_sync else f"synced {ago(self.last_sync)}"
        copies = len(self.conflict_copies)
        if self.state == BARE:  # a server: its hook announces what it receives
            return [shown(self.path), state, "-", "-", "-", "-", printable(self.warning or "")]
        return [shown(self.path), state, synced,
                "-" if self.pending is None else f"{self.pending} pending",
                "-" if self.unpushed is None else f"{self.unpushed} unpushed",
                f"{copies} conflict cop{'y' if copies == 1 else 'ies'}",
                printable(self.warning or "")]


def installer(toolkit: str, action: str, directory: str) -> str:
    """The command that installs into directory again, or forgets it (uninstall)."""
    return " ".join(shlex.quote(a) for a in (os.path.join(toolkit, "autosync-install"),
                                             action, directory))


def silent(directory: str, toolkit: str) -> Entry:
    """The line of a repository that did not answer within PATIENCE."""
    return Entry(directory, SILENT, toolkit, attention=True,
                 warning=f"no answer within {PATIENCE:g} s (a network file system that is "
                         "down?)")


def inspect(directory: str, toolkit: str) -> Entry:
    """What status says of one registered directory, or why it cannot say (each git it
    runs there is ended after PATIENCE seconds)."""
    entry = Entry(directory, ERROR, toolkit)
    if not os.path.lexists(directory):
        entry.state, entry.attention = MISSING, True
        entry.warning = "moved or deleted since autosync was installed in it"
        entry.hint = (f"{installer(toolkit, 'uninstall', directory)}   (forget it; "
                      "make install REPO=DIR where it is now)")
        return entry
    try:
        repo = Repo(directory, timeout=PATIENCE)
    except TimedOut:
        return silent(directory, toolkit)
    except Error:
        entry.state, entry.attention = NOT_GIT, True
        entry.warning = "no longer a git repository"
        entry.hint = f"{installer(toolkit, 'uninstall', directory)}   (forget it)"
        return entry
    try:
        if not Installer(repo).installed():
            entry.state, entry.attention = NOT_INSTALLED, True
            entry.pid = pidfile.running_pid(repo)
            entry.warning = "autosync was removed from it by hand (its hook is gone" + (
                f"; its daemon still runs, pid {entry.pid})" if entry.pid else ")")
            entry.hint = (f"{installer(toolkit, 'install', directory)}   (or uninstall: "
                          "forget it)")
            return entry
        info = gather_status(repo)
        entry.state = BARE if repo.bare else RUNNING if info["running"] else STOPPED
        entry.pid = info["pid"]
        push = info.get("last_push")
        times = [t for t in ((push or {}).get("time"), info.get("last_pull")) if t]
        entry.last_sync = int(max(times)) if times else None
        if not repo.bare:
            entry.pending = (int(info.get("pending") or 0) if info["running"]
                             else len(changed_entries(repo, None)))  # (what start commits)
        entry.unpushed = info["unpushed"]
        entry.conflict_copies = info["conflict_copies"]
        entry.watcher = info.get("watcher")
        said = notes(info)
        first = next((i for i, (label, _) in enumerate(said) if label == "warning"), None)
        if first is not None:
            entry.warning = said[first][1]
            if first + 1 < len(said) and said[first + 1][0] == "hint":
                entry.hint = said[first + 1][1]
        entry.attention = bool(entry.conflict_copies or info.get("error"))
    except TimedOut:
        return silent(directory, toolkit)
    except Exception as e:  # a damaged repository (or a bug): said on its line, the
        entry.state, entry.attention = ERROR, True  # other repositories still listed
        entry.warning = (e.message if isinstance(e, Error) else
                         f"{e.strerror or e}" if isinstance(e, OSError) else
                         f"internal error: {type(e).__name__}: {e}")
    return entry


def entries(registry: Registry | None = None) -> list[Entry]:
    """Every registered repository, by path; inspected WORKERS at a time (git processes).

    One that takes longer than PATIENCE (+1 s) is said not to respond, and its worker,
    stuck in a system call on a dead mount, is left behind (a daemon thread): another
    goes on with the rest. So a line is never waited for more than that."""
    found = sorted((registry or Registry()).entries(strict=True), key=lambda e: e["dir"])
    results: list[Entry | None] = [None] * len(found)
    todo = list(reversed(range(len(found))))  # (popped from the end)
    running: dict[int, float] = {}  # index -> when its inspection began, while it runs
    left = [len(found)]  # lines not known yet
    changed = threading.Condition()

    def done(i: int, entry: Entry) -> None:  # (changed held)
        if results[i] is None:
            results[i] = entry
            left[0] -= 1
        running.pop(i, None)
        changed.notify()

    def work() -> None:
        while True:
            with changed:
                if not todo:
                    return
                i = todo.pop()
                running[i] = time.monotonic()
            entry = inspect(found[i]["dir"], found[i]["toolkit"])
            with changed:
                done(i, entry)

    def worker() -> None:
        threading.Thread(target=work, name="autosync-list", daemon=True).start()

    for _ in range(min(WORKERS, len(found))):
        worker()
    with changed:
        while left[0]:  # each round: a line done, or one given up on (at most WORKERS run)
            now = time.monotonic()
            for i, since in list(running.items()):
                if now - since >= PATIENCE + 1:
                    done(i, silent(found[i]["dir"], found[i]["toolkit"]))
                    worker()  # in its stead
            if left[0]:
                changed.wait(max(0.05, min((t + PATIENCE + 1 - now
                                            for t in running.values()), default=PATIENCE)))
    return [e for e in results if e is not None]


def render(listed: list[Entry], aligned: bool) -> list[str]:
    """One line per repository: columns padded to align (a terminal), else tab-separated."""
    rows = [e.cells() for e in listed]
    if not aligned:
        return ["\t".join(r).rstrip("\t") for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def cmd_list(args: argparse.Namespace) -> int:
    """Print the list; HUMAN (1) when a repository needs attention, else OK."""
    listed = entries()
    if args.json:
        print(json.dumps([e.as_json() for e in listed], indent=1))
    else:
        tty = sys.stdout.isatty()
        for line in render(listed, aligned=tty):
            print(line)
        if not listed and tty:
            print("git-autosync is installed in no repository on this machine "
                  "(make install REPO=DIR)", file=sys.stderr)
    return HUMAN if any(e.attention for e in listed) else OK
