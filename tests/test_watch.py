"""The watchers against a real kernel: recursion, moves, ignores, overflow, limits, coalescing.

Every test that takes the `watcher` fixture runs against both kinds, inotify and polling
(`watcher_kind`); the few about what only inotify does (its queue, its watch limit, the
close of a file, link counts at start-up) say so with `inotify_only`. Polling's own cases
are in test_poll.py.
"""

import os
import select
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from autosync.git import Repo
from autosync.ignore import IgnoreChecker
from autosync.util import Error
from autosync.pollwatch import PollWatcher
from autosync.watch import InotifyWatcher
from conftest import LIBEXEC, git, wait_for

KINDS = {"inotify": InotifyWatcher, "poll": PollWatcher}
# for what only inotify can do (or see): its queue and watch limit, a file's close, the
# link counts it reads at start-up
inotify_only = pytest.mark.parametrize("watcher_kind", ["inotify"])


@pytest.fixture(params=list(KINDS))
def watcher_kind(request):
    """Both kinds here (conftest's is inotify alone, for the modules that borrow `watcher`)."""
    return request.param


@pytest.fixture
def repo(make_repo):
    return make_repo("w")


@pytest.fixture
def watcher(repo, watcher_kind):
    made = []

    def make(debounce=50, max_delay=2000, ignore=()):
        w = KINDS[watcher_kind](Repo(repo), ignore, debounce, max_delay)
        w.start()
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def collect(w, until, timeout=10.0):
    """Batches until until(paths_so_far) holds; returns (paths, batches)."""
    paths, batches = set(), []
    deadline = time.monotonic() + timeout
    while not until(paths) and time.monotonic() < deadline:
        b = w.wait(timeout=0.2)
        if b is not None:
            batches.append(b)
            paths |= b.paths
    assert until(paths), f"timed out; got {paths}"
    return paths, batches


def full_batch(w, what="a full batch"):
    got = []
    wait_for(lambda: got.append(w.wait(timeout=0.2)) or any(b and b.full for b in got),
             what=what)


@contextmanager
def proc_setting(name, value):
    """Temporarily change /proc/sys/fs/inotify/NAME (root only), always restored."""
    path = f"/proc/sys/fs/inotify/{name}"
    try:
        old = open(path).read().strip()
        with open(path, "w") as f:
            f.write(str(value))
    except OSError:
        pytest.skip(f"cannot change {path} here")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def test_mkdir_p_then_touch_is_caught(repo, watcher):
    w = watcher()
    os.makedirs(repo / "a" / "b" / "c")
    (repo / "a" / "b" / "c" / "f").write_text("deep\n")
    collect(w, lambda p: "a/b/c/f" in p)
    assert w.watch_count() == 4


def test_directory_moved_in_is_watched_and_scanned(repo, watcher, tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "x.txt").write_text("x")
    w = watcher()
    os.rename(outside, repo / "inside")
    collect(w, lambda p: "inside/sub/x.txt" in p)
    (repo / "inside" / "sub" / "later.txt").write_text("later")
    collect(w, lambda p: "inside/sub/later.txt" in p)


def test_directory_moved_out_loses_its_watches(repo, watcher, tmp_path):
    (repo / "d" / "e").mkdir(parents=True)
    w = watcher()
    before = w.watch_count()
    os.rename(repo / "d", tmp_path / "gone")
    collect(w, lambda p: "d" in p)
    assert w.watch_count() == before - 2
    (tmp_path / "gone" / "e" / "f.txt").write_text("not ours any more")
    (repo / "marker").write_text("m")
    paths, _ = collect(w, lambda p: "marker" in p)
    assert not any(p.startswith("gone") or p.startswith("d/") for p in paths)


def test_directory_renamed_to_an_ignored_name_loses_its_watches(repo, watcher):
    (repo / ".gitignore").write_text("*.old/\n")
    (repo / "src" / "lib").mkdir(parents=True)
    w = watcher()
    base = w.watch_count()
    os.rename(repo / "src", repo / "src.old")
    collect(w, lambda p: "src" in p)
    assert w.watch_count() == base - 2


