"""The polling watcher: a work tree's changes learned by lstat calls, where inotify is blind.

On a network or FUSE file system (nfs, cifs, sshfs, 9p as on WSL's /mnt/c, ...) inotify sees
only this machine's own writes; another machine's, or Windows', make no event here. There,
PollWatcher keeps a snapshot per directory - its own stat, and its entries' inode, size,
mtime, ctime and mode - and compares it with the tree by lstat calls (never following a
symbolic link):

- A directory's stat tells of entries made, removed or renamed in it: it is listed again,
  and the difference is reported (a new subdirectory is walked and its files reported, one
  that went is reported as a directory, as inotify's watcher does). A file's own stat tells
  of a write in place.
- Idle, a round robin looks at every directory and at every file at a bounded rate:
  POLL_RATE stat calls a second (POLL_DIR_SHARE of them for directories, which are looked
  at far more often than files: most saves make, rename or remove an entry), POLL_SLICE
  seconds per look at most, a small tree once per POLL_CYCLE at most.
- What changed lately (HOT_FOR), and the directories it is in, is looked at far more often:
  every HOT_TICK just after its change, slowing down to every HOT_SLOWEST. The file being
  edited is followed closely; the rest of the tree costs the round robin's rate.
- A file whose stat still changes from one look to the next is being written: it holds the
  batch (up to max_delay), as a file open for writing does for inotify. Once it kept its
  stat POLL_STABLE, it is a finished save (a lone save is committed SETTLE later); one seen
  changing over more than SAVE_SPAN is written on and on: its batch is a burst, which waits
  for the debounce. A file that goes is a finished save too (a deletion), as for inotify.
- Directories git ignores are never walked, `.git` never entered, nested repositories
  reported and not entered; editor temp files never start a batch; a change to a
  .gitignore, info/exclude or core.excludesFile (looked at every RULES_EVERY) rescans.
- Nothing is taken for deleted unless a listing that succeeded lacks it: a directory that
  cannot be read (a permission, a network file system away, the work tree unmounted) keeps
  its files as they were seen, with one warning.

Polling cannot see a file's close: a writer pausing longer than POLL_STABLE in the middle
of a file has it committed half way, the rest in the next commit.
"""

import errno
import os
import stat
import sys
import time
from collections.abc import Iterable

from .git import Repo
from .ignore import is_ignore_file, is_temp
from .util import log
from .watch import SAVE_SPAN, Watcher

# Polling. On a 2-core VM an lstat and its comparison take about 4 us: the round robin's
# rate is 1.6% of a core (a tree of more than about 4,000 entries; a smaller one costs less),
# and a pass over 100,000 files in 10,000 directories takes 6 s for the directories, 42 s
# for the files.
POLL_TICK = 0.25  # seconds between two looks of the round robin
POLL_RATE = 4000  # stat calls a second at most for the round robin, directories and files
POLL_DIR_SHARE = 0.4  # of which directories' own (entries made, removed or renamed) get this
POLL_CYCLE = 1.0  # seconds a pass over the tree takes at least (a small tree)
POLL_SLICE = 0.025  # seconds of the round robin per look at most (a slow network file system)
POLL_STABLE = 0.25  # seconds a changed file must keep its stat to be a finished save
HOT_TICK = 0.05  # seconds between looks at a file just changed (and at one being written)
HOT_FOR = 600.0  # seconds a changed path (and its directory) is looked at more often ...
HOT_PACE = 0.05  # ... every HOT_PACE x the time since its change, HOT_TICK to HOT_SLOWEST
HOT_SLOWEST = 1.0
HOT_MAX = 256  # paths in the hot set, at most (the oldest leave first)
UNSETTLED_MAX = 256  # files followed until their stat holds still, at most (the oldest are
# taken as finished: a copy of 10,000 files is a burst that waits for the debounce anyway)
RULES_EVERY = 1.0  # seconds between looks at info/exclude and core.excludesFile
RACY_NS = 2_000_000_000  # a directory listed within this of its mtime is listed again at its
# next look: a second change in the same timestamp tick (4 ms on ext4, 2 s on FAT or some
# SMB servers) leaves its mtime as it was


