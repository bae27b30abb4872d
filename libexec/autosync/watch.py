"""The watchers: a work tree's changes, learned from inotify or by polling, as batches.

`Watcher` holds what every watcher shares: the batch being gathered and when it is due
(coalescing, below), wait/flush/busy/wakeup, the ignore checker, nested repositories and
the files ignore rules come from. Its two kinds differ only in how they learn about changes:

- `InotifyWatcher`: recursive inotify. A new directory is watched first and scanned second,
  so nothing created inside it between the two steps is missed (`mkdir -p a/b/c && touch
  a/b/c/f`). Directories moved within the tree keep their watches (paths are renamed);
  trees moved out lose them; trees moved in are watched and scanned. IN_Q_OVERFLOW means
  events were lost: the watches are rebuilt and the next batch is marked `full`.
- `PollWatcher` (pollwatch.py): lstat calls against a snapshot of the tree at a bounded
  rate, where inotify sees nothing (a network or FUSE file system: another machine's writes
  make no event here) or cannot be had.
- Both: `.git` is never entered; directories git ignores are never watched nor walked;
  nested repositories are reported, not entered. Editor temp files never start a batch. A
  change to a .gitignore, info/exclude or core.excludesFile (inotify watches the directories
  of the last two, filtered by name) restarts git check-ignore and rescans: once per batch,
  however many rule files changed.

`make_watcher(repo, config)` picks the kind (`autosync.watcher`: auto, inotify or poll; auto
polls a work tree on a network or FUSE file system, see `choose`), `start_watcher` starts it,
and with auto turns to polling (one warning) where inotify cannot be used after all.

Coalescing: a lone save - one file, its last event one that finishes a save (closed after
writing, renamed into place, deleted; for polling: a file that kept its stat, or went),
coming after `debounce` ms of quiet - is ready SETTLE after its last event: enough for an
editor's multi-step save (temp files, backups and the editor's write test come and go within
it); one that leaves the file gone (a deletion, or a save that removes the file before
writing it anew) is ready SAVE_SPAN after it, so that no clone ever deletes a file being
saved, and so is a new file written and closed (not renamed into place, nor saved anew
where a file was: vim's backup rename, install's unlink): it may be a tool's temp file
whose rename is still to come. Anything else - more files, a file still being written,
events that keep coming SAVE_SPAN after the first that finished a save, or a batch that
follows another within `debounce` - is a burst: ready after `debounce` ms without events,
or `max_delay` ms after its first event while events keep coming. A file still being
written holds the batch (up to max_delay): half-written files are not committed.

Idle costs nothing with inotify: wait() blocks in select() on the inotify descriptor and a
wakeup pipe. Polling wakes a few times a second for its round robin (next_look); wakeup()
ends a wait() at once all the same.
"""

import argparse
import errno
import os
import select
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from inotify_simple import Event, INotify
from inotify_simple import flags as F

from .config import Config
from .git import Repo
from .ignore import IgnoreChecker, exclude_files, is_ignore_file, is_temp
from .util import Error, log, setup_logging

DIR_MASK = (F.CREATE | F.DELETE | F.MODIFY | F.CLOSE_WRITE | F.MOVED_FROM | F.MOVED_TO
            | F.ATTRIB | F.DELETE_SELF | F.MOVE_SELF | F.DONT_FOLLOW | F.EXCL_UNLINK
            | F.ONLYDIR)
SETTLE = 0.008  # seconds after a lone save's last event before it is committed (see above);
# an editor's save is a burst of system calls well within it
SAVE_SPAN = 0.5  # seconds from the first event finishing a save to its last, at most
MAX_SAVE_PATHS = 8  # paths one editor's save touches, at most (its temp files included)
FINISHING = F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.DELETE  # a save is complete
RULE_MASK = F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.DELETE | F.ONLYDIR  # no MODIFY noise

