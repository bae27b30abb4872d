"""Move the work tree from a commit to a descendant: never where git would not write, never
a lost save, and safe to kill at any instant.

An update runs in four steps, each one recoverable:

1. Check (nothing written yet). The new tree is refused whole if git would refuse it
   (treecheck). A changed file holding edits not committed yet, or an untracked file in the
   way of an added path, raises Busy when autosync would commit it (the caller commits, then
   updates again); one autosync never commits (too big, ignored, a temp name, a nested
   repository) is moved to $GIT_DIR/autosync/kept/ instead, so it can never block syncing.
2. Stage. The new versions are written by `git checkout-index` into the journal,
   $GIT_DIR/autosync/update.new/, beside a plan naming the two commits; renaming the
   directory to update/ starts the update. Temp files never live in the work tree.
3. Apply, path by path, through directory descriptors (safefs: no symlink is ever followed
   in a leading component). A changed file is swapped with its new version in one atomic
   renameat2(RENAME_EXCHANGE), so readers never see it missing; what comes out is compared
   with its committed blob and deleted only when equal. Anything else is a save that landed
   meanwhile: it goes back to its path (a save is newer than the merge) and the new version
   is kept beside it as a conflict copy. Deletions move the file into the journal first and
   compare it the same way. Added files are renamed in with RENAME_NOREPLACE.
4. The index takes the new entries (refreshed from the placed files), the branch moves
   (compare-and-swap), and the journal is removed.

recover() runs before every commit and every update: with a journal present it runs step 3
again from wherever the files are (every step is decided by looking at the files, so a
second run completes the first), then step 4. No deletion is committed while an update is
unfinished, and nothing leaves the journal unless it is verified committed content.
"""

import json
import os
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import safefs
from .copies import copy_name, describe
from .git import Objects, Repo
from .safefs import Blocked, Root
from .treecheck import Refused, check_update, diff_entries
from .util import Error, Retry, log

GITLINK, SYMLINK, TREE = "160000", "120000", "040000"
CHUNK = 1 << 16
JOURNAL, STAGING, KEPT = "update", "update.new", "kept"
# git's own path checks as strict as on Windows and macOS, wherever we run
PROTECT = ("-c", "core.protectNTFS=true", "-c", "core.protectHFS=true")
ABSENT, DIR, NEW, OLD, USER = "absent", "dir", "new", "old", "user"
RACY_NS = 3_000_000_000  # a file written this recently is read, not known by its stat data

Entry = tuple[str, str]  # (mode, blob id) of a path in a commit
StatKey = tuple[int, ...]  # stat_key(), full_stat_key()
Moved = list[tuple[str, str]]  # (path, where its other version went)

__all__ = ["Busy", "Refused", "advance", "recover", "changes"]


class Busy(Error):
    """Local changes are in the way: commit them, then update again."""


# -- the fault-injection seam ---------------------------------------------------------------
# tests: called as step_hook(name, path) at every step of an update
step_hook: Callable[[str, str], object] | None = None
_fault_counts: dict[str, int] = {}


def step(name: str, path: str = "") -> None:
    """A point an update can die at. GIT_AUTOSYNC_FAULT=NAME[:N] kills the process (SIGKILL)
    the Nth time (default: first) it reaches step NAME; only the test suite sets it."""
    if step_hook is not None:
        step_hook(name, path)
    fault = os.environ.get("GIT_AUTOSYNC_FAULT")
    if fault:
        want, _, nth = fault.partition(":")
        if want == name:
            _fault_counts[name] = _fault_counts.get(name, 0) + 1
            if _fault_counts[name] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)


# -- what changes -----------------------------------------------------------------------------
class Change:
    __slots__ = ("path", "old", "new")

    def __init__(self, path: str, old: Entry | None, new: Entry | None) -> None:
        self.path, self.old, self.new = path, old, new  # (mode, oid) or None

    def __repr__(self) -> str:
        return f"Change({self.path!r}, {self.old}, {self.new})"


def changes(repo: Repo, old: str, new: str) -> list[Change]:
    """What differs between two commits, without submodules (never checked out here)."""
    return diff(repo, old, new)[0]


Subtrees = list[tuple[str, str]]  # (path, tree id)