def file_sig(st: os.stat_result) -> int:
    """What tells a file's versions apart: its inode, size, mtime, ctime and mode."""
    return hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))


def dir_sig(st: os.stat_result) -> int:
    """What changes when a directory's entries do (made, removed, renamed), or a file
    system is mounted on it or unmounted."""
    return hash((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))


def racy(st: os.stat_result) -> bool:
    """Whether a directory listed now is within RACY_NS of its mtime: a change in the same
    timestamp tick may yet come and leave the mtime as it is. (Not one dated further in the
    future - a clock ahead, `touch -d tomorrow` -: a change gives it the current time.)"""
    return abs(time.time_ns() - st.st_mtime_ns) < RACY_NS


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class DirState:
    """A polled directory as last seen: its own signature and its entries'. (100,000 files
    in 10,000 directories take about 8 MB: names are interned, a directory without
    subdirectories has no dict for them.)"""

    __slots__ = ("sig", "dev", "racy", "files", "subs")

    def __init__(self, sig: int, dev: int, racy: bool) -> None:
        self.sig = sig
        self.dev = dev  # the file system it was on (a mount that comes or goes changes it)
        self.racy = racy  # listed within RACY_NS of its mtime: list it again at its next look
        self.files: dict[str, int] = {}  # name -> file_sig, for all that is no directory
        # subdirectory name -> True: polled too, False: left alone (ignored, a repository)
        self.subs: dict[str, bool] | None = None

    def sub(self, name: str, polled: bool | None) -> None:
        """Record subdirectory name as polled (True), left alone (False) or gone (None)."""
        if polled is None:
            if self.subs is not None:
                self.subs.pop(name, None)
        elif self.subs is None:
            self.subs = {name: polled}
        else:
            self.subs[name] = polled

    def polled(self) -> list[str]:
        """The names of the subdirectories polled too."""
        return [n for n, p in self.subs.items() if p] if self.subs else []


