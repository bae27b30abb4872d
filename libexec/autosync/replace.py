"""Put a committed version of one file in the work tree (restore): safe to kill at any
instant, never a lost save.

The version is written beside its path under a temp name (one autosync never commits) and
swapped in. Before that temp file exists, a journal, $GIT_DIR/autosync/restore.json, names
the path, the two temp names, the version being written and HEAD's version of the path
(the one the swap should take out). The steps:

1. The journal is written (atomically: a whole one or none).
2. The version is written to TEMP (`.autosync-restore.tmp.<pid>`), synced, and renamed to
   READY (`.autosync-restored.tmp.<pid>`): a file under READY is whole.
3. READY is swapped with the path (renameat2 RENAME_EXCHANGE): a reader never sees the
   path missing. Where HEAD has no version of the path it is renamed in, never over
   anything.
4. settle(): what READY holds now is dropped when it is committed content (HEAD's version
   that came out, or the version written when no swap happened). Anything else is a save
   that landed meanwhile: it goes back to its path (the save wins, nothing is restored),
   or beside it as a conflict copy when the path holds yet another save.
5. The journal is removed.

recover() runs under repo.lock() at the start of every restore and of every commit
(commit_changes: `sync`, the daemon at its start and for each save, autosync-commit): a
journal found then is a restore that died. Every decision is taken from what is on disk:
TEMP is removed when it holds a beginning of the version (the write that was cut short),
and step 4 runs on READY. Nothing is deleted that is not provably a copy of committed
content, or a beginning of one. A journal that cannot be read, or that names what restore
never writes (a path git would not check out, a temp name not of these shapes), is set
aside with one warning, and nothing else is touched.
"""

import json
import os
import re
import stat
import time
from dataclasses import dataclass

from . import safefs
from .checkout import Blobs, Entry, _fsync_dir, _write_synced, step
from .config import Config
from .copies import copy_name
from .git import Objects, Repo
from .safefs import Blocked, Root
from .treecheck import name_problem
from .util import Error, log, os_error, read_regular, shown, unlink_if_there

JOURNAL = "restore.json"
TEMP, READY = ".autosync-restore.tmp.{}", ".autosync-restored.tmp.{}"  # (ignore.is_temp)
_TEMP = re.compile(r"\.autosync-restore\.tmp\.[0-9]{1,10}(-[0-9]{1,2})?")
_READY = re.compile(r"\.autosync-restored\.tmp\.[0-9]{1,10}(-[0-9]{1,2})?")
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SYMLINK, EXECUTABLE = "120000", "100755"
MODES = ("100644", EXECUTABLE, SYMLINK)
CHUNK = 1 << 16
MAX_JOURNAL = 1 << 16  # bytes: a path is at most 4096
TRIES = 6  # saves landing one after the other while a save is being put back
ABSENT, DIR, NEW, OLD, OTHER = "absent", "dir", "new", "old", "other"


@dataclass(frozen=True)
class Job:
    """What one restore writes: the journal's content."""
    path: str  # relative to the top of the work tree
    temp: str  # base names, in the path's directory
    ready: str
    mode: str  # the version written
    blob: str
    head: Entry | None  # HEAD's version of path when the restore began

    def rel(self, name: str) -> str:
        return os.path.join(os.path.dirname(self.path), name)

    def to_json(self) -> str:
        return json.dumps({"v": 1, "path": self.path, "temp": self.temp,
                           "ready": self.ready, "mode": self.mode, "blob": self.blob,
                           "head": list(self.head) if self.head else None})

    @classmethod
    def parse(cls, raw: bytes) -> "Job":
        """The journal's Job; ValueError saying why it is not one restore writes."""
        d = json.loads(raw)
        if not isinstance(d, dict) or type(d.get("v")) is not int or d["v"] != 1:
            raise ValueError("not a journal of this version")
        path, temp, ready = d.get("path"), d.get("temp"), d.get("ready")
        mode, blob, head = d.get("mode"), d.get("blob"), d.get("head")
        if not isinstance(mode, str) or mode not in MODES or \
                not isinstance(blob, str) or not _OID.fullmatch(blob):
            raise ValueError("no version to restore")
        if head is not None and not (isinstance(head, list) and len(head) == 2
                                     and head[0] in MODES and isinstance(head[1], str)
                                     and _OID.fullmatch(head[1])):
            raise ValueError("no version of HEAD")
        if not isinstance(path, str) or len(path) > 4096:
            raise ValueError("no path")
        problem = path_problem(path, mode)
        if problem:
            raise ValueError(f"the path {shown(path)} is not one git checks out: {problem}")
        if not isinstance(temp, str) or not _TEMP.fullmatch(temp) or \
                not isinstance(ready, str) or not _READY.fullmatch(ready) or \
                os.path.basename(path) in (temp, ready):
            raise ValueError("temp names restore does not use")
        return cls(path, temp, ready, mode, blob, (head[0], head[1]) if head else None)


