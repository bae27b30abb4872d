"""Issue 14, "where inotify cannot see": the polling watcher's own cases (test_watch.py runs
every watcher test against it too), how `auto` picks a watcher, and a daemon that polls.

A network or FUSE file system cannot be mounted here: the choice is a function of the file
system's type (watch.choose), tested as such, and the daemon is made to poll by
autosync.watcher=poll on the local disk, where polling works the same.
"""

import errno
import logging
import os
import shutil
import subprocess
import threading
import time

import pytest

from autosync import pollwatch, watch
from autosync.config import Config
from autosync.git import Repo
from autosync.pollwatch import POLL_RATE, POLL_STABLE, PollWatcher
from autosync.util import Error
from autosync.watch import InotifyWatcher, choose, make_watcher, start_watcher
from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import wait_converged
from conftest import git, wait_for
from test_watch import collect, repo  # noqa: F401  (fixtures)


@pytest.fixture
def poller(repo):
    made = []

    def make(debounce=50, max_delay=2000, ignore=()):
        w = PollWatcher(Repo(repo), ignore, debounce, max_delay)
        w.start()
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def drain(w, seconds):
    """Every batch w gives within seconds (the looks go on meanwhile)."""
    got = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        b = w.wait(timeout=left)
        if b is not None:
            got.append(b)
    return got


# -- which watcher: a function of the file system's type ------------------------------------
@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse.rclone",
                                    "fuse", "9p", "drvfs", "ceph", "glusterfs", "virtiofs",
                                    "vboxsf"])
def test_auto_polls_a_network_or_fuse_file_system(fstype):
    assert choose("auto", fstype) == ("poll", f"work tree on {fstype}")


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs",
                                    "fuseblk"])
def test_auto_uses_inotify_on_a_local_file_system(fstype):
    assert choose("auto", fstype) == ("inotify", f"work tree on {fstype}")


def test_a_named_watcher_is_taken_whatever_the_file_system():
    assert choose("auto", None) == ("inotify", "")  # (no mountinfo: taken for local)
    assert choose("poll", "ext4") == ("poll", "autosync.watcher=poll")
    assert choose("inotify", "nfs4") == ("inotify", "autosync.watcher=inotify")


def test_auto_on_this_machines_temporary_directory_is_inotify(repo, env):
    w = make_watcher(Repo(repo), Config(Repo(repo)))
    try:
        assert isinstance(w, InotifyWatcher)
        assert w.describe() == f"inotify (work tree on {watch.fs_type(str(repo))})"
    finally:
        w.close()


def test_auto_polls_what_mountinfo_says_is_nfs(repo, env, monkeypatch):
    monkeypatch.setattr(watch, "fs_type", lambda path: "nfs4")
    w = start_watcher(make_watcher(Repo(repo), Config(Repo(repo))))
    try:
        assert isinstance(w, PollWatcher) and w.describe() == "poll (work tree on nfs4)"
        (repo / "seen.txt").write_text("x")
        collect(w, lambda p: "seen.txt" in p)
    finally:
        w.close()