# file systems whose directories' link count is 2 + their number of subdirectories
SUBDIR_LINKS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs", "jfs", "reiserfs"})
# file systems where inotify sees nothing of what other machines (or the host of a virtual
# machine, or Windows under WSL) write: network, cluster and shared-folder file systems.
# Every FUSE file system ("fuse", "fuse.sshfs", "fuse.rclone", ...) is polled too, except
# fuseblk (a local disk through FUSE: ntfs-3g, exfat), where every write passes this kernel.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p", "drvfs",
    "virtiofs", "vboxsf", "vmhgfs", "prl_fs", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "orangefs", "ocfs2", "gfs2", "davfs", "fuse"})
KINDS = ("auto", "inotify", "poll")  # the values of autosync.watcher


def fs_type(path: str) -> str | None:
    """The type of the file system path is on (/proc/self/mountinfo), or None."""
    try:
        dev = os.stat(path).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "-" in fields and fields[2] == f"{os.major(dev)}:{os.minor(dev)}":
                    return fields[fields.index("-") + 1]
    except (OSError, IndexError):
        pass
    return None


def choose(choice: str, fstype: str | None) -> tuple[str, str]:
    """(kind, why) for autosync.watcher = choice on a file system of type fstype (None:
    unknown): "auto" polls a network, FUSE or shared-folder file system (inotify would see
    only this machine's own writes there), and uses inotify anywhere else."""
    if choice in ("inotify", "poll"):
        return choice, f"autosync.watcher={choice}"
    if fstype is not None and (fstype in NETWORK_FS or fstype.startswith("fuse.")):
        return "poll", f"work tree on {fstype}"
    return "inotify", f"work tree on {fstype}" if fstype else ""


@dataclass
class Batch:
    paths: set[str] = field(default_factory=set)  # repo-relative, '/'-separated
    full: bool = False  # events were lost: the commit helper must look at the whole tree


class NoInotify(Error):
    """inotify cannot watch this tree (no instance to be had, the watch limit); why, in a
    few words, for status when polling takes over."""

    def __init__(self, message: str, *hints: str, why: str) -> None:
        super().__init__(message, *hints)
        self.why = why


def watch_limit_error(top: str, needed: int) -> NoInotify:
    limit: int | None
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = None
    enough = max(needed, limit or 0) * 2  # room for the other programs that watch too
    return NoInotify(f"cannot watch '{top}': inotify watch limit reached "
                     f"(fs.inotify.max_user_watches={limit or '?'}, need about {needed})",
                     f"sudo sysctl fs.inotify.max_user_watches={enough}",
                     f"to keep it: echo fs.inotify.max_user_watches={enough}"
                     " | sudo tee /etc/sysctl.d/90-autosync.conf",
                     why="inotify watch limit reached")


