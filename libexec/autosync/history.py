"""Every version a command away: the versions of one path, and bringing one back.

`versions` lists what `git log --follow` knows of a path, newest first: each commit that made
a new version of it (renames followed; a merge only when it made a version of its own), the
commit that deleted it, and its conflict copies beside it in HEAD (copies.is_copy_of), each
with when, which host (copies.Tip.host), the size and the commit.

`restore` writes the version as of a commit or a date back into the work tree and commits it
as a new commit (history is never rewritten) through the normal commit path, under the
repository lock, so that a running daemon pushes it like any save. A local edit not
committed yet is committed first (it is the user's save): both stay in history. The file is
written beside its path under a temp name (one autosync never commits) and swapped into
place, through directory descriptors that never follow a symbolic link, under a journal
that makes a restore killed at any instant finish at the next commit (replace.py).
"""

import argparse
import datetime
import json
import os
import re
import signal
import stat
import time
from dataclasses import dataclass
from typing import Any

from . import pidfile, replace
from .commit import _short, changed_entries, check_committable, commit_changes
from .config import Config
from .copies import Tip, describe, is_conflict_copy, is_copy_of
from .git import Repo
from .sync import check_branch
from .treecheck import name_problem
from .util import OK, Error, setup_logging, shown

LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}  # a path is a name, never a pattern
SYMLINK, EXECUTABLE, GITLINK = "120000", "100755", "160000"
HISTORY_HINT = "git autosync history {}   (lists its versions)"
WHEN_HINT = ("give a commit from 'git autosync history PATH', or a date git understands: "
             "'yesterday', '2 hours ago', '2026-11-24 10:00'")
REVISION = re.compile(r"[~^]|@\{")  # what only a revision has (git help revisions)
HEX = re.compile(r"[0-9a-f]{7,64}")


@dataclass(frozen=True)
class Version:
    """One version of a path: the commit that made it (or deleted the path)."""
    commit: str
    time: int
    host: str
    path: str  # the file's name in that version (a conflict copy: the copy's name)
    kind: str  # added, edited, renamed, merged, deleted, conflict copy
    mode: str = ""  # "" when deleted
    blob: str = ""
    size: int | None = None
    previous: str | None = None  # renamed from
    current: bool = False  # the version in HEAD at the path asked for

    def as_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "time": self.time, "date": iso_date(self.time),
                "host": self.host, "size": self.size, "path": self.path, "kind": self.kind,
                "previous_path": self.previous, "current": self.current,
                "mode": self.mode or None}