def test_directory_renamed_inside_keeps_working(repo, watcher):
    (repo / "old").mkdir()
    w = watcher()
    os.rename(repo / "old", repo / "new")
    collect(w, lambda p: {"old", "new"} <= p)
    (repo / "new" / "f").write_text("f")
    collect(w, lambda p: "new/f" in p)


def test_git_internals_never_reported(repo, watcher):
    w = watcher()
    git(repo, "commit", "--allow-empty", "-q", "-m", "touches .git only")
    (repo / ".git" / "scratch").write_text("x")
    (repo / "visible").write_text("v")
    paths, _ = collect(w, lambda p: "visible" in p)
    assert not any(p == ".git" or p.startswith(".git/") for p in paths)


def test_ignored_directories_are_not_watched(repo, watcher):
    (repo / ".gitignore").write_text("node_modules/\n*.log\n")
    w = watcher()
    base = w.watch_count()
    for i in range(50):
        (repo / "node_modules" / f"pkg{i}").mkdir(parents=True)
        (repo / "node_modules" / f"pkg{i}" / "index.js").write_text("x")
    (repo / "debug.log").write_text("noise")
    (repo / "real.txt").write_text("r")
    paths, _ = collect(w, lambda p: "real.txt" in p)
    assert w.watch_count() == base
    assert "debug.log" not in paths
    assert not any(p.startswith("node_modules/") for p in paths)


def test_gitignore_edit_triggers_a_full_rescan(repo, watcher):
    (repo / "build").mkdir()
    w = watcher()
    base = w.watch_count()
    (repo / ".gitignore").write_text("build/\n")
    got = []
    wait_for(lambda: got.append(w.wait(timeout=0.2)) or any(b and b.full for b in got),
             what="a full batch")
    assert w.watch_count() == base - 1


def test_editor_temp_files_never_start_a_batch(repo, watcher):
    w = watcher(ignore=["*.bak", "cache/*"])
    for name in (".notes.md.swp", "4913", "notes.md~", "#notes.md#", ".#notes.md",
                 ".~lock.report.odt#", "x.bak"):
        (repo / name).write_text("temp")
    (repo / "cache").mkdir()
    (repo / "cache" / "blob").write_text("c")
    (repo / "notes.md").write_text("real")
    paths, _ = collect(w, lambda p: "notes.md" in p)
    assert paths <= {"notes.md", "cache"}


def test_burst_becomes_one_batch(repo, watcher):
    w = watcher(debounce=200, max_delay=5000)
    for i in range(20):  # 20 writes across 300 ms
        (repo / f"f{i}.txt").write_text(str(i))
        time.sleep(0.015)  # paced writes: the burst itself, not a wait for an outcome
    paths, batches = collect(w, lambda p: len(p) == 20)
    assert len(batches) == 1


def test_max_delay_caps_a_never_ending_burst(repo, watcher):
    w = watcher(debounce=200, max_delay=500)
    stop = threading.Event()

    def keep_writing():
        i = 0
        while not stop.is_set() and i < 400:
            (repo / "busy.txt").write_text(str(i))
            i += 1
            time.sleep(0.05)
    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        batch = w.wait(timeout=10)
        assert batch is not None and "busy.txt" in batch.paths
        assert t.is_alive(), "the batch must come while writes are still going on"
    finally:
        stop.set()
        t.join()


def test_atomic_save_reports_the_final_name(repo, watcher):
    w = watcher()
    tmp = repo / ".doc.md.tmp.1234"
    tmp.write_text("final content")
    os.replace(tmp, repo / "doc.md")
    paths, _ = collect(w, lambda p: "doc.md" in p)
    assert ".doc.md.tmp.1234" not in paths