@pytest.mark.parametrize("value", ["fast", "inotify poll", ""])
def test_a_bad_watcher_value_is_one_clear_line(repo, tenv, value):
    git(repo, "config", "autosync.watcher", value)
    with pytest.raises(Error) as e:
        Config(Repo(repo))
    assert e.value.message == (f"bad config value '{value}' for 'autosync.watcher' "
                               "(it is auto, inotify or poll)")
    assert e.value.hints == ["git config autosync.watcher auto"]
    res = subprocess.run(["git", "autosync", "start"], cwd=repo, env=tenv,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [
        f"git-autosync: bad config value '{value}' for 'autosync.watcher' "
        "(it is auto, inotify or poll)", "hint: git config autosync.watcher auto"]


def test_values_are_taken_in_any_case(repo, env):
    git(repo, "config", "autosync.watcher", " Poll ")
    assert Config(Repo(repo))["watcher"] == "poll"


class FewWatches(watch.INotify):
    """An inotify instance whose watch limit is 10 (ENOSPC after that), as the kernel's
    would be with fs.inotify.max_user_watches=10 (not changed for real: other programs on
    this machine need theirs)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.added = 0

    def add_watch(self, path, mask):
        self.added += 1
        if self.added > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().add_watch(path, mask)


def test_auto_polls_when_the_watch_limit_is_reached(repo, env, caplog, monkeypatch):
    """With auto, running by polling beats refusing to run; inotify asked for by name
    keeps its clear error."""
    for i in range(40):
        (repo / f"d{i}").mkdir()
    monkeypatch.setattr(watch, "INotify", FewWatches)
    named = make_watcher(Repo(repo), Config(Repo(repo)), "inotify")
    try:
        with pytest.raises(Error, match="inotify watch limit reached .* need about 41"):
            start_watcher(named)
    finally:
        named.close()
    with caplog.at_level(logging.WARNING, logger="autosync"):
        w = start_watcher(make_watcher(Repo(repo), Config(Repo(repo))))
    try:
        assert isinstance(w, PollWatcher)
        assert w.describe() == "poll (inotify watch limit reached)"
        assert w.watch_count() == 41
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "inotify watch limit reached" in said[0]
        assert "polling the work tree instead (hint: sudo sysctl " in said[0]
        threading.Timer(0.05, w.wakeup).start()  # the first watcher's pipe, handed over
        assert w.wait(timeout=10) is None
        (repo / "d7" / "new.txt").write_text("n")
        collect(w, lambda p: "d7/new.txt" in p)
    finally:
        w.close()


def test_auto_polls_when_there_is_no_inotify_instance_left(repo, env, caplog, monkeypatch):
    def no_instance(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(watch, "INotify", no_instance)
    with caplog.at_level(logging.WARNING, logger="autosync"):
        w = start_watcher(make_watcher(Repo(repo), Config(Repo(repo))))
    try:
        assert w.describe() == "poll (cannot use inotify: Too many open files)"
        assert [r.getMessage() for r in caplog.records] == [
            "cannot use inotify: Too many open files; polling the work tree instead "
            "(hint: sudo sysctl fs.inotify.max_user_instances=1024)"]
        (repo / "seen.txt").write_text("x")
        collect(w, lambda p: "seen.txt" in p)
    finally:
        w.close()


# -- what only stat calls can tell ---------------------------------------------------------
def test_a_write_in_place_is_seen_though_no_directory_changes(repo, poller):
    (repo / "notes.md").write_text("version one\n")
    os.utime(repo / "notes.md", (time.time() - 10, time.time() - 10))  # (not this tick's)
    w = poller(debounce=30000, max_delay=60000)  # a lone save, or nothing in time
    before = os.stat(repo).st_mtime_ns
    with open(repo / "notes.md", "r+b") as f:  # same size, same name, same inode
        f.write(b"VERSION")
    assert os.stat(repo).st_mtime_ns == before
    batch = w.wait(timeout=10)
    assert batch is not None and batch.paths == {"notes.md"}


def test_a_file_written_slowly_is_one_batch_with_its_final_content(repo, poller):
    """A writer that adds a piece every 0.06 s for over a second: its stat changes between
    most looks (every 0.05 s at a file being written) and never holds still POLL_STABLE,
    so the batch waits for it and comes once, after the last piece."""
    w = poller(debounce=300, max_delay=20000)
    pieces = [f"piece {i}\n" * 50 for i in range(20)]
    done = threading.Event()

    def write():
        with open(repo / "slow.log", "w") as f:
            for p in pieces:
                f.write(p)
                f.flush()
                time.sleep(0.06)  # the writer's own pace, not a wait for an outcome
        done.set()
    t = threading.Thread(target=write)
    t.start()
    try:
        batches, contents = [], []
        deadline = time.monotonic() + 20
        while not (done.is_set() and batches) and time.monotonic() < deadline:
            b = w.wait(timeout=0.2)
            if b is not None:
                batches.append((b, done.is_set()))
                contents.append((repo / "slow.log").read_text())
    finally:
        t.join()
    batches += [(b, True) for b in drain(w, 1.0)]
    assert [sorted(b.paths) for b, _ in batches] == [["slow.log"]]
    assert batches[0][1], "taken while the writer was still writing"
    assert contents[0] == "".join(pieces)


def test_a_file_whose_stat_keeps_changing_holds_the_batch(repo, poller):
    """The poll watcher's 'open for writing': changed again at every look, it is not
    taken; once it holds still POLL_STABLE, it is."""
    w = poller(debounce=50, max_delay=30000)
    stop = threading.Event()

    def keep_writing():
        with open(repo / "big.bin", "wb") as f:
            for _ in range(200):
                if stop.is_set():
                    break
                f.write(b"x" * 4096)
                f.flush()
                time.sleep(0.02)
    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while "big.bin" not in w.writing and time.monotonic() < deadline:
            assert w.wait(timeout=0.05) is None
        assert "big.bin" in w.writing, "never seen being written"
        assert w.wait(timeout=0.6) is None  # written all the time: held back
        assert "big.bin" in w.writing and w.busy()
    finally:
        stop.set()
        t.join()
    batch = w.wait(timeout=10)
    assert batch is not None and batch.paths == {"big.bin"}
    assert not w.writing


def test_a_tree_made_moved_and_deleted(repo, poller):
    w = poller()
    for d in ("a/b/c", "a/b2", "z"):
        (repo / d).mkdir(parents=True, exist_ok=True)
    for f in ("a/top.txt", "a/b/c/deep.txt", "a/b2/side.txt"):
        (repo / f).write_text(f)
    collect(w, lambda p: {"a/top.txt", "a/b/c/deep.txt", "a/b2/side.txt"} <= p)
    assert {"a", "a/b", "a/b/c", "a/b2", "z"} <= w.watched_dirs()
    os.rename(repo / "a", repo / "z" / "a")
    collect(w, lambda p: {"a", "z/a"} <= p)
    assert not any(d == "a" or d.startswith("a/") for d in w.watched_dirs())
    assert {"z/a", "z/a/b", "z/a/b/c", "z/a/b2"} <= w.watched_dirs()
    (repo / "z" / "a" / "b" / "c" / "deep.txt").write_text("moved, then edited")
    collect(w, lambda p: "z/a/b/c/deep.txt" in p)
    shutil.rmtree(repo / "z")
    collect(w, lambda p: "z" in p)
    assert w.watched_dirs() == {""}
    assert not w.writing and not w.unsettled


def test_ignored_directories_are_never_walked(repo, poller, monkeypatch):
    (repo / ".gitignore").write_text("node_modules/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore")
    for i in range(20):
        (repo / "node_modules" / f"p{i}").mkdir(parents=True)
        (repo / "node_modules" / f"p{i}" / "index.js").write_text("x")
    looked = []
    real_lstat, real_scandir = os.lstat, os.scandir
    monkeypatch.setattr(pollwatch.os, "lstat", lambda p, *a, **k: looked.append(str(p))
                        or real_lstat(p, *a, **k))
    monkeypatch.setattr(pollwatch.os, "scandir", lambda p: looked.append(str(p))
                        or real_scandir(p))
    w = poller()
    (repo / "src").mkdir()  # a new directory beside it, and more inside it
    (repo / "src" / "main.c").write_text("int main;")
    (repo / "node_modules" / "late").mkdir()
    (repo / "node_modules" / "late" / "x.js").write_text("x")
    paths, _ = collect(w, lambda p: "src/main.c" in p)
    drain(w, 2.5)  # more than two passes of the round robin
    assert "node_modules" not in str(w.watched_dirs())
    assert [p for p in looked if "node_modules/" in p] == []
    assert not any(p.startswith("node_modules") for p in paths)


def test_symbolic_links_are_never_followed(repo, poller, tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "file.txt").write_text("outside")
    os.symlink(outside, repo / "link")
    os.symlink(outside / "sub" / "file.txt", repo / "filelink")
    w = poller()
    assert w.watched_dirs() == {""}  # the link to a directory is a file here, as for git
    (outside / "sub" / "file.txt").write_text("changed outside, through nothing of ours")
    (outside / "sub" / "more.txt").write_text("more")
    (repo / "marker").write_text("m")
    paths, _ = collect(w, lambda p: "marker" in p)
    paths |= {p for b in drain(w, 2.5) for p in b.paths}
    assert paths == {"marker"}
    os.unlink(repo / "link")
    os.symlink(tmp_path, repo / "link")  # the link itself changed: that is a change
    collect(w, lambda p: "link" in p)


# -- failures: nothing lost, no traceback ---------------------------------------------------
def test_an_unreadable_directory_loses_nothing(repo, poller, monkeypatch, caplog):
    """A directory that cannot be listed (a permission, a network file system gone away)
    keeps its files as they were: none is taken for deleted, not even one whose own lstat
    fails. Once it can be read again, what changed meanwhile is seen."""
    (repo / "shared").mkdir()
    for name in ("a.txt", "b.txt"):
        (repo / "shared" / name).write_text(name)
    w = poller()
    broken = {str(repo / "shared"), str(repo)}
    real_scandir = os.scandir

    def scandir(path):
        if str(path) in broken:
            raise OSError(errno.EIO, "Input/output error")
        return real_scandir(path)
    monkeypatch.setattr(pollwatch.os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="autosync"):
        os.unlink(repo / "shared" / "a.txt")  # its lstat fails: no listing says it went
        (repo / "shared" / "new.txt").write_text("new")  # only a listing shows this one
        (repo / "top.txt").write_text("t")
        assert drain(w, 2.5) == []  # (two passes of the round robin)
    assert w.dirs["shared"].files.keys() == {"a.txt", "b.txt"}  # as they were
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "cannot read" in m and "/shared'" in m]) == 1
    broken.clear()
    paths, _ = collect(w, lambda p: {"shared/a.txt", "shared/new.txt", "top.txt"} <= p)
    assert "shared/b.txt" not in paths


def test_a_file_that_cannot_be_stat_ed_is_taken_as_it_was(repo, poller, monkeypatch):
    """EACCES, EIO, ESTALE on one file's lstat: no change, no deletion, no traceback; its
    edit is seen once it can be looked at again."""
    (repo / "locked.txt").write_text("v1\n")
    for p in (repo / "locked.txt", repo):  # (not this tick's; the directory not racy)
        os.utime(p, (time.time() - 10, time.time() - 10))
    w = poller(debounce=30000, max_delay=60000)
    assert not w.dirs[""].racy  # (a listing, which does not lstat by name, would see it)
    target = str(repo / "locked.txt")
    real_lstat = os.lstat
    refused = [True]

    def lstat(path, *a, **k):
        if refused[0] and str(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real_lstat(path, *a, **k)
    monkeypatch.setattr(pollwatch.os, "lstat", lstat)
    (repo / "locked.txt").write_text("v2, unseen for now\n")
    assert drain(w, 2.5) == []  # (two passes over it)
    refused[0] = False
    batch = w.wait(timeout=10)
    assert batch is not None and batch.paths == {"locked.txt"}


def test_a_directory_vanishing_during_a_walk_is_no_traceback(repo, poller, monkeypatch):
    w = poller()
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("/d/e"):  # gone between its parent's listing and its own
            shutil.rmtree(str(path))
        return real_scandir(path)
    monkeypatch.setattr(pollwatch.os, "scandir", scandir)
    (repo / "d" / "e").mkdir(parents=True)
    (repo / "d" / "e" / "f.txt").write_text("f")
    (repo / "d" / "kept.txt").write_text("k")
    paths, _ = collect(w, lambda p: "d/kept.txt" in p)
    assert "d/e" not in w.watched_dirs() and "d" in w.watched_dirs()
    (repo / "d" / "e").mkdir()  # back again: seen as the new directory it is
    (repo / "d" / "e" / "g.txt").write_text("g")
    monkeypatch.setattr(pollwatch.os, "scandir", real_scandir)
    collect(w, lambda p: "d/e/g.txt" in p)


def test_the_work_tree_going_away_is_no_mass_deletion(repo, poller, monkeypatch, caplog):
    """The work tree's own directory cannot be found (a network file system unmounted, a
    stale handle; its .git elsewhere): nothing is reported, one warning is logged, and once
    it is back, a save is seen again."""
    (repo / "keep.txt").write_text("k")
    w = poller()
    top = str(repo)
    away = [True]
    real_lstat, real_scandir = os.lstat, os.scandir

    def gone(path):
        path = str(path)
        return away[0] and (path == top or path.startswith(top + "/")) and \
            not path.startswith(top + "/.git/")

    def lstat(path, *a, **k):
        if gone(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return real_lstat(path, *a, **k)

    def scandir(path):
        if gone(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return real_scandir(path)
    monkeypatch.setattr(pollwatch.os, "lstat", lstat)
    monkeypatch.setattr(pollwatch.os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="autosync"):
        assert drain(w, 2.5) == []
    assert w.dirs[""].files.keys() >= {"README", "keep.txt"}
    assert [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    away[0] = False
    (repo / "keep.txt").write_text("edited once it is back")
    collect(w, lambda p: "keep.txt" in p)


def test_idle_looks_stay_within_the_budget_and_find_a_write_in_place(repo, poller,
                                                                      monkeypatch):
    """3,000 files in 300 directories: idle, the round robin makes no more stat calls than
    its rate allows, and still finds a write in place in a file nobody touched lately."""
    for d in range(300):
        sub = repo / f"d{d:03d}"
        sub.mkdir()
        for i in range(10):
            (sub / f"f{i}.txt").write_text(f"{d} {i}\n")
    w = poller(debounce=30000, max_delay=60000)
    calls = [0]
    real_lstat = os.lstat
    monkeypatch.setattr(pollwatch.os, "lstat", lambda *a, **k: calls.__setitem__(
        0, calls[0] + 1) or real_lstat(*a, **k))
    t0 = time.monotonic()
    assert drain(w, 3.0) == []
    elapsed = time.monotonic() - t0
    assert calls[0] <= POLL_RATE * elapsed * 1.1 + 50, (calls[0], elapsed)
    assert calls[0] >= 3300, "not one pass over the tree in 3 s"
    with open(repo / "d123" / "f7.txt", "r+b") as f:
        f.write(b"9")  # same size, the directory unchanged
    batch = w.wait(timeout=15)
    assert batch is not None and batch.paths == {"d123/f7.txt"}


# -- a daemon that polls -------------------------------------------------------------------
def test_a_polling_daemon_commits_pushes_and_the_peer_gets_it(cluster):
    cluster.config["watcher"] = "poll"
    a, b = cluster.clone("a"), cluster.clone("b")
    status = a.autosync("status").stdout
    assert "  watcher:       poll (autosync.watcher=poll)\n" in status
    a.write("notes.md", "saved on a, seen by polling\n")
    wait_for(lambda: b.read("notes.md") == "saved on a, seen by polling\n", timeout=30,
             what="b to get a's save")
    with open(b.path / "notes.md", "r+") as f:  # in place, on the other side
        f.write("EDITED")
    wait_for(lambda: (a.read("notes.md") or "").startswith("EDITED"), timeout=30,
             what="a to get b's edit in place")
    wait_converged([a, b], cluster.server)
    subjects = git(a.path, "log", "--format=%s", "-5").splitlines()
    assert {"autosync: edit notes.md (host b)", "autosync: add notes.md (host a)"} <= \
        set(subjects)
    assert "watcher poll (autosync.watcher=poll)" in a.log()


def test_a_polling_daemon_commits_a_slow_write_once_with_its_final_content(cluster):
    cluster.config.update(watcher="poll", debounce=300, maxDelay=20000)
    a = cluster.clone("a")
    before = int(git(a.path, "rev-list", "--count", "HEAD"))
    text = "".join(f"line {i}\n" for i in range(20))
    with open(a.path / "report.txt", "w") as f:
        for line in text.splitlines(keepends=True):
            f.write(line)
            f.flush()
            time.sleep(POLL_STABLE / 4)  # the writer's own pace, not a wait for an outcome
    wait_for(lambda: git(a.path, "status", "--porcelain", env=a.env) == ""
             and int(git(a.path, "rev-list", "--count", "HEAD")) > before, timeout=30,
             what="the slow write committed")
    assert int(git(a.path, "rev-list", "--count", "HEAD")) == before + 1
    assert git(a.path, "show", "HEAD:report.txt") + "\n" == text