def diff(repo: Repo, old: str, new: str) -> tuple[list[Change], Subtrees]:
    """changes(old, new), and the subtrees of new whose ids differ from old's (for
    treecheck.check_update): from one git diff-tree."""
    result, subtrees = [], []
    for om, nm, oo, no, path in diff_entries(repo, old, new):
        if nm == TREE:
            subtrees.append((path, no))
        old_side: Entry | None = None if om in ("000000", GITLINK, TREE) else (om, oo)
        new_side: Entry | None = None if nm in ("000000", GITLINK, TREE) else (nm, no)
        if old_side or new_side:
            result.append(Change(path, old_side, new_side))
    return result, subtrees


class Blobs:
    """Committed blobs read through an Objects reader, compared with files.
    converts() says whether git may convert a file on checkout (converts(), by default)."""

    def __init__(self, objects: Objects, may_convert: Callable[[], bool] | None = None) -> None:
        self.objects = objects
        self.may_convert = may_convert or (lambda: converts(objects.repo))

    def _header(self, oid: str) -> int:
        header = self.objects.header(oid)
        return header[1] if header else -1

    def content(self, oid: str) -> bytes | None:
        size = self._header(oid)
        if size < 0:
            return None
        data = self.objects.read(size)
        self.objects.end()
        return data

    def same(self, oid: str, fd: int, size: int) -> bool:
        """Whether the open file holds exactly blob oid (bytes, before any filter)."""
        blob_size = self._header(oid)
        equal = blob_size >= 0 and blob_size == size
        left = max(blob_size, 0)
        while left:
            want = self.objects.read(min(CHUNK, left))
            if not want:  # git went away
                raise OSError(0, "git cat-file ended early")
            left -= len(want)
            if equal and os.read(fd, len(want)) != want:
                equal = False
        if blob_size >= 0:
            self.objects.end()
        return equal

    def holds(self, root: Root, rel: str, st: os.stat_result, entry: Entry, path: str) -> bool:
        """Whether root/rel (st: its lstat) holds the version entry of path, as checkout
        writes it: a symlink to the blob's text, or a file whose bytes are the blob's (or
        the same after git's filters for path: eol, clean). The x bit is not compared."""
        mode, oid = entry
        if mode == SYMLINK:
            return stat.S_ISLNK(st.st_mode) and \
                os.fsencode(root.readlink(rel)) == self.content(oid)
        if not stat.S_ISREG(st.st_mode):
            return False
        fd = root.open(rel)
        try:
            if self.same(oid, fd, st.st_size):
                return True
            if not self.may_convert():
                return False
            # not byte-equal: the same after git's filters (eol, clean) still counts
            os.lseek(fd, 0, os.SEEK_SET)
            res = self.objects.repo.run("hash-object", "--stdin", f"--path={path}", stdin=fd,
                                        check=False)
        finally:
            os.close(fd)
        return res.returncode == 0 and res.stdout.decode().strip() == oid


def converts(repo: Repo) -> bool:
    """Whether checked-out bytes can differ from the blob: eol settings, attributes."""
    cfg = repo.run("config", "--get-regexp", r"^core\.(autocrlf|eol)$",
                   check=False).stdout.decode().split()
    attrs = repo.run("ls-files", "-z", "--", ":(glob)**/.gitattributes", check=False).stdout
    home = repo.env.get("XDG_CONFIG_HOME") or os.path.join(repo.env.get("HOME", "/"), ".config")
    return bool(attrs or any(v in ("true", "input", "crlf") for v in cfg[1::2])
                or os.path.exists(os.path.join(repo.common_dir, "info", "attributes"))
                or os.path.exists(os.path.join(home, "git", "attributes"))
                or repo.ok("config", "core.attributesFile"))