@inotify_only  # (polling sees no close: test_poll.py has a file whose stat keeps changing)
def test_a_file_open_for_writing_holds_the_batch(repo, watcher):
    w = watcher(debounce=50, max_delay=3000)
    f = open(repo / "big.bin", "wb")
    try:
        f.write(b"x" * 1000)
        f.flush()
        assert w.wait(timeout=0.5) is None  # still being written: held back
        f.write(b"y" * 1000)
    finally:
        f.close()
    collect(w, lambda p: "big.bin" in p)


def test_odd_file_names(repo, watcher):
    w = watcher()
    names = ["with space.txt", "new\nline.txt", "ünïcødé.txt", "-leading-dash", "tab\there",
             os.fsdecode(b"latin1-caf\xe9.txt"), "*glob?[x]"]
    for n in names:
        (repo / n).write_text("x")
    collect(w, lambda p: set(names) <= p)


def test_nested_repository_is_reported_not_entered(repo, watcher):
    w = watcher()
    git(repo, "init", "-q", "inner")
    (repo / "inner" / "file").write_text("inner")
    collect(w, lambda p: "inner" in p)
    assert w.nested_repos() == ["inner"]


def test_idle_wait_returns_none_and_wakeup_interrupts(repo, watcher):
    w = watcher()
    assert w.wait(timeout=0.1) is None
    threading.Timer(0.05, w.wakeup).start()
    start = time.monotonic()
    assert w.wait(timeout=10) is None
    assert time.monotonic() - start < 5


def test_flush_returns_pending_at_once(repo, watcher):
    w = watcher(debounce=60000, max_delay=60000)
    (repo / "now.txt").write_text("n")
    wait_for(lambda: (w.read_events(), w.pending())[1] >= 1, what="the event")
    batch = w.flush()
    assert batch is not None and "now.txt" in batch.paths


@inotify_only
def test_queue_overflow_gives_a_full_batch(repo, watcher):
    with proc_setting("max_queued_events", 16):
        w = watcher()
        for i in range(200):
            (repo / f"o{i}").write_text("x")
        got = []
        wait_for(lambda: got.append(w.wait(timeout=0.2)) or any(b and b.full for b in got),
                 what="a full batch after the overflow")


def test_watch_limit_is_one_clear_error(repo):
    for i in range(40):
        (repo / f"d{i}").mkdir()
    with proc_setting("max_user_watches", 10):
        w = InotifyWatcher(Repo(repo), (), 50, 1000)
        try:
            with pytest.raises(Error) as e:
                w.start()
        finally:
            w.close()
    msg = e.value.render()
    assert "fs.inotify.max_user_watches=10" in msg and "need about 41" in msg
    assert "hint: sudo sysctl fs.inotify.max_user_watches=82" in msg


def test_force_added_files_in_ignored_dirs_are_still_watched(repo, watcher):
    (repo / ".gitignore").write_text("vendor/\n")
    (repo / "vendor").mkdir()
    (repo / "vendor" / "kept.txt").write_text("v1")
    git(repo, "add", "-f", "vendor/kept.txt")
    git(repo, "commit", "-q", "-m", "force-added")
    w = watcher()
    (repo / "vendor" / "kept.txt").write_text("v2")
    collect(w, lambda p: "vendor/kept.txt" in p)


def test_negated_patterns_are_not_ignored(repo, watcher):
    (repo / ".gitignore").write_text("*.log\n!keep.log\nbuild*/\n!build-keep/\n")
    w = watcher()
    (repo / "build-keep" / "sub").mkdir(parents=True)
    (repo / "build-keep" / "sub" / "out.txt").write_text("o")
    (repo / "keep.log").write_text("k")
    (repo / "drop.log").write_text("d")
    paths, _ = collect(w, lambda p: {"keep.log", "build-keep/sub/out.txt"} <= p)
    assert "drop.log" not in paths