def path_problem(path: str, mode: str) -> str | None:
    """Why `git checkout` would not write path (relative to the top), or None: treecheck's
    name checks on every component (no '..', no '.git' in any spelling, nothing empty)."""
    try:
        parts = [os.fsencode(p) for p in path.split("/")]
    except UnicodeError:
        return "not a file name"
    for i, part in enumerate(parts):
        problem = name_problem(part, mode.encode() if i == len(parts) - 1 else b"040000")
        if problem:
            return problem
    return None


def version_bytes(repo: Repo, path: str, mode: str, blob: str) -> bytes:
    """blob as checkout writes it at path: smudge filters and line endings applied (a
    symbolic link: its target)."""
    if mode == SYMLINK:
        return repo.run("cat-file", "blob", blob).stdout
    return repo.run("cat-file", "--filters", f"--path={path}", blob).stdout


def _journal(repo: Repo) -> str:
    return os.path.join(repo.state_dir, JOURNAL)


# -- one restore's files ---------------------------------------------------------------------
class Placer:
    """The two temp files and the path of one Job, looked at before every move."""

    def __init__(self, repo: Repo, job: Job, data: bytes | None = None,
                 root: Root | None = None) -> None:
        self.repo, self.job = repo, job
        self.root = root or Root(repo.work_tree)
        self.objects = Objects(repo)
        self.blobs = Blobs(self.objects)
        self._data = data

    def close(self) -> None:
        self.objects.close()
        self.root.close()

    @property
    def data(self) -> bytes | None:
        """The bytes written (None: git cannot say any more, the blob is gone)."""
        if self._data is None:
            try:
                j = self.job
                self._data = version_bytes(self.repo, j.path, j.mode, j.blob)
            except Error:
                return None
        return self._data

    def what(self, rel: str) -> str:
        """ABSENT, DIR, OLD (HEAD's version when the restore began, x bit included), NEW
        (the version restored) or OTHER (a save) at rel."""
        st = self.root.lstat(rel)
        k = safefs.kind(st)
        if st is None or k is None:
            return ABSENT
        if k == "dir":
            return DIR
        j = self.job
        if j.head is not None and self.blobs.holds(self.root, rel, st, j.head, j.path) and \
                (j.head[0] == SYMLINK or bool(st.st_mode & 0o100) == (j.head[0] == EXECUTABLE)):
            return OLD
        if self.blobs.holds(self.root, rel, st, (j.mode, j.blob), j.path) or \
                self.written(rel, st, whole=True):
            return NEW
        return OTHER

    def written(self, rel: str, st: os.stat_result, whole: bool) -> bool:
        """Whether rel holds the bytes restore writes (whole=False: or a beginning)."""
        data = self.data
        if data is None:
            return False
        if stat.S_ISLNK(st.st_mode):  # (made whole or not at all)
            return self.job.mode == SYMLINK and os.fsencode(self.root.readlink(rel)) == data
        if not stat.S_ISREG(st.st_mode) or st.st_size > len(data) or \
                (whole and st.st_size != len(data)):
            return False
        fd = self.root.open(rel)
        try:
            pos = 0
            while chunk := os.read(fd, CHUNK):  # (ends: past data, nothing is equal)
                if chunk != data[pos:pos + len(chunk)]:
                    return False
                pos += len(chunk)
            return not whole or pos == len(data)
        finally:
            os.close(fd)

    # -- the live restore --------------------------------------------------------------------
    def write(self) -> None:
        """Step 2: the version under TEMP, then whole under READY."""
        j, data = self.job, self._data
        assert data is not None
        parent, _ = self.root.at(j.path)
        if j.mode == SYMLINK:
            os.symlink(os.fsdecode(data), j.temp, dir_fd=parent)
        else:
            fd = os.open(j.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o777 if j.mode == EXECUTABLE else 0o666,
                         dir_fd=parent)  # (the umask applies, as for git)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view[:CHUNK]):]
                    step("restore-write", j.path)
                os.fsync(fd)
            finally:
                os.close(fd)
        step("restore-written", j.path)
        safefs.move_noreplace(self.root, j.rel(j.temp), self.root, j.rel(j.ready))
        step("restore-ready", j.path)

    def place(self) -> bool:
        """Step 3 and 4: True when the path holds the version written, False when a save
        landed at the path meanwhile (it stays)."""
        j = self.job
        ready = j.rel(j.ready)
        if j.head is None:  # no version at the path: nothing may be there
            try:
                safefs.move_noreplace(self.root, ready, self.root, j.path)
            except FileExistsError:
                return self.settle(False)
            step("restore-placed", j.path)
            return True
        try:
            swapped = safefs.exchange(self.root, ready, self.root, j.path)
        except FileNotFoundError:  # the path was deleted meanwhile: a save too
            return self.settle(False)
        if swapped:
            step("restore-exchanged", j.path)
            return self.settle(True)
        if self.what(j.path) != OLD:  # (no RENAME_EXCHANGE here) a save landed
            return self.settle(False)
        fd, name = self.root.at(j.path)
        os.rename(j.ready, name, src_dir_fd=fd, dst_dir_fd=fd)
        step("restore-placed", j.path)
        return True

    # -- after the swap, or after a crash ----------------------------------------------------
    def settle(self, placed: bool) -> bool:
        """Step 4 on READY: committed content is dropped, a save goes back to the path (or
        beside it). Returns placed, or False once a save took the path back."""
        j = self.job
        ready = j.rel(j.ready)
        for _ in range(TRIES):
            k = self.what(ready)
            if k == ABSENT:
                return placed
            if k in (OLD, NEW):
                self.root.unlink(ready)  # verified: committed content
                step("restore-dropped", j.path)
                return placed
            if k == DIR:  # never one of ours
                log.warning("leaving '%s': a directory, not what restore wrote", ready)
                return placed
            placed = False  # a save came out of the path: it goes back
            p = self.what(j.path)
            if p == ABSENT:
                try:
                    safefs.move_noreplace(self.root, ready, self.root, j.path)
                except FileExistsError:
                    continue
                step("restore-put-back", j.path)
                return False
            if p in (OLD, NEW):  # committed content at the path: swapped with the save
                if safefs.exchange(self.root, ready, self.root, j.path):
                    step("restore-swapped-back", j.path)
                    continue  # (what came out is looked at again)
                fd, name = self.root.at(j.path)  # (no RENAME_EXCHANGE here)
                os.rename(j.ready, name, src_dir_fd=fd, dst_dir_fd=fd)
                step("restore-put-back", j.path)
                return False
            self.beside(ready)  # the path holds another save (or a directory)
            return False
        log.warning("leaving '%s': saves keep landing on '%s'", ready, j.path)
        return placed

    def beside(self, ready: str) -> None:
        """An older save (READY) as a conflict copy next to the path, named after this
        machine; left where it is when no name is free."""
        path = self.job.path
        host = Config(self.repo).host
        for n in range(1, 100):
            name = copy_name(path, host, time.time(), n)
            try:
                safefs.move_noreplace(self.root, ready, self.root, name)
            except FileExistsError:
                continue
            log.warning("'%s' was saved while it was being restored: the newer save "
                        "stays, the older one is kept as '%s'", path, name)
            step("restore-beside", path)
            return
        log.warning("leaving '%s': no free name beside '%s'", ready, path)

    def recover(self) -> None:
        """A restore that died: TEMP removed when restore wrote it, READY settled."""
        j = self.job
        temp = j.rel(j.temp)
        st = self.root.lstat(temp)
        if st is not None:
            if safefs.kind(st) != "dir" and self.written(temp, st, whole=False):
                self.root.unlink(temp)  # the write that was cut short
            else:
                log.warning("leaving '%s': not what restore wrote", temp)
        self.settle(True)