class PollWatcher(Watcher):
    """Periodic lstat calls against a snapshot of the tree (see the module's description)."""

    kind = "poll"

    def __init__(self, repo: Repo, ignore_patterns: Iterable[str] = (), debounce_ms: int = 1000,
                 max_delay_ms: int = 10000, wake: tuple[int, int] | None = None) -> None:
        super().__init__(repo, ignore_patterns, debounce_ms, max_delay_ms, wake)
        self.dirs: dict[str, DirState] = {}  # repo-relative directory ('' the top) -> state
        # files seen changing and not settled yet: path -> (first change seen, last change seen)
        self.unsettled: dict[str, tuple[float, float]] = {}
        self.hot: dict[str, tuple[float, float]] = {}  # path -> (changed, looked at), oldest first
        self.rules: dict[str, int | None] = {}  # rule file outside the tree -> its signature
        self.rules_at = 0.0
        self.next_at = 0.0  # when read_events looks next
        self.rr_at = 0.0  # when the round robin last got its tokens
        self.dir_tokens = self.file_tokens = 0.0  # stat calls it may make now
        self.dir_order: list[str] = []  # the directories of the current pass, and where it is
        self.dir_i = 0
        self.dir_pass_at = 0.0  # when the current pass began
        self.file_order: list[str] = []
        self.file_i = 0
        self.file_pass_at = 0.0
        self.file_dir = ""  # the directory whose files the file pass is looking at
        self.file_names: list[str] = []  # and the names left to look at in it
        self.unreadable: set[str] = set()  # directories said to be unreadable (once each)

    def start(self) -> None:
        self.rules = {p: self._rule_sig(p) for p in self.rule_files_outside()}
        self._walk("", report=False)  # the start's catch-up commit covers what is there
        now = time.monotonic()
        self.rules_at = self.rr_at = self.dir_pass_at = self.file_pass_at = now
        self.next_at = now + POLL_TICK

    def watched_dirs(self) -> set[str]:
        return set(self.dirs)

    def next_look(self) -> float | None:
        return self.next_at

    # -- looking -------------------------------------------------------------------------------
    def read_events(self) -> None:
        """Look at what is due: the rule files, the files being written, the hot set, then
        the round robin within its budget."""
        now = time.monotonic()
        if now < self.next_at:
            return
        if now >= self.rules_at + RULES_EVERY:
            self.rules_at = now
            for path, sig in self.rules.items():
                try:
                    now_sig: int | None = file_sig(os.lstat(path))
                except (FileNotFoundError, NotADirectoryError):
                    now_sig = None
                except OSError:
                    continue  # unreadable for now: as it was
                if now_sig != sig:
                    self.rules[path] = now_sig
                    self.want_rescan()
        for path in list(self.unsettled):
            parent, _, name = path.rpartition("/")
            self._look_file(parent, name, now)
        self._look_hot(now)
        self._round_robin(now)
        self._schedule(time.monotonic())

    def _schedule(self, now: float) -> None:
        """Set when to look next: the round robin's tick, a file being written, the hot set."""
        due = min(now + POLL_TICK, self.rules_at + RULES_EVERY)
        if self.unsettled:
            due = now + HOT_TICK
        else:
            for path, (changed, looked) in self.hot.items():
                due = min(due, looked + self._pace(path, now - changed))
        self.next_at = max(due, now + 0.001)

    def _pace(self, path: str, age: float) -> float:
        """Seconds between looks at a hot path changed age seconds ago (a directory: never
        more often than the round robin's rate allows for listing it whole)."""
        pace = min(HOT_SLOWEST, max(HOT_TICK, age * HOT_PACE))
        state = self.dirs.get(path)
        if state is not None:
            size = len(state.files) + len(state.subs or ())
            pace = max(pace, size / POLL_RATE)
        return pace

    def _look_hot(self, now: float) -> None:
        for path, (changed, looked) in list(self.hot.items()):
            if now - changed > HOT_FOR:
                del self.hot[path]
            elif path not in self.unsettled and now >= looked + self._pace(path, now - changed):
                if path in self.hot:  # (not dropped by an earlier look in this loop)
                    self.hot[path] = (changed, now)
                self._look_path(path, now)

    def _look_path(self, path: str, now: float) -> None:
        if path in self.dirs:
            self._look_dir(path, force=False)
        else:
            parent, _, name = path.rpartition("/")
            self._look_file(parent, name, now)

    def _heat(self, path: str, now: float) -> None:
        """path changed: look at it (and its directory) often for a while."""
        for p in (path, path.rpartition("/")[0]):
            self.hot.pop(p, None)
            self.hot[p] = (now, now)
        while len(self.hot) > HOT_MAX:
            del self.hot[next(iter(self.hot))]

    def _round_robin(self, now: float) -> None:
        """Look at the next directories and files in line, as many as the budget allows:
        POLL_RATE stat calls a second, POLL_SLICE seconds at most, and a pass over the
        tree no faster than POLL_CYCLE."""
        spent = now - self.rr_at
        self.rr_at = now
        cap = POLL_RATE * 2 * POLL_TICK  # (tokens do not pile up while a pass waits)
        self.dir_tokens = min(cap, self.dir_tokens + spent * POLL_RATE * POLL_DIR_SHARE)
        self.file_tokens = min(cap, self.file_tokens + spent * POLL_RATE * (1 - POLL_DIR_SHARE))
        deadline = now + POLL_SLICE
        looked = 0
        while self.dir_tokens > 0:
            if self.dir_i >= len(self.dir_order):
                if now < self.dir_pass_at + POLL_CYCLE:
                    break
                self.dir_order, self.dir_i, self.dir_pass_at = list(self.dirs), 0, now
                if not self.dir_order:  # (the work tree is away)
                    break
            rel = self.dir_order[self.dir_i]
            self.dir_i += 1
            self.dir_tokens -= self._look_dir(rel, force=False)
            looked += 1
            if looked % 32 == 0 and time.monotonic() >= deadline:
                return
        while self.file_tokens > 0:
            if not self.file_names:
                if self.file_i >= len(self.file_order):
                    if now < self.file_pass_at + POLL_CYCLE:
                        break
                    self.file_order, self.file_i, self.file_pass_at = list(self.dirs), 0, now
                    if not self.file_order:
                        break
                self.file_dir = self.file_order[self.file_i]
                self.file_i += 1
                state = self.dirs.get(self.file_dir)
                self.file_names = list(state.files) if state is not None else []
                continue
            names = self.file_names[-32:]
            del self.file_names[-32:]
            self.file_tokens -= self._look_files(self.file_dir, names, now)
            if time.monotonic() >= deadline:
                return

    def _look_files(self, parent: str, names: list[str], now: float) -> int:
        """_look_file for names of directory parent, the common case (nothing changed)
        made cheap: the round robin's idle cost is this loop; the stat calls made."""
        state = self.dirs.get(parent)
        if state is None:
            return 0
        files, lstat = state.files, os.lstat
        prefix = f"{self.top}/{parent}/" if parent else f"{self.top}/"
        for name in names:
            try:
                sig = file_sig(lstat(prefix + name))
            except OSError:
                sig = None
            if sig is None or sig != files.get(name) or self.unsettled:
                self._look_file(parent, name, now)  # (the careful way: a second look)
        return len(names)

    def _look_file(self, parent: str, name: str, now: float) -> None:
        """lstat one file of directory parent and compare it with its snapshot."""
        path = join(parent, name)
        state = self.dirs.get(parent)
        if state is None:  # its directory went (or is ignored now): nothing to follow
            self.hot.pop(path, None)
            self._settled(path, note=False)
            return
        try:
            st = os.lstat(f"{self.top}/{path}")
        except (FileNotFoundError, NotADirectoryError):
            if name in state.files:  # gone, as far as a listing of its directory says so
                self._look_dir(parent, force=True)  # (not when the work tree is away)
            return
        except OSError:
            return  # unreadable (a permission, a network error): as it was
        if stat.S_ISDIR(st.st_mode):  # a directory: its own looks follow it
            self.hot.pop(path, None)
            self._settled(path, note=False)
            if name in state.files:  # a file that became one: the listing says what
                self._look_dir(parent, force=True)
            return
        sig = file_sig(st)
        old = state.files.get(name)
        if old == sig:
            seen = self.unsettled.get(path)
            if seen is not None and now - seen[1] >= POLL_STABLE:
                self._settled(path, note=True)
            return
        state.files[name] = sig
        self._changed(path, old is None, now)

    def _look_dir(self, rel: str, force: bool) -> int:
        """lstat directory rel and list it again if it changed (or force); the stat calls."""
        state = self.dirs.get(rel)
        if state is None:
            self.hot.pop(rel, None)
            return 0
        try:
            st = os.lstat(f"{self.top}/{rel}" if rel else self.top)
        except (FileNotFoundError, NotADirectoryError):
            return 1 + self._vanished(rel)
        except OSError as e:
            self._unreadable(rel, e)
            return 1
        if not stat.S_ISDIR(st.st_mode):
            return 1 + self._vanished(rel)
        if force or state.racy or dir_sig(st) != state.sig:
            return self._relist(rel, state) or 1 + self._vanished(rel)
        return 1

    def _vanished(self, rel: str) -> int:
        """rel is no directory any more: its parent's listing says what became of it (a
        parent that went too: the grandparent's, and so on); the stat calls made."""
        cost = 0
        while rel:
            rel = rel.rpartition("/")[0]
            state = self.dirs.get(rel)
            if state is None:
                return cost
            listed = self._relist(rel, state)
            if listed:
                return cost + listed
        # the work tree itself is away (unmounted, a network file system gone): nothing is
        # taken for deleted
        self._unreadable("", FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
        return cost

    def _unreadable(self, rel: str, e: OSError) -> None:
        """A directory that cannot be read (a permission, a network file system away): its
        files stay as they were seen - nothing is taken for deleted."""
        if rel not in self.unreadable:
            self.unreadable.add(rel)
            log.warning("cannot read '%s': %s; its files are taken as they were",
                        self.abs(rel), e.strerror or e)

    def _relist(self, rel: str, state: DirState) -> int:
        """List rel again and report what differs from its snapshot; the stat calls made
        (0: rel is gone, its parent must say more)."""
        where = self.abs(rel)
        try:
            st = os.lstat(where)
            if not stat.S_ISDIR(st.st_mode):
                return 0
            with os.scandir(where) as it:
                entries = list(it)
            dev = os.lstat(where).st_dev  # (unmounted while it was listed: not this listing)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        except OSError as e:
            self._unreadable(rel, e)
            return 1
        if st.st_dev != state.dev or dev != state.dev:
            return self._remounted(rel)
        self.unreadable.discard(rel)
        state.sig = dir_sig(st)
        state.racy = racy(st)
        if rel and any(e.name == ".git" for e in entries):
            self.became_repo(rel)  # (git init, git clone)
            return 1
        now = time.monotonic()
        files: dict[str, int] = {}
        dirs: set[str] = set()
        fresh: list[str] = []
        known = state.subs or {}
        for entry in entries:
            name = sys.intern(entry.name)
            if name == ".git":
                continue
            old = state.files.get(name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                est = None if is_dir else entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            except OSError:
                if old is not None:
                    files[name] = old  # unreadable: as it was
                continue
            if est is None:
                dirs.add(name)
                if name not in known:
                    fresh.append(join(rel, name))
                continue
            files[name] = sig = file_sig(est)
            if sig != old:
                self._changed(join(rel, name), old is None, now)
        for name in state.files.keys() - files.keys():
            self._gone(join(rel, name), now)
        state.files = files
        went = [name for name in known if name not in dirs]
        for name in went:
            self.drop_tree(join(rel, name))
            self.note_dir(join(rel, name))
            state.sub(name, None)
        if went or fresh:
            self._heat(rel, now)
        if fresh:
            ignored = self.checker.ignored(fresh)
            for path in fresh:
                if path in ignored:
                    state.sub(path.rpartition("/")[2], False)
                else:
                    self.note_dir(path)
                    self._walk(path, report=True)
                    self._heat(path, now)  # (being filled, as likely as not)
        return 1 + len(entries)

    def _remounted(self, rel: str) -> int:
        """rel is on another file system than it was: one was mounted on it, or the one
        mounted there went (unmounted, a network share or FUSE daemon gone). What it showed
        is hidden, not deleted (inotify makes no deletion of it either): rel and below are
        walked anew, what is there now reported, nothing taken for deleted; the stat calls."""
        log.warning("'%s' is on another file system now (mounted or unmounted): "
                    "what it held before is not taken for deleted", self.abs(rel))
        prefix = rel + "/" if rel else ""
        for path in [p for p in self.unsettled if p.startswith(prefix)]:
            self._settled(path, note=False)
        before = len(self.dirs)
        self.drop_tree(rel)
        self._walk(rel, report=True)
        return 1 + abs(len(self.dirs) - before)

    def _walk(self, rel: str, report: bool) -> None:
        """Take the snapshot of rel and every directory below it that git does not ignore;
        report their files (a directory that appeared)."""
        level = [rel]
        while level:
            subdirs: list[str] = []
            for d in level:
                subdirs += self._snapshot(d, report)
            ignored = self.checker.ignored(subdirs) if subdirs else set()
            for d in ignored:
                up, _, name = d.rpartition("/")
                self.dirs[up].sub(name, False)
            level = [d for d in subdirs if d not in ignored]

    def _snapshot(self, rel: str, report: bool) -> list[str]:
        """One directory's state (lstat first, then its listing: a change meanwhile makes
        the next look list it again); its subdirectories. Its parent's sets follow."""
        where = self.abs(rel)
        up, _, name = rel.rpartition("/")
        parent = self.dirs.get(up) if rel else None
        if rel and os.path.lexists(os.path.join(where, ".git")):
            self.found_repo(rel)
            if parent is not None:
                parent.sub(name, False)
            if report:
                self.note(rel)
            return []
        try:
            st = os.lstat(where)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            state = DirState(dir_sig(st), st.st_dev, racy(st))
            self.dirs[rel] = state
            if parent is not None:
                parent.sub(name, True)
            with os.scandir(where) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):  # gone already: the parent's
            self.dirs.pop(rel, None)  # next listing says so
            if parent is not None:
                parent.sub(name, None)
            return []
        except OSError as e:  # kept, empty: once readable, its changed ctime lists it
            self._unreadable(rel, e)
            return []
        now = time.monotonic()
        subdirs = []
        for entry in entries:
            name = sys.intern(entry.name)  # (a tree repeats names: README, index.js, ...)
            if name == ".git":
                continue
            path = join(rel, name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(path)
                    continue
                state.files[name] = file_sig(entry.stat(follow_symlinks=False))
            except OSError:
                continue  # gone since the listing, or unreadable: the next look says
            if report:
                self._changed(path, True, now)
        return subdirs

    def drop_tree(self, rel: str) -> None:
        """Forget rel and everything below it (gone, moved away, ignored now)."""
        stack = [rel]
        while stack:
            d = stack.pop()
            state = self.dirs.pop(d, None)
            if state is not None:
                stack += [join(d, n) for n in state.polled()]
        prefix = rel + "/"
        self.nested = {n for n in self.nested if n != rel and not n.startswith(prefix)}
        self.unreadable = {u for u in self.unreadable if u != rel and not u.startswith(prefix)}
        # (the hot set and the files being written under it go at their next look)

    def became_repo(self, rel: str) -> None:
        """rel just got a .git of its own (git init, git clone): stop looking inside."""
        self.drop_tree(rel)
        parent = self.dirs.get(rel.rpartition("/")[0])
        if parent is not None:
            parent.sub(rel.rpartition("/")[2], False)
        self.found_repo(rel)
        self.note(rel)

    def rescan(self) -> None:
        """The ignore rules changed: directories git ignores now are dropped, those it no
        longer ignores (and former repositories that lost their .git) walked; a full batch
        covers every file. (Nothing was lost: no need to look at every file again.)"""
        self.rescan_due = False
        self.checker.reset()
        self.full = True
        self.touch()
        found = [join(rel, name) for rel, state in self.dirs.items() for name in state.subs or ()]
        ignored = self.checker.ignored(found) if found else set()
        for path in found:
            up, _, name = path.rpartition("/")
            state = self.dirs.get(up)
            if state is None or state.subs is None:  # (under a directory dropped just now)
                continue
            polled = state.subs.get(name)
            if path in ignored:
                if polled:
                    self.drop_tree(path)
                    state.sub(name, False)
            elif polled is False:
                if path in self.nested:
                    if os.path.lexists(os.path.join(self.abs(path), ".git")):
                        continue
                    self.nested.discard(path)
                self._walk(path, report=False)  # (marks it polled)

    # -- what a look found -------------------------------------------------------------------
    def _changed(self, path: str, born: bool, now: float) -> None:
        """A file was made or written: it is being written until its stat holds still."""
        if is_ignore_file(path) or path in self.rule_rel:
            self.want_rescan()
        if is_temp(path, self.extra):
            return
        first, _ = self.unsettled.pop(path, (now, now))
        self.unsettled[path] = (first, now)
        if len(self.unsettled) > UNSETTLED_MAX:
            self._settled(next(iter(self.unsettled)), note=False)
        if now - first >= SAVE_SPAN:  # written on and on: no lone save (see ready_at)
            self.lone = False
        self._heat(path, now)
        self.writing.add(path)
        self.unfinished.add(path)
        if born:
            self.born.add(path)
        self.note(path)

    def _settled(self, path: str, note: bool) -> None:
        """path kept its stat POLL_STABLE: a finished save (note), or no longer followed."""
        if self.unsettled.pop(path, None) is None:
            return
        self.writing.discard(path)
        self.unfinished.discard(path)
        if note:
            self.note(path, finishing=True)

    def _gone(self, path: str, now: float) -> None:
        """A file went (deleted, renamed away): a finished save, as a deletion is."""
        if is_ignore_file(path) or path in self.rule_rel:
            self.want_rescan()
        self.unsettled.pop(path, None)
        self.writing.discard(path)
        self.unfinished.discard(path)
        if is_temp(path, self.extra):
            return
        if path not in self.born:
            self.existed.add(path)  # (written anew, it is no new file: see ready_at)
        self._heat(path, now)  # a save that removes the file first writes it anew soon
        self.note(path, finishing=True)

    @staticmethod
    def _rule_sig(path: str) -> int | None:
        try:
            return file_sig(os.lstat(path))
        except OSError:
            return None