def test_info_exclude_edit_rescans(repo, watcher):
    (repo / "build").mkdir()
    w = watcher()
    base = w.watch_count()
    (repo / ".git" / "info" / "exclude").write_text("build/\n")
    full_batch(w, "a full batch after editing info/exclude")
    assert w.watch_count() == base - 1


def test_global_excludes_file_edit_rescans(repo, watcher, home):
    (home / ".config" / "git").mkdir(parents=True)
    (repo / "cache").mkdir()
    w = watcher()
    base = w.watch_count()
    tmp = home / ".config" / "git" / "ignore.new"
    tmp.write_text("cache/\n")
    os.replace(tmp, home / ".config" / "git" / "ignore")  # an editor's atomic save
    full_batch(w, "a full batch after editing core.excludesFile")
    assert w.watch_count() == base - 1


def test_rule_changes_in_one_burst_rescan_once(repo, watcher, monkeypatch):
    w = watcher(debounce=200)
    rescans = []
    real = w.rescan
    monkeypatch.setattr(w, "rescan", lambda: (rescans.append(1), real()))
    for i in range(5):
        (repo / f"d{i}").mkdir()
        (repo / f"d{i}" / ".gitignore").write_text("*.o\n")
    full_batch(w)
    assert len(rescans) == 1


def test_directory_that_becomes_a_repository_is_left(repo, watcher):
    w = watcher()
    base = w.watch_count()
    (repo / "inner").mkdir()
    wait_for(lambda: w.wait(timeout=0.05) or w.watch_count() == base + 1, what="the new watch")
    git(repo / "inner", "init", "-q")
    wait_for(lambda: w.wait(timeout=0.05) or w.nested_repos() == ["inner"],
             what="inner reported as a repository")
    assert w.watch_count() == base
    (repo / "inner" / "file").write_text("not ours")
    (repo / "marker").write_text("m")
    paths, _ = collect(w, lambda p: "marker" in p)
    assert "inner/file" not in paths


def test_checker_handles_answers_bigger_than_a_pipe(repo):
    (repo / ".gitignore").write_text("*.log\n")
    checker = IgnoreChecker(Repo(repo))
    try:
        long = ["d" * 200 + f"/{i:04d}" + "x" * 2500 + ".log" for i in range(300)]
        assert checker.ignored(long + ["kept.txt"]) == set(long)
    finally:
        checker.close()


def test_autosync_watch_prints_batches(repo, env, watcher_kind):
    """The entry script alone: a batch of NUL-terminated paths closed by an empty one (what
    `autosync-commit --stdin -z` reads); -z keeps odd names intact."""
    proc = subprocess.Popen([sys.executable, str(LIBEXEC / "autosync-watch"), "-C", str(repo),
                             "--debounce", "300", "--max-delay", "3000", "-z", "--count", "1",
                             "--watcher", watcher_kind],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert select.select([proc.stderr], [], [], 15)[0], "no start-up line"
        line = proc.stderr.readline()
        assert line.startswith(b"watching 1 directories (")
        assert line.endswith(f"s): {watcher_kind} (asked for)\n".encode())
        (repo / "a b").write_text("x")
        (repo / "-x\ny").write_text("x")
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert out == b"-x\ny\0a b\0\0"
    bad = subprocess.run([sys.executable, str(LIBEXEC / "autosync-watch"), "-C",
                          str(repo / "nope")], capture_output=True, env=env, timeout=30)
    assert bad.returncode != 0 and bad.stderr.startswith(b"git-autosync: ")
    assert b"Traceback" not in bad.stderr


# -- coalescing: a lone save is ready at once, a burst after the debounce ----------------------
SLOW = dict(debounce=30000, max_delay=60000)  # only the lone-save path can be ready in time


def test_a_lone_save_is_ready_without_waiting_for_the_debounce(repo, watcher):
    w = watcher(**SLOW)
    (repo / "notes.md").write_text("saved\n")
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"notes.md"}