class Watcher:
    """The batches, whoever learns about the changes: a subclass implements start,
    read_events (learn what changed, never blocking long), rescan, the watched directories
    and what wait() may sleep on (fds, next_look), and reports through note, note_dir,
    want_rescan and found_repo, keeping `writing` (files being written) up to date."""

    kind = ""

    def __init__(self, repo: Repo, ignore_patterns: Iterable[str] = (), debounce_ms: int = 1000,
                 max_delay_ms: int = 10000, wake: tuple[int, int] | None = None) -> None:
        self.repo = repo
        self.top = repo.work_tree
        self.extra = list(ignore_patterns)
        self.debounce = debounce_ms / 1000.0
        self.max_delay = max(max_delay_ms, debounce_ms) / 1000.0
        self.checker = IgnoreChecker(repo)
        self.nested: set[str] = set()
        self.rule_rel: set[str] = set()  # rule files inside the work tree (core.excludesFile)
        self.rescan_due = False
        self.choice = self.kind  # autosync.watcher as given (make_watcher)
        self.reason = ""  # why this kind watches, for status ("work tree on nfs4")
        self.taken = float("-inf")  # monotonic time the last batch was taken
        self.reset_batch()
        self.writing: set[str] = set()  # files being written (not closed, stat not settled)
        # the wakeup pipe; a watcher that takes over from another (start_watcher) keeps its
        # pipe, so that no wakeup is lost on the way
        self.wake_r, self.wake_w = wake or os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def reset_batch(self) -> None:
        self.changed: set[str] = set()
        self.full = False
        self.first: float | None = None  # monotonic time of the batch's first event
        self.last: float | None = None  # and of its latest
        self.lone = True  # no more than a lone save so far (see ready_at)
        self.finished: float | None = None  # monotonic time of its first finishing event
        self.unfinished: set[str] = set()  # files whose last event did not finish a save
        self.born: set[str] = set()  # files that appeared in this batch (and so may go:
        # an editor's temp file renamed into place or removed is no save of its own)
        self.placed: set[str] = set()  # files renamed into place in this batch
        self.existed: set[str] = set()  # files that went in this batch before any came
        # anew at their name (vim's backup rename, install's unlink): no new file

    def describe(self) -> str:
        """What watches and why, for status and the log: 'poll (work tree on nfs4)'."""
        return f"{self.kind} ({self.reason})" if self.reason else self.kind

    # -- what a kind of watcher provides ----------------------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def read_events(self) -> None:
        """Learn what changed since the last call; never blocks for long."""
        raise NotImplementedError

    def rescan(self) -> None:
        """After lost events or an ignore-rule change: look at everything again; the batch
        is full (the commit helper looks at the whole tree)."""
        raise NotImplementedError

    def watched_dirs(self) -> set[str]:
        """The directories watched, repo-relative ('' the top)."""
        raise NotImplementedError

    def fds(self) -> list[int]:
        """Descriptors that become readable when there is something to read."""
        return []

    def next_look(self) -> float | None:
        """When read_events wants to run next (monotonic), or None: only when an fd says."""
        return None

    # -- shared by the kinds ------------------------------------------------------------------
    def abs(self, rel: str) -> str:
        return os.path.join(self.top, rel) if rel else self.top

    def rule_files_outside(self) -> list[str]:
        """The absolute paths of info/exclude and core.excludesFile where the tree's own
        watching does not see them; those inside the work tree go to rule_rel."""
        outside = []
        for path in exclude_files(self.repo):
            rel = os.path.relpath(path, self.top)
            if not rel.startswith(".." + os.sep) and not rel.startswith(".git" + os.sep):
                self.rule_rel.add(rel.replace(os.sep, "/"))
            else:
                outside.append(path)
        return outside

    def found_repo(self, rel: str) -> None:
        """rel holds a .git of its own: left alone, and said so once."""
        if rel not in self.nested:
            self.nested.add(rel)
            log.warning("'%s' is a git repository of its own: left alone", rel)

    def want_rescan(self) -> None:
        self.rescan_due = True
        self.full = True
        self.touch()

    def touch(self) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
            self.lone = now - self.taken >= self.debounce  # else: a burst goes on
        self.last = now

    def note(self, path: str, finishing: bool = False) -> None:
        if is_temp(path, self.extra):
            return
        if not self.full:  # a full batch commits the whole tree: no need to list paths
            self.changed.add(path)
        self.touch()
        if finishing and self.finished is None:
            self.finished = self.last

    def note_dir(self, path: str) -> None:
        """A directory appeared, went or moved: listed even in a full batch."""
        self.changed.add(path)
        self.touch()
        self.lone = False

    # -- batches -------------------------------------------------------------------------------
    def ready_at(self) -> float | None:
        """When the pending batch is due (monotonic), or None when nothing is pending."""
        if self.first is None or self.last is None:
            return None
        cap = self.first + self.max_delay
        quiet = self.last + self.debounce
        if self.writing & self.changed:
            return cap  # a file is still being written: wait for it (up to the cap)
        if self.lone and not self.full and len(self.changed) <= MAX_SAVE_PATHS:
            if self.finished is None:  # (not finished yet: it may still be lone)
                return min(quiet, cap)
            if self.last - self.finished < SAVE_SPAN:
                saved = [p for p in self.changed  # (what came and went: an editor's helper)
                         if p not in self.born or os.path.lexists(self.abs(p))]
                if len(saved) <= 1:
                    if self.unfinished & set(saved):  # being saved still: may yet be lone
                        return min(quiet, cap)
                    if saved and not os.path.lexists(self.abs(saved[0])):
                        # gone: a deletion, or the first step of a save that writes the
                        # file anew (install unlinks first, vim renames its backup out of
                        # the tree); preempted between the two, the editor would have the
                        # file deleted on every clone. A deletion waits as long as a save
                        # may take
                        return min(self.last + SAVE_SPAN, quiet, cap)
                    if saved and saved[0] in self.born and saved[0] not in self.placed \
                            and saved[0] not in self.existed:
                        # a new file, written and closed: perhaps a tool's temp file
                        # (rsync's .name.XXXXXX, sed -i's sedXXXXXX) whose rename into
                        # place is still to come; preempted past SETTLE, the tool would
                        # have its temp file committed and sent to every clone
                        return min(self.last + SAVE_SPAN, quiet, cap)
                    return min(self.last + SETTLE, cap)
        self.lone = False  # a burst, for the rest of this batch
        return min(quiet, cap)

    def take(self) -> Batch | None:
        if self.rescan_due:
            self.rescan()
        paths = self.changed
        if paths and not self.full:
            paths = paths - self.checker.ignored(
                [p for p in paths if os.path.lexists(self.abs(p))])
        batch = Batch(paths, self.full) if (paths or self.full) else None
        self.reset_batch()
        if batch is not None:
            self.taken = time.monotonic()
        return batch

    def wait(self, timeout: float | None = None) -> Batch | None:
        """The next batch, or None when timeout (seconds) passed or wakeup() was called."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self.read_events()
            now = time.monotonic()
            due = self.ready_at()
            if due is not None and now >= due:
                batch = self.take()
                if batch is not None:
                    return batch
                continue
            limits = [t for t in (due, end, self.next_look()) if t is not None]
            wait = max(0.0, min(limits) - now) if limits else None
            if end is not None and now >= end:
                return None
            ready, _, _ = select.select(self.fds() + [self.wake_r], [], [], wait)
            if self.wake_r in ready:
                self._drain_wakeups()
                return None

    def flush(self) -> Batch | None:
        """Whatever is pending now, without waiting for quiet."""
        self.read_events()
        return self.take()

    def busy(self) -> bool:
        """Whether a file of the pending batch is still being written, or is gone - a save
        half way (renamed to a backup, unlinked, not written anew yet) as far as anyone
        can tell - (for less than max_delay), or is a lone new file within SAVE_SPAN of its
        last event (a tool's temp file whose rename may yet come, see ready_at): flush()
        now would take it half written, deleted or as a temp file, on every clone. (A
        deletion is taken when the batch is due, as ever.)"""
        self.read_events()
        now = time.monotonic()
        if self.first is None or now >= self.first + self.max_delay:
            return False
        if self.writing & self.changed or any(
                p not in self.born and not os.path.lexists(self.abs(p)) for p in self.changed):
            return True
        due = self.ready_at()  # (a lone new file: SAVE_SPAN after its last event)
        return (self.last is not None and due is not None and now < due
                and due - self.last > SETTLE and len(self.changed) == 1
                and self.changed <= self.born - self.placed - self.existed)

    def wakeup(self) -> None:
        """Make wait() return; safe from other threads and signal handlers."""
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # a wakeup is pending already
        except OSError:
            pass  # closed, or handed to the watcher that took over (start_watcher)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def hand_over_wakeup(self) -> tuple[int, int]:
        """The wakeup pipe, for the watcher that takes over; this one no longer has it."""
        fds = (self.wake_r, self.wake_w)
        self.wake_r = self.wake_w = -1
        return fds

    def pending(self) -> int:
        """How many paths wait in the current batch."""
        return len(self.changed)

    def watch_count(self) -> int:
        return len(self.watched_dirs())

    def nested_repos(self) -> list[str]:
        return sorted(self.nested)

    def close(self) -> None:
        self.checker.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.wake_r = self.wake_w = -1


class InotifyWatcher(Watcher):
    """Recursive inotify (see the module's description)."""

    kind = "inotify"

    def __init__(self, repo: Repo, ignore_patterns: Iterable[str] = (), debounce_ms: int = 1000,
                 max_delay_ms: int = 10000, wake: tuple[int, int] | None = None) -> None:
        super().__init__(repo, ignore_patterns, debounce_ms, max_delay_ms, wake)
        self.inotify: INotify | None = None  # from start() to close()
        self.wd_path: dict[int, str] = {}  # watch descriptor -> repo-relative directory ('' top)
        self.path_wd: dict[str, int] = {}  # the reverse
        # watch descriptor -> names of rule files in that outside directory
        self.rule_wds: dict[int, set[str]] = {}
        self.limit_hit = False
        # a directory's link count says how many subdirectories it has (see _scan): the
        # device it does so on, or None
        self.links_dev = (os.stat(self.top).st_dev if fs_type(self.top) in SUBDIR_LINKS
                          else None)

    # -- watches ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.inotify = INotify(nonblocking=True)
        except OSError as e:
            hint = ("sudo sysctl fs.inotify.max_user_instances=1024" if e.errno == errno.EMFILE
                    else "check that /proc/sys/fs/inotify exists")
            raise NoInotify(f"cannot use inotify: {e.strerror}", hint,
                            why=f"cannot use inotify: {e.strerror}") from e
        os.set_inheritable(self.kernel.fileno(), False)
        self.watch_rule_files()
        self.add_tree("", initial=True)

    @property
    def kernel(self) -> INotify:
        """The inotify instance; only between start() and close()."""
        if self.inotify is None:
            raise RuntimeError("the watcher is not started")
        return self.inotify

    def fds(self) -> list[int]:
        return [self.kernel.fileno()]

    def watched_dirs(self) -> set[str]:
        return set(self.path_wd)

    def watch_count(self) -> int:
        return len(self.wd_path)

    def watch_rule_files(self) -> None:
        """Watch the directories of info/exclude and core.excludesFile (if they exist)."""
        for path in self.rule_files_outside():
            folder, name = os.path.split(path)
            try:
                wd = self.kernel.add_watch(folder, RULE_MASK)
            except OSError:
                continue  # no such directory (yet): nothing to read rules from
            self.rule_wds.setdefault(wd, set()).add(name)

    def add_tree(self, rel: str, initial: bool = False, report: bool = True) -> None:
        """Watch rel and every directory below it (watch first, then scan); report files."""
        level = [rel]
        while level:
            subdirs: list[str] = []
            for d in level:
                where = f"{self.top}/{d}" if d else self.top  # (abs(d): the hot loop)
                if not self._watch(d, where, initial):
                    continue
                subdirs += self._scan(d, where, report=report and not initial)
            ignored = self.checker.ignored(subdirs) if subdirs else set()
            level = [d for d in subdirs if d not in ignored]

    def _watch(self, rel: str, where: str, initial: bool) -> bool:
        """Watch directory rel (at where); False for a nested repository, or a directory
        gone or not to be watched."""
        if rel and os.path.lexists(f"{where}/.git"):
            self.found_repo(rel)
            if not initial:
                self.note(rel)
            return False
        try:
            wd = self.kernel.add_watch(where, DIR_MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                if initial:
                    raise watch_limit_error(self.top, self.count_dirs()) from e
                if not self.limit_hit:  # once per rescan: counting walks the whole tree
                    self.limit_hit = True
                    log.error("%s", watch_limit_error(self.top, self.count_dirs()).render())
                self.full = True  # what is there now still gets committed
                self.touch()
                return False
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False  # gone already, or not ours to read
            raise
        old = self.wd_path.get(wd)
        if old is not None and old != rel:
            self.path_wd.pop(old, None)
        self.wd_path[wd] = rel
        self.path_wd[rel] = wd
        return True

    def _scan(self, rel: str, where: str, report: bool = True) -> list[str]:
        """Report what is in rel (at where) now (it may have filled before its watch
        existed); return its subdirectories. Not reporting (a full batch covers the files),
        a directory whose link count says it has no subdirectories (2: its name and its '.')
        is not read: the start-up of a big tree reads no leaf directory. (A subdirectory
        made after the link count was read comes as an event: the watch is there already.)
        One with subdirectories is read whole: the count is no stopping point, as a
        subdirectory made (or renamed) after it was read may come first in the listing and
        stand in for one that was counted."""
        subdirs: list[str] = []
        if not report and self.links_dev is not None:
            try:
                st = os.lstat(where)
            except OSError:
                return subdirs
            if st.st_dev == self.links_dev and st.st_nlink == 2:
                return subdirs
        try:
            with os.scandir(where) as it:
                for entry in it:
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.name == ".git":
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        subdirs.append(path)
                    elif report:
                        if is_ignore_file(path):  # came with a new directory
                            self.want_rescan()
                        self.note(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass
        return subdirs

    def count_dirs(self) -> int:
        n = 0
        for _root, dirs, _files in os.walk(self.top):
            dirs[:] = [d for d in dirs if d != ".git"]
            n += 1
        return n

    def drop_tree(self, rel: str) -> None:
        """Forget the watches for rel and below (moved out of the tree or deleted)."""
        prefix = rel + "/"
        for path in [p for p in self.path_wd if p == rel or p.startswith(prefix)]:
            wd = self.path_wd.pop(path)
            self.wd_path.pop(wd, None)
            self._unwatch(wd)
        self.nested = {n for n in self.nested if n != rel and not n.startswith(prefix)}

    def _unwatch(self, wd: int) -> None:
        if wd in self.rule_wds:
            return  # a rule file's directory moved with the tree: keep watching it
        try:
            self.kernel.rm_watch(wd)
        except OSError:
            pass  # the kernel dropped it already

    def rename_tree(self, old: str, new: str) -> None:
        prefix = old + "/"
        for path in [p for p in self.path_wd if p == old or p.startswith(prefix)]:
            wd = self.path_wd.pop(path)
            moved = new + path[len(old):]
            self.path_wd[moved] = wd
            self.wd_path[wd] = moved

    def rescan(self) -> None:
        """Rebuild the watches (lost events, an ignore-rule change), commit everything.

        Watching a directory again keeps its descriptor, so no event is lost on the way;
        descriptors not found again (gone, now ignored) are removed at the end.
        """
        self.rescan_due = False
        self.limit_hit = False
        self.checker.reset()
        old = set(self.wd_path)
        self.wd_path.clear()
        self.path_wd.clear()
        self.nested.clear()
        self.full = True
        self.touch()
        self.add_tree("", report=False)  # a full batch covers every file
        for wd in old - set(self.wd_path):
            self._unwatch(wd)

    # -- events ------------------------------------------------------------------------------
    def read_events(self) -> None:
        """Handle everything the kernel has queued; never blocks."""
        try:
            events = self.kernel.read(timeout=0)
        except BlockingIOError:
            return
        moved_from: dict[int, str] = {}  # cookie -> a directory moved away in this read
        moves: dict[int, tuple[str, bool]] = {}  # cookie -> a file moved away, being written
        for ev in events:
            self._event(ev, moved_from, moves)
        for path in moved_from.values():  # no MOVED_TO came: moved out of the tree
            self.drop_tree(path)

    def _event(self, ev: Event, moved_from: dict[int, str],
               moves: dict[int, tuple[str, bool]]) -> None:
        if ev.mask & F.Q_OVERFLOW:
            log.warning("inotify queue overflowed: rescanning the whole tree")
            self.want_rescan()
            return
        if ev.name in self.rule_wds.get(ev.wd, ()):
            self.want_rescan()
        parent = self.wd_path.get(ev.wd)
        if parent is None:
            return
        if ev.mask & F.UNMOUNT:
            self._unmounted(parent)
            return
        if ev.mask & F.IGNORED:
            self._forget_watch(ev.wd, parent)
            return
        if ev.mask & (F.DELETE_SELF | F.MOVE_SELF) or not ev.name:
            return
        path = f"{parent}/{ev.name}" if parent else ev.name
        if ev.name == ".git":
            if parent and ev.mask & (F.CREATE | F.MOVED_TO):
                self.became_repo(parent)
        elif ev.mask & F.ISDIR:
            self._dir_event(ev, path, moved_from)
        else:
            self._file_event(ev.mask, path, ev.cookie, moves)

    def _unmounted(self, rel: str) -> None:
        """The file system mounted on rel (or one above it) went: the kernel drops its
        watches. The directory it covered is watched anew - what it holds reported, nothing
        taken for deleted (the mount's files are away, not deleted; polling does the same)."""
        if rel in self.path_wd:
            log.warning("'%s' was unmounted: what it held is not taken for deleted",
                        self.abs(rel))
        self.drop_tree(rel)
        self.add_tree(rel)

    def _forget_watch(self, wd: int, parent: str) -> None:
        """The kernel removed watch wd (its directory is gone)."""
        self.wd_path.pop(wd, None)
        if self.path_wd.get(parent) == wd:
            del self.path_wd[parent]

    def _dir_event(self, ev: Event, path: str, moved_from: dict[int, str]) -> None:
        if ev.mask & F.MOVED_FROM:
            moved_from[ev.cookie] = path  # the MOVED_TO with the same cookie may follow
            self.note_dir(path)
        elif ev.mask & F.MOVED_TO:
            self._dir_moved_in(path, moved_from.pop(ev.cookie, None))
        elif ev.mask & F.CREATE:
            self.new_dir(path)
        elif ev.mask & F.DELETE:
            self.drop_tree(path)
            self.note_dir(path)

    def _dir_moved_in(self, path: str, old: str | None) -> None:
        """A directory arrived at path: from old in the tree, or from outside (None)."""
        if old is None or old not in self.path_wd:
            self.new_dir(path)
            return
        self.rename_tree(old, path)  # its watches stay valid
        if self.checker.ignored([path]):  # renamed to an ignored name
            self.drop_tree(path)
        self.note_dir(path)

    def _file_event(self, mask: int, path: str, cookie: int,
                    moves: dict[int, tuple[str, bool]]) -> None:
        if is_ignore_file(path) or path in self.rule_rel:
            self.want_rescan()
        src, still_written = None, False  # for a file moved here: from where, still written
        if mask & F.MOVED_FROM:
            moves[cookie] = (path, path in self.writing)
        elif mask & F.MOVED_TO:
            src, still_written = moves.pop(cookie, (None, False))
        if mask & F.MODIFY:
            self.writing.add(path)
        if mask & (F.CLOSE_WRITE | F.DELETE | F.MOVED_FROM | F.MOVED_TO):
            self.writing.discard(path)
        if mask & (F.DELETE | F.MOVED_FROM) and path not in self.born:
            self.existed.add(path)  # (the file saved anew, if one comes, is no new file)
        if mask & (F.CREATE | F.MOVED_TO):
            self.born.add(path)
        if mask & F.MOVED_TO:
            self.placed.add(path)
        elif mask & F.CREATE:
            self.placed.discard(path)
        if mask & FINISHING:
            self.unfinished.discard(path)
        elif mask & (F.CREATE | F.MODIFY):
            self.unfinished.add(path)
        if still_written:  # renamed while its writer still writes: no finished save yet
            self.writing.add(path)
            self.unfinished.add(path)
        if src is not None and is_temp(path, self.extra) and not is_temp(src, self.extra):
            self.unfinished.add(src)  # an editor's backup rename: the new file is to come
        self.note(path, bool(mask & FINISHING) and not still_written)

    def became_repo(self, rel: str) -> None:
        """rel just got a .git of its own (git init, git clone): stop looking inside."""
        self.drop_tree(rel)
        self.found_repo(rel)
        self.note(rel)

    def new_dir(self, path: str) -> None:
        if self.checker.ignored([path]):
            return
        self.note_dir(path)
        self.add_tree(path)

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        self.rule_wds.clear()
        super().close()


def make_watcher(repo: Repo, config: Config, choice: str | None = None,
                 debounce_ms: int | None = None, max_delay_ms: int | None = None) -> Watcher:
    """The watcher autosync.watcher (or choice) asks for, not started yet (start_watcher);
    debounce and max delay from the config unless given."""
    asked = choice
    choice = choice or config["watcher"]
    kind, reason = choose(choice, fs_type(repo.work_tree))
    if asked and asked != "auto":
        reason = "asked for"
    cls: type[Watcher] = InotifyWatcher
    if kind == "poll":  # (imported only then: 1.7 MB of every daemon that does not poll)
        from .pollwatch import PollWatcher  # (it builds on Watcher, above)
        cls = PollWatcher
    w = cls(repo, config["ignore"], config["debounce"] if debounce_ms is None else debounce_ms,
            config["maxDelay"] if max_delay_ms is None else max_delay_ms)
    w.choice, w.reason = choice, reason
    return w


def start_watcher(w: Watcher) -> Watcher:
    """Start w. Where it cannot use inotify (no instance to be had, the watch limit) and
    autosync.watcher is auto, a PollWatcher takes over, with one warning, and is returned
    instead (with w's wakeup pipe); asked for inotify by name, the error stands."""
    try:
        w.start()
        return w
    except NoInotify as e:
        if w.choice != "auto":
            raise
        from .pollwatch import PollWatcher
        log.warning("%s; polling the work tree instead (hint: %s)", e.message,
                    e.hints[0] if e.hints else "git config autosync.watcher poll")
        poll = PollWatcher(w.repo, w.extra, round(w.debounce * 1000), round(w.max_delay * 1000),
                           wake=w.hand_over_wakeup())
        poll.choice, poll.reason = w.choice, e.why
        w.close()
        try:
            poll.start()
        except BaseException:
            poll.close()
            raise
        return poll


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="autosync-watch",
        description="Watch a work tree (as the daemon does, without committing) and print "
                    "one line per batch: the number of paths, then the paths. With -z: each "
                    "path NUL-terminated and an empty one closing the batch ('.' for a "
                    "rescan of everything), as `autosync-commit --stdin -z` reads them.")
    ap.add_argument("-C", dest="dir", default=".", help="repository (default: .)")
    ap.add_argument("--debounce", type=int, help="ms of quiet (default: autosync.debounce)")
    ap.add_argument("--max-delay", type=int, help="ms cap (default: autosync.maxDelay)")
    ap.add_argument("--watcher", choices=KINDS,
                    help="inotify, poll, or auto: poll on a network or FUSE file system "
                         "(default: autosync.watcher)")
    ap.add_argument("-z", action="store_true",
                    help="NUL-terminated paths, an empty one ending a batch")
    ap.add_argument("--count", type=int, default=0, help="exit after N batches (0: never)")
    args = ap.parse_args(argv)
    setup_logging()
    repo = Repo(args.dir)
    start = time.monotonic()
    w = start_watcher(make_watcher(repo, Config(repo), args.watcher, args.debounce,
                                   args.max_delay))
    print(f"watching {w.watch_count()} directories ({time.monotonic() - start:.3f}s): "
          f"{w.describe()}", file=sys.stderr, flush=True)
    out = sys.stdout.buffer
    seen = 0
    try:
        while not args.count or seen < args.count:
            batch = w.wait()
            if batch is None:
                continue
            seen += 1
            paths = sorted(batch.paths)
            head = f"{len(paths)}{' full' if batch.full else ''}"
            if args.z:  # what `autosync-commit --stdin -z` reads: "." stands for everything
                out.write(b"".join(os.fsencode(p) + b"\0"
                                   for p in (["."] if batch.full else paths)) + b"\0")
            else:
                out.write((head + "\t" + " ".join(paths) + "\n").encode(errors="surrogateescape"))
            out.flush()
    finally:
        w.close()
    return 0