def _fresh(parent: int) -> tuple[str, str]:
    """TEMP and READY names free in the directory parent: a file an older version left
    there (no journal names it) is never taken over."""
    def free(name: str) -> bool:
        try:
            os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return True
        return False

    pid = os.getpid()
    for n in range(100):
        suffix = f"{pid}-{n}" if n else str(pid)
        names = TEMP.format(suffix), READY.format(suffix)
        if free(names[0]) and free(names[1]):
            return names
    raise Error("cannot find a free temp name beside the file")


# -- the entry points ------------------------------------------------------------------------
def write_version(repo: Repo, path: str, mode: str, blob: str, head: Entry | None) -> None:
    """Put blob at path (relative to the top) with mode, where head is HEAD's version of
    path (None: none). Caller holds repo.lock() and ran recover(). Error when a save
    landed at path meanwhile: the save stays and nothing was restored."""
    data = version_bytes(repo, path, mode, blob)
    where = _journal(repo)
    if os.path.lexists(where):
        raise Error(f"an interrupted restore in '{where}' is not finished",
                    "git autosync sync   (finishes it)")
    repo.ensure_state_dir()
    placer: Placer | None = None
    root = Root(repo.work_tree)
    try:
        parent, _ = root.at(path, create=True)
        temp, ready = _fresh(parent)
        placer = Placer(repo, Job(path, temp, ready, mode, blob, head), data, root)
        _write_journal(where, placer.job)
        step("restore-journal", path)
        try:
            placer.write()
            placed = placer.place()
        except Exception:  # (a kill, or an interrupt, leaves it to the next recover())
            _cleanup(placer, where)
            raise
        unlink_if_there(where)
        step("restore-done", path)
    except Blocked as e:
        raise Error(f"cannot write '{path}': '{e.filename}' is not a directory (a symbolic "
                    "link or a file is in the way)") from None
    except OSError as e:
        raise os_error(e, f"cannot write '{path}'") from None
    finally:
        if placer is not None:
            placer.close()  # (root too)
        else:
            root.close()
    if not placed:
        raise Error(f"'{path}' was saved while it was being restored; the save stays and "
                    "nothing was restored", "restore it again (the save is committed first)")


