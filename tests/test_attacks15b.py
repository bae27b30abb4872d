"""Attack round 15b on this session's changes: the start-up scan that trusts directory link
counts, the commit wording taken from `git status`, one push per lone save and announced
commits fetched without asking git.

Each test is one finding and failed while the bug was there. In-process tests drive the
real Watcher and commit helper against the real kernel and real repositories; daemon tests
start it with `git autosync start`.
"""

import os
import subprocess
import sys
import time

import pytest
from cluster import Cluster
from conftest import git, wait_for
from test_watch import collect, repo, watcher  # noqa: F401  (fixtures)

from autosync import watch
from autosync.commit import commit_changes
from autosync.config import Config
from autosync.git import Repo


# -- 1. the start-up scan ------------------------------------------------------------------------
CHURN = """
import os, sys
d = sys.argv[1]
while True:
    for n in ('a', 'b', 'c', 'x', 'y', 'z', 't0', 't1'):
        os.mkdir(os.path.join(d, n))
        os.rmdir(os.path.join(d, n))
"""


def test_a_directory_beside_one_made_and_removed_during_the_scan_stays_watched(
        repo, watcher):
    """A build tool (or a cache) makes and removes scratch directories in d while the
    daemon starts or rescans. The scan read d's link count (d/keep only), then found the
    scratch directory made after it first, and stopped there: d/keep went unwatched for
    good, and every later save in it was never committed."""
    if watch.fs_type(str(repo)) not in watch.SUBDIR_LINKS:
        pytest.skip("link counts do not count subdirectories here")
    (repo / "d" / "keep").mkdir(parents=True)
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(repo / "d")])
    try:
        w = watcher(debounce=20, max_delay=200)
        deadline = time.monotonic() + 3.0
        while "d/keep" in w.path_wd and time.monotonic() < deadline:
            w.rescan()  # as after an inotify queue overflow or a .gitignore edit
            while w.wait(timeout=0) is not None:
                pass
    finally:
        churn.kill()
        churn.wait()
    assert "d/keep" in w.path_wd, "d/keep is not watched after a rescan"
    drain_deadline = time.monotonic() + 10
    while w.wait(timeout=0.3) is not None and time.monotonic() < drain_deadline:
        pass  # the churn's events (and the rescan an overflow of them asks for)
    (repo / "d" / "keep" / "note.md").write_text("saved\n")
    collect(w, lambda p: "d/keep/note.md" in p, timeout=3)


# -- 2. the commit wording --------------------------------------------------------------------------
def do_commit(path, paths):
    repo_ = Repo(path)
    return commit_changes(repo_, Config(repo_), paths)


def subject(path):
    return git(path, "log", "-1", "--format=%s")


@pytest.fixture
def seeded(make_repo):
    r = make_repo()
    git(r, "config", "autosync.host", "desk")
    (r / "keep.md").write_text("keep\n")
    git(r, "add", "keep.md")
    git(r, "commit", "-qm", "seed")
    return r


def test_a_change_staged_by_hand_outside_the_batch_is_in_the_message(seeded):
    """`git rm --cached keep.md` (stop tracking it) touches no file, so no batch names
    it; the next save of README commits the removal too. The message said only 'edit
    README': a deletion nobody is told of."""
    r = seeded
    git(r, "rm", "-q", "--cached", "keep.md")
    (r / "README").write_text("changed\n")
    do_commit(r, ["README"])
    assert git(r, "show", "--name-status", "--format=", "HEAD").splitlines() == \
        ["M\tREADME", "D\tkeep.md"]
    assert subject(r) == "autosync: edit README, delete keep.md (host desk)"


def test_a_file_added_with_intent_to_add_is_worded_as_added(seeded):
    """`git add -N new.md` then a save of it: the commit adds new.md; it said 'edit'."""
    r = seeded
    (r / "new.md").write_text("new\n")
    git(r, "add", "-N", "new.md")
    do_commit(r, ["new.md"])
    assert git(r, "show", "--name-status", "--format=", "HEAD") == "A\tnew.md"
    assert subject(r) == "autosync: add new.md (host desk)"


def test_a_file_untracked_by_hand_then_saved_is_one_edit(seeded):
    """`git rm --cached keep.md`, then a save of it: status lists it twice ('D ' and
    '??'); the commit edits one file, the message said 'edit keep.md, add keep.md'."""
    r = seeded
    git(r, "rm", "-q", "--cached", "keep.md")
    (r / "keep.md").write_text("keep, edited\n")
    do_commit(r, ["keep.md"])
    assert git(r, "show", "--name-status", "--format=", "HEAD") == "M\tkeep.md"
    assert subject(r) == "autosync: edit keep.md (host desk)"


def test_a_file_replaced_by_a_directory_is_worded_as_such(seeded):
    """keep.md removed and a directory keep.md/ made in its place: the commit deletes the
    file and adds the directory's file; the message said 'edit keep.md'."""
    r = seeded
    (r / "keep.md").unlink()
    (r / "keep.md").mkdir()
    (r / "keep.md" / "a").write_text("something else entirely\n")
    do_commit(r, ["keep.md", "keep.md/a"])
    assert sorted(git(r, "show", "--name-status", "--format=", "HEAD").splitlines()) == \
        ["A\tkeep.md/a", "D\tkeep.md"]
    assert subject(r) == "autosync: add keep.md/a, delete keep.md (host desk)"


def test_a_directory_replaced_by_a_file_is_committed(seeded):
    """d/a committed, then `rm -r d; echo > d`: the batch names d and d/a. Looking at
    d/a raised NotADirectoryError (an OSError, no Error): the commit helper failed and
    the daemon's main loop with it."""
    r = seeded
    (r / "d").mkdir()
    (r / "d" / "a").write_text("a\n")
    do_commit(r, ["d", "d/a"])
    (r / "d" / "a").unlink()
    (r / "d").rmdir()
    (r / "d").write_text("now a file\n")
    res = do_commit(r, ["d", "d/a"])
    assert res.commit is not None
    assert git(r, "ls-tree", "--name-only", "HEAD").splitlines() == ["README", "d", "keep.md"]


def test_a_daemon_commits_a_directory_replaced_by_a_file(tmp_path, tenv, toolkit):
    cl = Cluster(tmp_path, tenv, toolkit)
    try:
        a = cl.clone("a")
        a.write("d/a.md", "a\n")
        wait_for(lambda: "d/a.md" in a.files() and a.clean(), what="d/a.md committed")
        (a.path / "d" / "a.md").unlink()
        (a.path / "d").rmdir()
        (a.path / "d").write_text("now a file\n")
        wait_for(lambda: not a.running() or (a.files().get("d") == "now a file" and a.clean()),
                 what="d committed as a file")
        assert a.running(), a.log()[-3000:]
        assert a.files().get("d") == "now a file", a.log()[-3000:]
    finally:
        cl.stop()