def test_a_lone_delete_is_ready_too(repo, watcher):
    (repo / "old.md").write_text("x")
    w = watcher(**SLOW)
    (repo / "old.md").unlink()
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"old.md"}


def test_two_files_saved_together_wait_for_the_debounce(repo, watcher):
    w = watcher(debounce=1500, max_delay=60000)
    (repo / "a.md").write_text("a")
    (repo / "b.md").write_text("b")
    started = time.monotonic()
    paths, batches = collect(w, lambda p: p == {"a.md", "b.md"})
    assert len(batches) == 1 and time.monotonic() - started >= 1.0


@inotify_only  # (polling takes a file that keeps its stat POLL_STABLE for saved)
def test_a_file_created_and_written_later_waits_for_its_close(repo, watcher):
    w = watcher(**SLOW)
    with open(repo / "slow.txt", "w") as f:  # created empty: no save finished yet
        assert w.wait(timeout=0.5) is None
        f.write("the whole content\n")
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"slow.txt"}
    assert (repo / "slow.txt").read_text() == "the whole content\n"


def test_saves_that_keep_coming_are_one_burst(repo, watcher):
    w = watcher(debounce=400, max_delay=60000)
    batches = []
    for i in range(10):  # one save every 100 ms: the first alone, the rest one burst
        (repo / f"f{i}.txt").write_text(str(i))
        b = w.wait(timeout=0.1)
        if b is not None:
            batches.append(b)
    paths, more = collect(w, lambda p: p | {q for b in batches for q in b.paths}
                          >= {f"f{i}.txt" for i in range(10)})
    assert len(batches + more) <= 2, [sorted(b.paths) for b in batches + more]


# -- start-up: a look per directory, not per file -----------------------------------------------
def make_tree(top):
    """Directories with files, some of them with subdirectories, some empty."""
    dirs = []
    for a in range(4):
        for b in range(3):
            d = top / f"a{a}" / f"b{b}"
            d.mkdir(parents=True)
            dirs.append(d)
            for i in range(20):
                (d / f"f{i}.txt").write_text("x")
        for i in range(30):
            (top / f"a{a}" / f"g{i}.txt").write_text("y")
    (top / "a0" / "b1" / "deep" / "deeper").mkdir(parents=True)
    (top / "empty").mkdir()
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")
                  if p.is_dir() and ".git" not in p.parts)


def test_every_directory_is_watched_at_start(repo, watcher):
    expected = make_tree(repo)
    w = watcher()
    assert sorted(p for p in w.watched_dirs() if p) == expected
    (repo / "a0" / "b1" / "deep" / "deeper" / "new.txt").write_text("n")
    paths, _ = collect(w, lambda p: "a0/b1/deep/deeper/new.txt" in p)


@inotify_only
def test_every_directory_is_watched_where_link_counts_say_nothing(repo, watcher,
                                                                   monkeypatch):
    import autosync.watch as watch
    monkeypatch.setattr(watch, "fs_type", lambda path: "btrfs")  # directories: 1 link
    expected = make_tree(repo)
    w = watcher()
    assert w.links_dev is None
    assert sorted(p for p in w.path_wd if p) == expected


@inotify_only  # (polling reads every directory at start: its snapshot)
def test_start_up_reads_only_directories_with_subdirectories(repo, watcher, monkeypatch):
    import autosync.watch as watch
    if watch.fs_type(str(repo)) not in watch.SUBDIR_LINKS:
        pytest.skip(f"link counts do not count subdirectories on {watch.fs_type(str(repo))}")
    expected = make_tree(repo)
    read = []
    real = os.scandir
    monkeypatch.setattr(watch.os, "scandir", lambda p: read.append(p) or real(p))
    w = watcher()
    assert sorted(p for p in w.path_wd if p) == expected
    leaves = [d for d in expected if not any(e.startswith(d + "/") for e in expected)]
    assert not set(read) & {str(repo / d) for d in leaves}, "a leaf directory was read"