# -- one update ----------------------------------------------------------------------------
class Update:
    """Steps 3 and 4 for one plan; every step looks at the files before it acts."""

    def __init__(self, repo: Repo, plan: "Plan", journal_dir: str,
                 objects: Objects | None = None) -> None:
        self.repo, self.plan = repo, plan
        self.tree = Root(repo.work_tree)
        self.journal = Root(journal_dir)
        self.objects = objects or Objects(repo)
        self.own_objects = objects is None  # closed with the update
        self.blobs = Blobs(self.objects, self.may_convert)
        self.copies: Moved = []  # (path, copy): a new version kept beside a save that won
        self.kept: Moved = []  # (path, where): local content moved out of the way, under kept/
        self.index: dict[str, int] = {}  # path -> its position in the list of changes
        self.spares = 0
        self.converts: bool | None = None  # whether git may convert files on checkout
        # path -> full_stat_key of its committed version, before the update
        self.clean: dict[str, StatKey] = {}
        # path -> stat_key of a file seen unwritten just before it moved
        self.unwritten: dict[str, StatKey] = {}
        self.todo: list[Change] = []

    def close(self) -> None:
        if self.own_objects:
            self.objects.close()
        self.tree.close()
        self.journal.close()

    # -- looking at files ---------------------------------------------------------------
    def may_convert(self) -> bool:
        """Whether checked-out bytes can differ from the blob (converts()), or will once
        the update brings a .gitattributes."""
        if self.converts is None:
            self.converts = converts(self.repo) or \
                any(c.path.rpartition("/")[2] == ".gitattributes" for c in self.todo)
        return self.converts

    def classify(self, root: Root, rel: str, c: Change, old_first: bool = False) -> str:
        """ABSENT, DIR, NEW (the new version), OLD (the committed one) or USER (a save).
        old_first: what came out of the work tree is most likely the committed version."""
        st = root.lstat(rel)  # a leading path that is not a directory: None, like absent
        k = safefs.kind(st)
        if st is None or k is None:
            return ABSENT
        if k == "dir":
            return DIR
        if k == "other":
            return USER
        if old_first and self.unwritten.get(c.path) == stat_key(st):
            return OLD  # the very file git found unchanged, not written before it moved
        if old_first and c.old and (not c.new or c.old[1] != c.new[1]) and \
                self.blobs.holds(root, rel, st, c.old, c.path):
            return OLD
        if c.new and self.blobs.holds(root, rel, st, c.new, c.path):
            if c.old and c.old[1] == c.new[1] and c.old[0] != c.new[0] and k == "file":
                # only the mode changed: the x bit tells which one this is
                return NEW if bool(st.st_mode & 0o100) == (c.new[0] == "100755") else OLD
            return NEW
        if c.old and self.blobs.holds(root, rel, st, c.old, c.path):
            return OLD
        return USER

    # -- moving things ----------------------------------------------------------------------
    def _swap(self, loc: str, c: Change) -> tuple[str, bool]:
        """Exchange journal loc with the work-tree path. Returns the journal name that now
        holds what was at the path, and whether loc's content is at the path for sure."""
        if safefs.exchange(self.journal, loc, self.tree, c.path):
            return loc, True
        # no RENAME_EXCHANGE here (NFS, some FUSE): move out, then in (git leaves a gap too)
        while True:  # a fresh name (a recovery may find earlier ones)
            self.spares += 1
            spare = f"out/{self.index.get(c.path, 0)}.{self.spares}"
            if self.journal.lstat(spare) is None:
                break
        safefs.move_noreplace(self.tree, c.path, self.journal, spare)
        try:
            safefs.move_noreplace(self.journal, loc, self.tree, c.path)
        except FileExistsError:  # a save took the empty path: it stays; loc is resolved
            self.resolve(loc, c)
            return spare, False
        return spare, True

    def keep(self, root: Root, rel: str, path: str) -> None:
        """Move root/rel to $GIT_DIR/autosync/kept/<time>/<path>: out of the way, not lost."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(self.repo.state_dir, KEPT)
        os.makedirs(base, exist_ok=True)
        kept = Root(base)
        try:
            for n in range(1000):
                dest = f"{stamp}{'-%d' % n if n else ''}/{path}"
                if kept.lstat(dest) is None:
                    break
            fd, name = root.at(rel)
            kfd, kname = kept.at(dest, create=True)
            os.rename(name, kname, src_dir_fd=fd, dst_dir_fd=kfd)  # a fresh name of ours
        finally:
            kept.close()
        where = os.path.join(base, dest)
        log.warning("kept '%s' as '%s'", path, where)
        self.kept.append((path, where))
        step("kept", path)

    def beside(self, loc: str, c: Change, merged: bool) -> None:
        """Keep journal loc as a conflict copy next to its path (or under kept/)."""
        for n in range(1, 100):
            name = self.plan.copy_name(self.repo, c.path, n, merged)
            try:
                safefs.move_noreplace(self.journal, loc, self.tree, name)
            except FileExistsError:
                continue
            except Blocked:
                break
            log.warning("'%s' was saved during the merge: the save stays, the %s is kept "
                        "as '%s'", c.path, "merged version" if merged else "older save", name)
            self.copies.append((c.path, name))
            step("beside", c.path)
            return
        self.keep(self.journal, loc, c.path)

    # -- one path -------------------------------------------------------------------------------
    def resolve(self, loc: str, c: Change, tree_kind: str | None = None) -> None:
        """Journal loc holds something that left the work tree: drop it if it is committed
        content, else put it back (a save wins its path) or beside (a second save)."""
        for _ in range(6):
            k = self.classify(self.journal, loc, c, old_first=True)
            if k == ABSENT:
                return
            p = tree_kind or self.classify(self.tree, c.path, c)
            tree_kind = None
            if k == OLD or (k == NEW and p == NEW):
                self.journal.unlink(loc)  # verified: committed content
                return
            if p == ABSENT:
                try:
                    safefs.move_noreplace(self.journal, loc, self.tree, c.path)
                except FileExistsError:
                    continue
                except Blocked:
                    return self.keep(self.journal, loc, c.path)
                step("put-back", c.path)
                return
            if k != p and p in (NEW, OLD):  # loc goes to the path; what was there comes out
                loc, placed = self._swap(loc, c)
                step("swapped-back", c.path)
                tree_kind = k if placed else None
                continue
            return self.beside(loc, c, merged=(k == NEW))  # the path holds a save, or a dir
        self.keep(self.journal, loc, c.path)

    def seen_unwritten(self, c: Change, st: os.stat_result | None) -> None:
        """Just before moving the file at c.path: if nothing has written to it since git
        found it clean (ctime included), what comes out is known by its stat data."""
        if st is not None and self.clean.get(c.path) == full_stat_key(st):
            self.unwritten[c.path] = stat_key(st)

    def delete(self, i: int, c: Change) -> None:
        loc = f"out/{i}"
        if self.journal.lstat(loc) is None:
            st = self.tree.lstat(c.path)
            k = safefs.kind(st)
            self.seen_unwritten(c, st)
            if k is None or k == "dir":
                return  # gone already, or the user put a directory there
            try:
                safefs.move_noreplace(self.tree, c.path, self.journal, loc)
            except (FileNotFoundError, Blocked):
                return
            step("moved-out", c.path)
        self.resolve(loc, c)

    def put(self, c: Change, staged_is_new: bool) -> None:
        loc = "new/" + c.path
        if not staged_is_new:
            if self.journal.lstat(loc) is None:
                return  # placed already
            if self.classify(self.journal, loc, c) != NEW:
                return self.resolve(loc, c)  # what an exchange took out, before a crash
        for _ in range(6):
            try:
                self.tree.dir(os.path.dirname(c.path), create=True)
                st = self.tree.lstat(c.path)
                k = safefs.kind(st)
            except Blocked:  # something that is not a directory sits on the way
                return self.keep(self.journal, loc, c.path)
            if k == "dir":
                try:
                    self.tree.rmdir(c.path)  # an empty directory holds nothing to keep
                    continue
                except OSError:
                    return self.beside(loc, c, merged=True)
            if k is None:
                try:
                    safefs.move_noreplace(self.journal, loc, self.tree, c.path)
                except FileExistsError:
                    continue
                step("placed", c.path)
                return
            self.seen_unwritten(c, st)
            out, placed = self._swap(loc, c)
            step("exchanged", c.path)
            return self.resolve(out, c, tree_kind=NEW if placed else None)
        self.resolve(loc, c)

    def redo_preparation(self, todo: list[Change]) -> None:
        """Recovery: what step 1 moved out of the way goes out of the way again, and a new
        version a reset by hand undid is checked out into the journal again."""
        self.todo = todo
        self.index = {c.path: i for i, c in enumerate(todo)}
        # what the no-RENAME_EXCHANGE fallback took out of the tree (out/<i>.<n>): back to
        # its path if it is a save, like anything else that left the work tree
        for name in sorted(os.listdir(os.path.join(self.journal.path, "out"))):
            c = _nth(todo, name.split(".", 1)[0])
            if "." in name and c is not None:
                self.resolve(f"out/{name}", c)
        by_path = {c.path: c for c in todo}
        for path, kind in self.plan.blocked:
            k = safefs.kind(self.tree.lstat(path))
            c = by_path.get(path)
            if k is not None and k == kind and \
                    not (c and self.classify(self.tree, path, c) == NEW):
                self.keep(self.tree, path, path)
        missing = []
        for c in todo:
            loc = "new/" + c.path
            if c.new is None:
                continue
            if self.journal.lstat(loc) is not None:
                if self.classify(self.journal, loc, c) == NEW:
                    continue  # staged: apply() places it
                self.resolve(loc, c)  # what an exchange took out before the crash
            # the old version back (`git reset --hard` by hand) or nothing there: check the
            # new one out again (a save at the path won it; its copy is beside it already)
            if self.classify(self.tree, c.path, c) in (OLD, ABSENT):
                missing.append(c)
        checkout_into(self.repo, self.journal.path, missing)

    def prune(self, paths: list[str]) -> None:
        """Remove the directories deletions left empty, deepest first."""
        dirs = set()
        for p in paths:
            while "/" in p:
                p = p.rpartition("/")[0]
                dirs.add(p)
        for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            try:
                self.tree.rmdir(d)
            except (OSError, Blocked):
                pass

    def apply(self, todo: list[Change], staged_is_new: bool) -> None:
        self.todo = todo
        self.index = {c.path: i for i, c in enumerate(todo)}
        deletions = [(i, c) for i, c in enumerate(todo) if c.new is None]
        for i, c in reversed(deletions):
            self.delete(i, c)
        self.prune([c.path for _, c in deletions])
        for c in todo:
            if c.new is not None:
                self.put(c, staged_is_new)

    # -- step 4 --------------------------------------------------------------------------------
    def finish(self, todo: list[Change], move_branch: bool = True) -> None:
        repo, plan = self.repo, self.plan
        zero = "0" * len(plan.new)
        lines = [f"0 {zero}\t{c.path}\0" for c in todo if c.new is None] + \
                [f"{c.new[0]} {c.new[1]}\t{c.path}\0" for c in todo if c.new is not None]
        # the new entries, then stat data from the placed files (a save keeps showing as
        # modified: only content equal to the entry is marked clean)
        res = repo.run(*PROTECT, "update-index", "-z", "--index-info", check=False,
                       input="".join(lines).encode(errors="surrogateescape"))
        if res.returncode != 0:
            raise OSError(0, _first_line(res.stderr) or "git update-index failed")
        repo.run("update-index", "-q", "--refresh", check=False)
        step("index")
        if move_branch:
            res = repo.run("update-ref", "-m", "autosync: merge", f"refs/heads/{plan.branch}",
                           plan.new, plan.old, check=False)
            if res.returncode != 0:
                log.warning("'%s' moved while merging; the merged files are in the work tree "
                            "and will be committed on top of it", plan.branch)
        step("ref")
        self.drain(todo)

    def drain(self, todo: list[Change]) -> None:
        """Anything still in the journal is committed content (dropped) or kept."""
        self.todo = todo
        by_path = {c.path: c for c in todo}
        for top in ("new", "out"):
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.journal.path, top)):
                for name in filenames + [d for d in dirnames
                                         if os.path.islink(os.path.join(dirpath, d))]:
                    rel = os.path.relpath(os.path.join(dirpath, name), self.journal.path)
                    inner = rel.split("/", 1)[1]
                    c = by_path.get(inner) if top == "new" else \
                        _nth(todo, inner.split(".", 1)[0])
                    k = self.classify(self.journal, rel, c) if c else USER
                    if k in (OLD, NEW):
                        self.journal.unlink(rel)
                    else:
                        self.keep(self.journal, rel, c.path if c else inner)


def _nth(todo: list[Change], text: str) -> Change | None:
    return todo[int(text)] if text.isdigit() and int(text) < len(todo) else None


# -- the plan --------------------------------------------------------------------------------
class Plan:
    """The journal's plan.json: the two commits, and how to name conflict copies."""
    FIELDS = ("branch", "old", "new", "copy_from", "local_host", "blocked")

    def __init__(self, branch: str, old: str, new: str, copy_from: str, local_host: str,
                 blocked: Iterable[Iterable[Any]] = ()) -> None:
        self.branch, self.old, self.new = branch, old, new
        self.copy_from, self.local_host = copy_from, local_host  # (a commit id; this host)
        # [path, kind]: moved to kept/ first (as plan.json holds it)
        self.blocked = [list(b) for b in blocked]
        self.named: tuple[str, int] | None = None  # (host, time) a version 1 plan gave

    def copy_name(self, repo: Repo, path: str, n: int, merged: bool) -> str:
        """A name beside path for the merged version (named after the commit it came
        from) or for an older save (named after this machine)."""
        if merged:
            if self.named is None:
                origin = describe(repo, self.copy_from)
                self.named = origin.host, origin.time
            return copy_name(path, *self.named, n)
        return copy_name(path, self.local_host, int(time.time()), n)

    def to_json(self) -> str:
        return json.dumps(dict({f: getattr(self, f) for f in self.FIELDS}, v=2))

    @classmethod
    def load(cls, path: str) -> "Plan":
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("v") not in (1, 2):
            raise ValueError("unknown format")
        if d["v"] == 1:  # left by an older version: the copy's host and time as such
            plan = cls(d["branch"], d["old"], d["new"], d["new"], d["local_host"],
                       d.get("blocked", []))
            try:
                plan.named = str(d["copy_host"]), int(d["copy_time"])
            except OverflowError as e:  # (json.load takes Infinity)
                raise ValueError("copy_time out of range") from e
            return plan
        return cls(**{f: d[f] for f in cls.FIELDS[:-1]}, blocked=d.get("blocked", []))