def _cleanup(placer: Placer, where: str) -> None:
    """After a failure (a full disk): the temp files go as recover() would take them;
    the journal stays when that fails too (the next recover() finishes)."""
    try:
        placer.recover()
    except (OSError, Error):
        return
    unlink_if_there(where)


def _write_journal(where: str, job: Job) -> None:
    tmp = where + ".new"
    unlink_if_there(tmp)
    _write_synced(tmp, job.to_json())
    os.rename(tmp, where)
    _fsync_dir(os.path.dirname(where))


def recover(repo: Repo) -> None:
    """Finish a restore that died (its journal is there). The caller holds repo.lock().
    Error when it cannot be finished now: the journal stays for the next attempt."""
    where = _journal(repo)
    try:
        raw = read_regular(where, MAX_JOURNAL)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        return _set_aside(where, getattr(e, "strerror", None) or str(e))
    try:
        job = Job.parse(raw)
    except ValueError as e:  # (json.JSONDecodeError, UnicodeDecodeError too)
        return _set_aside(where, str(e).splitlines()[0] if str(e) else "unreadable")
    log.warning("finishing the restore of '%s' that was interrupted", job.path)
    placer = Placer(repo, job)
    try:
        placer.recover()
    except Blocked as e:
        log.warning("leaving the temp files of the restore of '%s': '%s' is no directory "
                    "any more", job.path, e.filename)
    except OSError as e:
        raise Error(f"cannot finish the interrupted restore of '{job.path}': "
                    f"{e.strerror or e}", f"look at '{where}'") from e
    finally:
        placer.close()
    unlink_if_there(where)


def _set_aside(where: str, reason: str) -> None:
    """A journal restore did not write (or cannot be read): kept as .bad, nothing done."""
    try:
        os.replace(where, where + ".bad")
        kept = f"; kept as '{where}.bad'"
    except OSError:
        kept = ""
    log.warning("ignoring the restore journal '%s' (%s)%s", where, reason, kept)