def iso_date(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat()


def local_time(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# -- which path ------------------------------------------------------------------------------
def start_dir(repo: Repo, directory: str | None) -> str:
    """The directory the user's PATH is relative to: the current one (git runs the
    `autosync` alias at the top of the work tree and says where it was in GIT_PREFIX),
    then -C DIR."""
    base = os.getcwd()
    prefix = os.environ.get("GIT_PREFIX")
    if prefix and repo.top is not None and os.path.realpath(base) == os.path.realpath(
            repo.top):
        base = os.path.join(base, prefix)
    return os.path.join(base, directory) if directory else base


def resolve(repo: Repo, path: str, start: str) -> str:
    """PATH as given on the command line (relative to start, taken literally) as a path
    relative to the top of the work tree; Error for one outside it, inside .git, beyond a
    symbolic link, or naming a directory."""
    top = os.path.realpath(repo.work_tree)
    if not path:
        raise Error("an empty path names no file", "git autosync history PATH")
    full = os.path.normpath(os.path.join(os.path.realpath(start), path))
    rel = os.path.relpath(full, top)
    git_dir = os.path.realpath(repo.git_dir)
    if full == git_dir or full.startswith(git_dir + "/"):
        raise Error(f"'{path}' is inside .git: git's own files have no versions here")
    if rel == "..":
        rel = "../"
    if rel.startswith("../"):
        raise Error(f"'{path}' is outside the work tree at '{top}'")
    if rel == ".":
        raise Error(f"'{path}' is a directory (the top of the work tree): give a file")
    parts = rel.split("/")
    for i, part in enumerate(parts):
        problem = name_problem(os.fsencode(part), b"100644")
        if problem and "'.git'" in problem:
            raise Error(f"'{path}' is inside .git: git's own files have no versions here")
        if problem:
            raise Error(f"'{path}' cannot be a file in the work tree: {problem}")
        try:
            st = os.lstat(os.path.join(top, *parts[:i + 1]))
        except (FileNotFoundError, NotADirectoryError):
            break
        if i < len(parts) - 1 and stat.S_ISLNK(st.st_mode):
            raise Error(f"'{path}' is beyond a symbolic link ('{'/'.join(parts[:i + 1])}')",
                        "give the path the link points to")
        if i == len(parts) - 1 and stat.S_ISDIR(st.st_mode):
            raise Error(f"'{path}' is a directory: give a file in it")
    entry = tree_entry(repo, "HEAD", rel)
    if entry is not None and entry[0] not in ("100644", EXECUTABLE, SYMLINK):
        what = "a submodule" if entry[0] == GITLINK else "a directory"
        raise Error(f"'{path}' is {what} in HEAD: give a file")
    return rel


def tree_entry(repo: Repo, commit: str, path: str) -> tuple[str, str] | None:
    """(mode, object id) of path in commit, None when it has no such entry."""
    if repo.head() is None and commit == "HEAD":
        return None
    out = repo.run("ls-tree", "-z", "--full-tree", commit, "--", path, env=LITERAL).stdout
    for item in os.fsdecode(out).split("\0"):
        info, _, name = item.partition("\t")
        fields = info.split()
        if name == path and len(fields) == 3:
            return fields[0], fields[2]
    return None


# -- versions --------------------------------------------------------------------------------
LOG_FORMAT = "%x01%H%x00%ct%x00%an%x00%s"
KINDS = {"A": "added", "C": "added", "M": "edited", "T": "edited", "R": "renamed",
         "D": "deleted"}


def _log(repo: Repo, path: str) -> list[Version]:
    """The commits that changed path, newest first, following renames; a merge only when
    its version differs from every parent's (-c)."""
    if repo.head() is None:
        return []
    out = repo.run("log", "--follow", "-c", "--raw", "--no-abbrev", "-z", "--no-color",
                   "--no-show-signature", f"--format={LOG_FORMAT}", "HEAD", "--", path,
                   env=LITERAL).stdout.decode("utf-8", "surrogateescape")
    tokens = out.split("\0")
    found: list[Version] = []
    i = 0
    while i < len(tokens):
        head = tokens[i].lstrip("\n")
        i += 1
        if not head.startswith("\x01") or i + 3 > len(tokens):
            continue
        tip = Tip(head[1:], int(tokens[i]), tokens[i + 2], tokens[i + 1])
        i += 3
        while i < len(tokens):
            raw = tokens[i].lstrip("\n")
            if not raw:
                i += 1
                continue
            if not raw.startswith(":"):
                break
            fields = raw.lstrip(":").split()
            status, n = fields[-1], (len(fields) - 1) // 2
            mode, blob = fields[n - 1], fields[2 * n - 1]
            combined = raw.startswith("::")
            names = tokens[i + 1:i + (3 if status[0] in "RC" and not combined else 2)]
            i += 1 + len(names)
            if not names:
                break
            deleted = set(blob) == {"0"}  # (the zero id: sha1 or sha256)
            kind = ("deleted" if deleted else "merged" if combined
                    else KINDS.get(status[0], "edited"))
            found.append(Version(tip.oid, tip.time, tip.host, names[-1], kind,
                                 "" if deleted else mode, "" if deleted else blob,
                                 previous=names[0] if len(names) == 2 else None))
    return [_moved(repo, v) if v.kind == "deleted" else v for v in found]


def _moved(repo: Repo, gone: Version) -> Version:
    """A deletion that was the rename of the file (git log --follow on its old name says
    'deleted') as that rename."""
    out = repo.run("diff-tree", "-r", "-M", "-z", "--raw", "--no-abbrev", "--no-commit-id",
                   gone.commit, check=False).stdout.decode("utf-8", "surrogateescape")
    tokens = out.split("\0")
    i = 0
    while i + 1 < len(tokens):
        fields = tokens[i].lstrip(":").split()
        if len(fields) == 5 and fields[4][:1] == "R" and i + 2 < len(tokens):
            if tokens[i + 1] == gone.path:
                return Version(gone.commit, gone.time, gone.host, tokens[i + 2], "renamed",
                               fields[1], fields[3], previous=gone.path)
            i += 3
        else:
            i += 2
    return gone


def _sizes(repo: Repo, blobs: set[str]) -> dict[str, int]:
    if not blobs:
        return {}
    out = repo.out("cat-file", "--batch-check=%(objectname) %(objectsize)",
                   input="".join(b + "\n" for b in sorted(blobs)))
    sizes = {}
    for line in out.splitlines():
        oid, _, size = line.partition(" ")
        if size.isdigit():
            sizes[oid] = int(size)
    return sizes


def _copies(repo: Repo, names: set[str], versions: list[Version]) -> list[Version]:
    """The conflict copies of path (under any name it had) in HEAD, each as the version it
    holds: when, which host and which commit made it (the commit that last changed the copy
    when that version is not in the path's history)."""
    if repo.head() is None:
        return []
    dirs = {n.rpartition("/")[0] for n in names}
    found = []
    for d in sorted(dirs):
        args = ["ls-tree", "-z", "-l", "--full-tree", "HEAD"] + (["--", d + "/"] if d else [])
        for item in os.fsdecode(repo.run(*args, env=LITERAL).stdout).split("\0"):
            info, _, copy = item.partition("\t")
            fields = info.split()
            if len(fields) != 4 or fields[1] != "blob" or not is_conflict_copy(copy) or \
                    not any(is_copy_of(copy, n) for n in names):
                continue
            mode, blob, size = fields[0], fields[2], fields[3]
            made = next((v for v in versions if v.blob == blob), None)
            if made is not None:
                commit, when, host = made.commit, made.time, made.host
            else:
                line = repo.out("log", "-1", "--format=%H%x00%ct%x00%an%x00%s", "HEAD", "--",
                                copy, env=LITERAL).split("\0", 3)
                tip = Tip(line[0], int(line[1]), line[3], line[2])
                commit, when, host = tip.oid, tip.time, tip.host
            found.append(Version(commit, when, host, copy, "conflict copy", mode, blob,
                                 int(size) if size.isdigit() else None))
    return found


def _known(repo: Repo, path: str) -> list[Version]:
    """_log(path); Error when git never knew it."""
    found = _log(repo, path)
    if not found:
        exists = os.path.lexists(os.path.join(repo.work_tree, path))
        raise Error(f"'{path}' has no history: " + (
            "it was never committed" if exists else "git never knew a file by that name"),
            "git autosync sync   (commits it)" if exists else
            "git log --stat   (the names git knows)")
    return found


def versions(repo: Repo, path: str, copies: bool = True) -> list[Version]:
    """The versions of path (relative to the top), newest first; Error when git never
    knew it."""
    found = _known(repo, path)
    sizes = _sizes(repo, {v.blob for v in found if v.blob})
    head = tree_entry(repo, "HEAD", path)
    current = next((i for i, v in enumerate(found)
                    if head is not None and (v.mode, v.blob) == head), None)
    found = [Version(v.commit, v.time, v.host, v.path, v.kind, v.mode, v.blob,
                     sizes.get(v.blob), v.previous, i == current)
             for i, v in enumerate(found)]
    if copies:
        names = {v.path for v in found} | {path}
        found = _copies(repo, names, found) + found
    return sorted(found, key=lambda v: -v.time)  # (stable: git's order among equal times)


def render(path: str, found: list[Version]) -> str:
    """The text `git autosync history` prints: one line per version."""
    width = max(len(v.host) for v in found)
    lines = []
    for v in found:
        what = v.kind
        if v.kind == "renamed" and v.previous == path:
            what += f" to {shown(v.path)}"
        elif v.kind == "renamed" and v.previous:
            what += f" from {shown(v.previous)}"
        if v.kind == "conflict copy":
            what += f": {shown(v.path)}"
        elif v.path != path and v.kind != "renamed":
            what += f" (as {shown(v.path)})"
        if v.current:
            what += ", current"
        if v.mode == SYMLINK:
            what += " (symlink)"
        elif v.mode == EXECUTABLE:
            what += " (executable)"
        size = "-" if v.size is None else human_size(v.size)
        lines.append(f"{local_time(v.time)}  {v.host:<{width}}  {size:>9}  {v.commit[:10]}"
                     f"  {what}")
    return "\n".join(lines)


def human_size(n: int) -> str:
    if n < 10000:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_ = n / 1024
        if n_ < 10000 or unit == "GiB":
            return f"{n_:.1f} {unit}"
        n = int(n_)
    return f"{n} B"  # (not reached)


# -- restore ---------------------------------------------------------------------------------
@dataclass
class Restored:
    path: str
    source: str  # the commit whose version came back
    time: int  # when that version was made
    host: str  # and by which host
    commit: str | None = None  # the new commit; None when the file was that version already
    saved: str | None = None  # the commit of the local edit committed first
    daemon: int | None = None  # the running daemon, asked to push
    has_remote: bool = False


def when_to_commit(repo: Repo, at: str) -> str:
    """The commit --at names: a commit-ish, else the newest commit older than a date."""
    oid = repo.rev(at) if at and not at.startswith("-") else None
    if oid:
        return oid
    if REVISION.search(at) or (HEX.fullmatch(at) and not at.isdigit()):
        raise Error(f"'{at}' names no commit here", WHEN_HINT)  # (approxidate takes it)
    # git's careful date parser (rev-list's own takes anything, as "now"): an error for junk
    checked = repo.run("-c", f"restore.when={at}", "config", "--type=expiry-date",
                       "restore.when", check=False)
    if checked.returncode != 0 or not at.strip():
        raise Error(f"'{at}' is neither a commit nor a date git understands", WHEN_HINT)
    found = repo.out("rev-list", "-1", f"--before={at}", "HEAD") if repo.head() else ""
    if not found:
        raise Error(f"no commit is older than '{at}'", WHEN_HINT)
    return found


def _version_at(repo: Repo, path: str, commit: str) -> tuple[str, str, str]:
    """(mode, blob, name) of path's version as of commit: under its own name there, or
    under a name it had before a rename (one whose content is a version of path)."""
    entry = tree_entry(repo, commit, path)
    name = path
    if entry is None:
        known = [v for v in _known(repo, path) if v.blob]
        blobs = {v.blob for v in known}
        for other in dict.fromkeys(v.path for v in known if v.path != path):
            e = tree_entry(repo, commit, other)
            if e is not None and e[1] in blobs:
                entry, name = e, other
                break
    if entry is None:
        raise Error(f"'{path}' did not exist as of {commit[:10]} "
                    f"({local_time(describe(repo, commit).time)})",
                    HISTORY_HINT.format(shown(path)))
    if entry[0] not in ("100644", EXECUTABLE, SYMLINK):
        raise Error(f"'{path}' was {'a submodule' if entry[0] == GITLINK else 'a directory'}"
                    f" as of {commit[:10]}: nothing to restore")
    return entry[0], entry[1], name


def _previous(repo: Repo, path: str) -> Version:
    """The version before the current one; for a deleted file, its last version."""
    head = tree_entry(repo, "HEAD", path)
    for v in _known(repo, path):
        if v.blob and (v.mode, v.blob) != head:
            return v
    raise Error(f"'{path}' has no earlier version to restore",
                HISTORY_HINT.format(shown(path)))


def differs(repo: Repo, path: str) -> bool:
    """Whether the work tree (or the index) holds something at path other than HEAD's
    version: an edit, a deletion, a new or an ignored file where HEAD has none."""
    if tree_entry(repo, "HEAD", path) is None:
        return os.path.lexists(os.path.join(repo.work_tree, path))
    return bool(changed_entries(repo, [path]))


def restore(repo: Repo, path: str, at: str | None = None) -> Restored:
    """Bring back path's version as of `at` (a commit-ish or a date; None: the version
    before the current one, or the last one of a deleted file) as a new commit."""
    config = Config(repo)
    target = when_to_commit(repo, at) if at is not None else None
    with repo.lock():
        check_committable(repo)
        check_branch(repo, config)
        replace.recover(repo)  # a restore that was killed: finished first
        saved = None
        if differs(repo, path):  # the user's save first: both stay in history
            saved = commit_changes(repo, config, [path]).commit
            if differs(repo, path):
                raise Error(f"'{path}' holds changes autosync does not commit (ignored, a "
                            "temp name, or larger than autosync.maxFileSize); not "
                            "overwriting them", "move it aside, then restore again")
        if target is None:
            v = _previous(repo, path)
            mode, blob, source, when, host = v.mode, v.blob, v.commit, v.time, v.host
        else:
            mode, blob, name = _version_at(repo, path, target)
            tip = describe(repo, target, name)
            source, when, host = target, tip.time, tip.host
        replace.write_version(repo, path, mode, blob, tree_entry(repo, "HEAD", path))
        result = commit_changes(repo, config, [path],
                                summary=f"restore {_short(path)} as of {source[:10]}")
        if result.commit is None and differs(repo, path):
            raise Error(f"restored '{path}' in the work tree but did not commit it: "
                        + ("larger than autosync.maxFileSize" if result.skipped_large
                           else "autosync does not commit it"),
                        f"git config autosync.maxFileSize {config['maxFileSize'] * 2}"
                        if result.skipped_large else f"git add -- {shown(path)}")
    done = Restored(path, source, when, host, result.commit, saved,
                    has_remote=config.has_remote)
    pid = pidfile.running_pid(repo)
    if result.commit and pid and pid > 0 and config["push"]:
        try:
            os.kill(pid, signal.SIGUSR1)  # as the post-commit hook does: it pushes
            done.daemon = pid
        except OSError:
            pass
    return done


def render_restored(r: Restored) -> str:
    lines = []
    if r.saved:
        lines.append(f"committed the local edit of {shown(r.path)} first as {r.saved[:10]} "
                     "(it stays in history)")
    version = f"{r.source[:10]} ({local_time(r.time)}, host {r.host})"
    if r.commit is None:
        lines.append(f"{shown(r.path)} is already as of {version}: nothing to restore")
        return "\n".join(lines)
    lines.append(f"restored {shown(r.path)} as of {version} in commit {r.commit[:10]}")
    if r.daemon:
        lines.append(f"the daemon (pid {r.daemon}) pushes it")
    elif r.has_remote:
        lines.append("no daemon is running: 'git autosync sync' pushes it")
    return "\n".join(lines)


# -- git autosync history / restore -------------------------------------------------------
def cmd_history(repo: Repo, args: argparse.Namespace) -> int:
    path = resolve(repo, args.path, start_dir(repo, args.dir))
    found = versions(repo, path)
    if args.json:
        print(json.dumps([v.as_json() for v in found], indent=1))
    else:
        print(render(path, found))
    return OK


def cmd_restore(repo: Repo, args: argparse.Namespace) -> int:
    path = resolve(repo, args.path, start_dir(repo, args.dir))
    setup_logging()  # (what the commits say, as for sync)
    print(render_restored(restore(repo, path, args.at)))
    return OK