def _journal(repo: Repo, name: str = JOURNAL) -> str:
    return os.path.join(repo.state_dir, name)


def _write_synced(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(repo: Repo, plan: Plan, todo: list[Change]) -> None:
    """Step 2: the new versions checked out into the journal, then the journal started."""
    base = repo.ensure_state_dir()
    tmp = _journal(repo, STAGING)
    shutil.rmtree(tmp, ignore_errors=True)  # an unstarted update: checked-out blobs only
    os.mkdir(tmp, 0o700)
    try:
        checkout_into(repo, tmp, [c for c in todo if c.new is not None])
        os.mkdir(os.path.join(tmp, "out"))
        os.makedirs(os.path.join(tmp, "new"), exist_ok=True)
        _write_synced(os.path.join(tmp, "plan.json"), plan.to_json())
        _fsync_dir(tmp)
        os.rename(tmp, _journal(repo))
        _fsync_dir(base)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Retry(f"cannot prepare the merge in '{tmp}': {e.strerror}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    step("staged")


def checkout_into(repo: Repo, journal: str, placed: list[Change]) -> None:
    """The new versions of `placed`, written by git (filters, eol, modes) to journal/new/."""
    if not placed:
        return
    index = os.path.join(journal, "index")
    env = {"GIT_INDEX_FILE": index}
    res = repo.run(*PROTECT, "update-index", "-z", "--index-info", env=env, check=False,
                   input="".join(f"{c.new[0]} {c.new[1]}\t{c.path}\0" for c in placed
                                 if c.new is not None).encode(errors="surrogateescape"))
    if res.returncode != 0:  # git's own verify_path() said no
        raise Refused(_first_line(res.stderr) or "git refuses one of its paths")
    res = repo.run("checkout-index", "-q", "-z", "--stdin", f"--prefix={journal}/new/",
                   env=env, check=False,
                   input="".join(c.path + "\0" for c in placed).encode(errors="surrogateescape"))
    os.unlink(index)
    if res.returncode != 0:
        raise Retry(f"cannot prepare the merge in '{journal}': "
                    + (_first_line(res.stderr) or "git checkout-index failed"))


def _first_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[0].split(": ", 1)[-1] if lines else ""


# -- step 1: what is in the way ----------------------------------------------------------------
def stat_key(st: os.stat_result) -> StatKey:
    """What stays the same when nothing wrote to a file but our own rename (which changes
    its ctime)."""
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size, st.st_mode)


def full_stat_key(st: os.stat_result) -> StatKey:
    """stat_key plus ctime, the one time no tool can set: any write, even one that puts
    the mtime back (touch -r, rsync -t), changes it."""
    return stat_key(st) + (st.st_ctime_ns,)


def in_the_way(repo: Repo, todo: list[Change]) -> tuple[set[str], list[str], dict[str, StatKey]]:
    """(dirty, obstacles, clean): changed tracked paths holding edits not committed yet,
    untracked files or directories where the update puts something, and the stat data of
    the other changed tracked files, taken before git confirmed their content."""
    tree = Root(repo.work_tree)
    try:
        olds = [c.path for c in todo if c.old is not None]
        clean: dict[str, StatKey] = {}
        devices = {os.fstat(tree.fd).st_dev: ""}
        # a save lands with an mtime of now or later, even where timestamps are coarse
        # (1 s, 2 s on FAT): only files older than that are known by their stat data
        settled = time.time_ns() - RACY_NS
        for path in olds:
            st = tree.lstat(path)
            if st is not None:
                if st.st_mtime_ns < settled:
                    clean[path] = full_stat_key(st)
                devices.setdefault(st.st_dev, path)
        # status, not diff-files: a file touched but unchanged is not an edit
        args = ["status", "--porcelain=v1", "-z", "--untracked-files=no", "--no-renames"]
        if len(olds) <= 256:
            args += ["--"] + olds
        dirty: set[str] = set()
        if olds:
            out = os.fsdecode(repo.run(*args, env={"GIT_LITERAL_PATHSPECS": "1",
                                                   "GIT_OPTIONAL_LOCKS": "0"}).stdout)
            wanted = set(olds)
            dirty = {e[3:] for e in out.split("\0") if e[3:] in wanted}
        deleted = {c.path for c in todo if c.new is None}
        blocked = []
        for c in todo:
            if c.new is None or c.old is not None:
                continue
            parts = c.path.split("/")
            for k in range(1, len(parts) + 1):
                prefix = "/".join(parts[:k])
                st = tree.lstat(prefix)
                kd = safefs.kind(st)
                if st is not None:
                    devices.setdefault(st.st_dev, prefix)
                if kd is None or (prefix in deleted and kd != "dir"):
                    break  # nothing there (after the deletions)
                if kd == "dir" and k < len(parts):
                    continue
                if kd != "dir" or _untracked_inside(repo, prefix):
                    blocked.append(prefix)
                break
        journal_dev = os.stat(repo.ensure_state_dir()).st_dev
        for dev, path in devices.items():
            if dev != journal_dev:  # renames cannot cross file systems
                raise Error(f"cannot merge: '{path or repo.top}' is on another file system "
                            f"than '{repo.git_dir}'",
                            "keep the work tree and its .git directory on one file system "
                            "(no mount points inside the work tree)")
        for path in dirty | _flagged(repo, olds):
            clean.pop(path, None)
        return dirty, sorted(set(blocked)), clean
    finally:
        tree.close()


def _flagged(repo: Repo, paths: list[str]) -> set[str]:
    """Paths marked assume-unchanged or skip-worktree: git status says nothing about them,
    so their content is compared, never trusted."""
    if not paths:
        return set()
    args = ["ls-files", "-v", "-z"] + (["--"] + paths if len(paths) <= 256 else [])
    out = os.fsdecode(repo.run(*args, env={"GIT_LITERAL_PATHSPECS": "1"}).stdout)
    return {e[2:] for e in out.split("\0") if e and (e[0].islower() or e[0] == "S")}


def _untracked_inside(repo: Repo, path: str) -> bool:
    out = repo.run("ls-files", "-z", "-o", "--directory", "--no-empty-directory", "--",
                   path + "/",
                   env={"GIT_LITERAL_PATHSPECS": "1"}).stdout
    return bool(out.strip(b"\0"))


# -- the entry points ------------------------------------------------------------------------
def advance(repo: Repo, branch: str, old: str, new: str,
            names: tuple[str, str] | None = None,
            uncommittable: Callable[[list[str]], dict[str, str]] | None = None,
            diffed: tuple[list[Change], Subtrees] | None = None) -> tuple[Moved, Moved]:
    """Update work tree, index and branch from old to new (a descendant of old).

    names: (commit, host): the commit whose host and time name a copy of a new version
    that a save pushed aside, and this machine's host for an older save (default: new,
    'local').
    uncommittable(paths) -> {path: reason} for those autosync would not commit (default:
    none). diffed: diff(repo, old, new), when the caller has it already. Returns (copies,
    kept): new versions kept beside a save, local content moved out of the way.
    Raises Refused (the new tree is unsafe), Busy (commit first) or Retry; in every case
    before anything in the work tree changed.
    """
    recover(repo)
    objects = Objects(repo)  # one cat-file for the tree check and the file comparisons
    try:
        return _advance(repo, branch, old, new, names, uncommittable, diffed, objects)
    except OSError as e:  # before the update began (it makes a Retry of its own): the
        # cat-file gone (the OOM killer, a corrupt object); nothing changed yet
        raise Retry(f"cannot merge {new[:10]} now ({e.strerror or e}); "
                    "trying again later") from e
    finally:
        objects.close()


def _advance(repo: Repo, branch: str, old: str, new: str, names: tuple[str, str] | None,
             uncommittable: Callable[[list[str]], dict[str, str]] | None,
             diffed: tuple[list[Change], Subtrees] | None,
             objects: Objects) -> tuple[Moved, Moved]:
    todo, subtrees = diffed or diff(repo, old, new)
    check_update(repo, repo.tree(old, objects), repo.tree(new, objects), subtrees, objects)
    dirty, blocked, clean = in_the_way(repo, todo)
    if dirty or blocked:
        reasons = uncommittable(sorted(dirty | set(blocked))) if uncommittable else {}
        pending = [p for p in sorted(dirty) + blocked if p not in reasons]
        if pending:
            raise Busy(f"'{pending[0]}' has changes not committed yet; committing first")
        blocked = [p for p in blocked if p in reasons]
    else:
        reasons = {}
    copy_from, local_host = names or (new, "local")
    tree = Root(repo.work_tree)
    try:
        kinds = [[p, safefs.kind(tree.lstat(p))] for p in blocked]
    finally:
        tree.close()
    plan = Plan(branch, old, new, copy_from, local_host, kinds)
    stage(repo, plan, todo)
    update = Update(repo, plan, _journal(repo), objects)
    update.clean = clean
    try:
        for path in blocked:
            log.warning("'%s' is in the way of the merge (%s)", path, reasons[path])
            update.keep(update.tree, path, path)
        update.apply(todo, staged_is_new=True)
        update.finish(todo)
        shutil.rmtree(_journal(repo))
    except OSError as e:  # a full disk, a vanished directory: the journal completes it later
        raise Retry(f"the merge of {new[:10]} was interrupted ({e.strerror or e}); "
                    "it is completed at the next attempt") from e
    finally:
        update.close()
    return update.copies, update.kept


def interrupted_paths(repo: Repo) -> set[str] | None:
    """The paths an interrupted update is about (its changes and what it moves out of the
    way), or None when there is none or it cannot be read."""
    try:
        plan = Plan.load(os.path.join(_journal(repo), "plan.json"))
        return {c.path for c in changes(repo, plan.old, plan.new)} | \
            {p for p, _ in plan.blocked}
    except (OSError, ValueError, KeyError, TypeError, Error):
        return None


def recover(repo: Repo) -> tuple[Moved, Moved] | None:
    """Complete an update that was interrupted; (copies, kept), or None when there was none.
    The caller holds repo.lock()."""
    shutil.rmtree(_journal(repo, STAGING), ignore_errors=True)  # never started
    journal = _journal(repo)
    if not os.path.isdir(journal):
        return None
    try:
        plan = Plan.load(os.path.join(journal, "plan.json"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Error(f"cannot complete the interrupted merge in '{journal}': "
                    f"{getattr(e, 'strerror', None) or e}",
                    f"look at the files in '{journal}', then move it away") from e
    head = repo.rev(f"refs/heads/{plan.branch}")
    log.warning("completing a merge that was interrupted (%s..%s)", plan.old[:10], plan.new[:10])
    todo = changes(repo, plan.old, plan.new)
    update = Update(repo, plan, journal)
    try:
        if head in (plan.old, plan.new):
            update.redo_preparation(todo)
            update.apply(todo, staged_is_new=False)
            update.finish(todo, move_branch=(head == plan.old))
        else:  # the branch was moved by hand since: only rescue what the journal holds
            log.warning("'%s' moved since; not completing the merge, only keeping its files",
                        plan.branch)
            update.drain(todo)
        shutil.rmtree(journal)
    except OSError as e:
        raise Retry(f"cannot complete the interrupted merge in '{journal}' "
                    f"({e.strerror or e}); trying again later") from e
    finally:
        update.close()
    return update.copies, update.kept
