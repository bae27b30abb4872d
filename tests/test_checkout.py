"""checkout.advance: the work tree moves to a descendant commit, and no save is ever lost."""

import itertools
import os
import signal
import stat
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from autosync import checkout, safefs
from autosync.checkout import Busy, advance
from autosync.git import Repo
from conftest import LIBEXEC, git


def status(path):
    return git(path, "status", "--porcelain")


@pytest.fixture
def two_commits(make_repo):
    """(path, old, new): new adds, edits, deletes, changes modes, links and a file/dir swap."""
    r = make_repo("co")
    (r / "keep.txt").write_text("same\n")
    (r / "edit.txt").write_text("old\n")
    (r / "gone" / "deep").mkdir(parents=True)
    (r / "gone" / "deep" / "x.txt").write_text("to be deleted\n")
    (r / "swap").mkdir()
    (r / "swap" / "inner.txt").write_text("a dir that becomes a file\n")
    (r / "run.sh").write_text("#!/bin/sh\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "old")
    old = git(r, "rev-parse", "HEAD")
    (r / "edit.txt").write_text("new\n")
    (r / "gone" / "deep" / "x.txt").unlink()
    (r / "swap" / "inner.txt").unlink()
    (r / "swap").rmdir()
    (r / "swap").write_text("now a file\n")
    (r / "new" / "dir").mkdir(parents=True)
    (r / "new" / "dir" / "added.txt").write_text("added\n")
    os.chmod(r / "run.sh", 0o755)
    os.symlink("keep.txt", r / "link")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "new")
    new = git(r, "rev-parse", "HEAD")
    git(r, "reset", "-q", "--hard", old)
    return r, old, new


def test_advance_updates_everything_and_leaves_a_clean_tree(two_commits):
    r, old, new = two_commits
    advance(Repo(r), "main", old, new)
    assert git(r, "rev-parse", "HEAD") == new
    assert status(r) == ""
    assert (r / "edit.txt").read_text() == "new\n"
    assert not (r / "gone").exists()
    assert (r / "swap").read_text() == "now a file\n"
    assert (r / "new" / "dir" / "added.txt").read_text() == "added\n"
    assert os.access(r / "run.sh", os.X_OK)
    assert os.readlink(r / "link") == "keep.txt"
    assert not (r / ".git" / "autosync" / "aside").exists()
    assert not [p for p in os.listdir(r) if p.startswith(".merge_file_")]


def test_an_edit_not_committed_yet_asks_for_a_commit_first(two_commits):
    r, old, new = two_commits
    (r / "edit.txt").write_text("saved after the commit\n")
    with pytest.raises(Busy):
        advance(Repo(r), "main", old, new)
    assert git(r, "rev-parse", "HEAD") == old
    assert (r / "edit.txt").read_text() == "saved after the commit\n"
    assert (r / "gone" / "deep" / "x.txt").exists()
    assert status(r) == " M edit.txt"
    assert not (r / ".git" / "autosync" / "update").exists()


def test_a_file_touched_but_unchanged_is_not_in_the_way(two_commits):
    r, old, new = two_commits
    os.utime(r / "edit.txt", (1, 1))  # stat data no longer matches the index
    advance(Repo(r), "main", old, new)
    assert (r / "edit.txt").read_text() == "new\n" and status(r) == ""


def test_an_untracked_file_where_one_is_added_asks_for_a_commit_first(two_commits):
    r, old, new = two_commits
    (r / "new" / "dir").mkdir(parents=True)
    (r / "new" / "dir" / "added.txt").write_text("mine\n")
    with pytest.raises(Busy):
        advance(Repo(r), "main", old, new)
    assert (r / "new" / "dir" / "added.txt").read_text() == "mine\n"
    assert git(r, "rev-parse", "HEAD") == old


def test_a_file_autosync_would_not_commit_is_moved_out_of_the_way(two_commits):
    """An ignored, too large or temp-named local file must not block merging forever."""
    r, old, new = two_commits
    (r / "new").write_text("an ignored local file where the merge adds a directory\n")
    copies, kept = advance(Repo(r), "main", old, new,
                           uncommittable=lambda paths: {p: "ignored" for p in paths})
    assert (r / "new" / "dir" / "added.txt").read_text() == "added\n"
    [(path, where)] = kept
    assert path == "new" and open(where).read().startswith("an ignored local file")
    assert where.startswith(str(r / ".git" / "autosync" / "kept"))
    assert status(r) == "" and copies == []


def test_a_save_before_the_swap_keeps_the_path_and_the_merge_goes_beside(two_commits,
                                                                         monkeypatch):
    """The race git's own checkout loses: a save lands after the checks, before the write."""
    r, old, new = two_commits

    def save(name, path):
        if name == "staged":
            (r / "edit.txt").write_text("saved in the middle\n")
    monkeypatch.setattr(checkout, "step_hook", save)
    copies, kept = advance(Repo(r), "main", old, new)
    assert (r / "edit.txt").read_text() == "saved in the middle\n"
    [(path, copy)] = copies
    assert path == "edit.txt" and (r / copy).read_text() == "new\n"
    assert git(r, "rev-parse", "HEAD") == new
    assert status(r) == f" M edit.txt\n?? {copy}"  # the save is committed next, with the copy


def test_a_save_on_a_file_being_deleted_is_kept(two_commits, monkeypatch):
    r, old, new = two_commits

    def save(name, path):
        if name == "staged":
            (r / "gone" / "deep" / "x.txt").write_text("edited while the merge ran\n")
    monkeypatch.setattr(checkout, "step_hook", save)
    advance(Repo(r), "main", old, new)
    assert (r / "gone" / "deep" / "x.txt").read_text() == "edited while the merge ran\n"
    assert git(r, "rev-parse", "HEAD") == new


def test_a_save_at_an_added_path_during_the_update_is_kept(two_commits, monkeypatch):
    r, old, new = two_commits

    def save(name, path):
        if name == "staged":
            (r / "new" / "dir").mkdir(parents=True)
            (r / "new" / "dir" / "added.txt").write_text("mine, saved just now\n")
    monkeypatch.setattr(checkout, "step_hook", save)
    copies, _ = advance(Repo(r), "main", old, new)
    assert (r / "new" / "dir" / "added.txt").read_text() == "mine, saved just now\n"
    assert [(r / c).read_text() for _, c in copies] == ["added\n"]


def test_a_symlink_planted_in_a_leading_directory_is_never_followed(two_commits, tmp_path,
                                                                   monkeypatch):
    r, old, new = two_commits
    outside = tmp_path / "outside"
    outside.mkdir()

    def plant(name, path):
        if name == "staged":
            os.symlink(outside, r / "new")  # where the merge is about to create new/dir/
    monkeypatch.setattr(checkout, "step_hook", plant)
    copies, kept = advance(Repo(r), "main", old, new)
    assert list(outside.iterdir()) == []
    assert [p for p, _ in kept] == ["new/dir/added.txt"]
    assert open(kept[0][1]).read() == "added\n"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_follow_the_umask_as_git_checkout_does(two_commits, tmp_path, umask):
    r, old, new = two_commits
    previous = os.umask(umask)
    try:
        advance(Repo(r), "main", old, new)
        ref = tmp_path / "ref"
        git(tmp_path, "clone", "-q", "--no-checkout", str(r), str(ref))
        git(ref, "checkout", "-q", new)
    finally:
        os.umask(previous)
    for name in ("edit.txt", "run.sh", "swap", "new", "new/dir", "new/dir/added.txt"):
        assert stat.S_IMODE(os.lstat(r / name).st_mode) == \
            stat.S_IMODE(os.lstat(ref / name).st_mode), name


def test_eol_filters_do_not_count_as_changes(make_repo):
    r = make_repo("eol")
    (r / ".gitattributes").write_text("*.txt text eol=crlf\n")
    (r / "a.txt").write_text("one\ntwo\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "crlf")
    git(r, "rm", "-q", "--cached", "a.txt")
    git(r, "add", "a.txt")
    old = git(r, "rev-parse", "HEAD")
    (r / "a.txt").write_text("one\ntwo\nthree\n")
    git(r, "commit", "-qam", "three")
    new = git(r, "rev-parse", "HEAD")
    git(r, "reset", "-q", "--hard", old)
    assert b"\r\n" in (r / "a.txt").read_bytes()
    advance(Repo(r), "main", old, new)
    assert (r / "a.txt").read_bytes() == b"one\r\ntwo\r\nthree\r\n"
    assert status(r) == ""


# -- killed at every step ---------------------------------------------------------------------
STEPS = ["staged", "moved-out", "placed", "exchanged", "index", "ref"]


def merge_helper(r, target, env, fault=None):
    e = dict(env, GIT_AUTOSYNC_FAULT=fault) if fault else env
    return subprocess.run([sys.executable, str(LIBEXEC / "autosync-merge"), "-C", str(r), target],
                          env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)


@pytest.mark.parametrize("fault", [f"{s}:{n}" for s in STEPS for n in (1, 2)])
def test_killed_at_any_step_the_next_commit_completes_the_update(two_commits, env, fault):
    r, old, new = two_commits
    res = merge_helper(r, new, env, fault)
    assert res.returncode in (-signal.SIGKILL, 0), res.stderr
    assert not [p for p in os.listdir(r) if p.startswith(".merge_file")]
    # what runs next (the daemon's catch-up commit, autosync-commit, a sync) completes it first
    res = subprocess.run([sys.executable, str(LIBEXEC / "autosync-commit"), "-C", str(r)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 0, res.stderr
    assert git(r, "rev-parse", "HEAD") == new, "no commit (no false deletion) was made"
    assert status(r) == ""
    assert (r / "edit.txt").read_text() == "new\n" and os.access(r / "run.sh", os.X_OK)
    assert not (r / ".git" / "autosync" / "update").exists()
    assert not (r / ".git" / "autosync" / "kept").exists()


def test_killed_with_a_save_in_the_journal_the_save_comes_back(two_commits, env):
    """The save was swapped out of the work tree when the process died: recovery returns it."""
    r, old, new = two_commits
    fault_env = dict(env, GIT_AUTOSYNC_FAULT="exchanged")
    (r / "edit.txt").write_text("a save the checks did not see\n")
    git(r, "update-index", "--assume-unchanged", "edit.txt")  # hide it from the Busy check
    res = merge_helper(r, new, fault_env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    git(r, "update-index", "--no-assume-unchanged", "edit.txt")
    with checkout_lock(r):
        checkout.recover(Repo(r))
    assert (r / "edit.txt").read_text() == "a save the checks did not see\n"
    copies = [p for p in os.listdir(r) if p.startswith("edit.conflict-")]
    assert [(r / c).read_text() for c in copies] == ["new\n"]
    assert git(r, "rev-parse", "HEAD") == new


def test_without_rename_exchange_a_crash_between_the_two_moves_keeps_the_save(
        two_commits, monkeypatch):
    """Where the file system lacks RENAME_EXCHANGE the swap is two renames; dying between
    them leaves a save in the journal: recovery puts it back at its path."""
    r, old, new = two_commits
    monkeypatch.setattr(safefs, "_exchange_works", [False])

    def save_then_die(name, path):
        if name == "staged":
            (r / "edit.txt").write_text("saved during the merge\n")
        if name == "exchanged" and path == "edit.txt":
            raise Crash()
    monkeypatch.setattr(checkout, "step_hook", save_then_die)
    with pytest.raises(Crash):
        advance(Repo(r), "main", old, new)
    monkeypatch.setattr(checkout, "step_hook", None)
    checkout.recover(Repo(r))
    assert (r / "edit.txt").read_text() == "saved during the merge\n"
    assert [(r / p).read_text() for p in os.listdir(r) if p.startswith("edit.conflict-")] \
        == ["new\n"]
    assert git(r, "rev-parse", "HEAD") == new
    assert not (r / ".git" / "autosync" / "kept").exists()


def test_a_branch_moved_by_hand_after_a_crash_only_rescues_the_journal(two_commits, env):
    r, old, new = two_commits
    res = merge_helper(r, new, dict(env, GIT_AUTOSYNC_FAULT="moved-out"))
    assert res.returncode == -signal.SIGKILL
    git(r, "reset", "-q", "--hard", old)  # the user takes over and commits
    git(r, "commit", "-q", "--allow-empty", "-m", "by hand")
    mine = git(r, "rev-parse", "HEAD")
    checkout.recover(Repo(r))
    assert git(r, "rev-parse", "HEAD") == mine
    assert not (r / ".git" / "autosync" / "update").exists()
    assert status(r) == ""


def checkout_lock(r):
    return Repo(r).lock()


# -- the property: any trees, saves landing at any step, a crash anywhere ----------------------
class Crash(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no cleanup happens."""


NAMES = ["a", "b", "d/a", "d/b", "d/e/f", "x"]
leaf = st.one_of(st.tuples(st.just("file"), st.sampled_from(["1\n", "2\n", "", "\0bin"])),
                 st.tuples(st.just("exec"), st.sampled_from(["#!/bin/sh\n", "2\n"])),
                 st.tuples(st.just("link"), st.sampled_from(["a", "../outside", "d",
                                                            "../outside/x"])))


@st.composite
def trees(draw):
    """{path: (kind, content)} with no path both a file and a directory."""
    chosen = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=5)):
        prefixes = {"/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)}
        if any(p in chosen for p in prefixes) or any(c.startswith(name + "/") for c in chosen):
            continue
        chosen[name] = draw(leaf)
    return chosen


def write_tree(r, tree):
    for name in git(r, "ls-files", "-z").split("\0"):
        if name and name != "README":
            git(r, "rm", "-q", "--cached", name)
            os.unlink(r / name) if os.path.lexists(r / name) else None
    for d in ("d/e", "d"):
        if (r / d).is_dir() and not (r / d).is_symlink() and not os.listdir(r / d):
            os.rmdir(r / d)
    for name, (kind, content) in tree.items():
        (r / name).parent.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            os.symlink(content, r / name)
        else:
            (r / name).write_text(content)
            os.chmod(r / name, 0o755 if kind == "exec" else 0o644)
    git(r, "add", "-A")
    git(r, "commit", "-q", "--allow-empty", "-m", "tree")
    return git(r, "rev-parse", "HEAD")


def snapshot(root):
    """{relative path: ('file', bytes, x) | ('link', target)} below root, not entering .git."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                result[rel] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as f:
                    result[rel] = ("file", f.read(), os.access(full, os.X_OK))
    return result


PROPERTY_RUNS = itertools.count()


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(old_tree=trees(), new_tree=trees(),
       saves=st.lists(st.tuples(st.integers(0, 6), st.sampled_from(NAMES),
                                st.sampled_from(["saved A\n", "saved B\n"])), max_size=3),
       crash_at=st.one_of(st.none(), st.integers(0, 6)))
def test_property_any_update_keeps_every_save_and_matches_git(env, tmp_path, old_tree,
                                                              new_tree, saves, crash_at):
    base = tmp_path / f"run{next(PROPERTY_RUNS)}"
    base.mkdir()
    outside = base / "outside"
    outside.mkdir()
    (outside / "canary").write_text("untouched\n")
    r = base / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(r))
    (r / "README").write_text("x\n")
    old = write_tree(r, old_tree)
    new = write_tree(r, new_tree)
    git(r, "reset", "-q", "--hard", old)
    git(r, "clean", "-qfdx")
    before_outside = snapshot(outside)
    saved = {}
    calls = itertools.count()

    def hook(name, path):
        n = next(calls)
        for at, target, text in saves:
            if at == n:
                full = r / target
                parent = full.parent
                if any(p.is_symlink() or (p.exists() and not p.is_dir())
                       for p in [parent, *parent.parents] if p != r and r in p.parents):
                    continue  # the user cannot save there either
                if full.is_dir() and not full.is_symlink():
                    continue
                parent.mkdir(parents=True, exist_ok=True)
                if full.is_symlink():
                    full.unlink()
                full.write_text(text)
                saved[target] = text
        if crash_at is not None and n == crash_at:
            raise Crash()
    checkout.step_hook = hook
    try:
        try:
            advance(Repo(r), "main", old, new)
        except Crash:
            checkout.step_hook = None
            checkout.recover(Repo(r))
    finally:
        checkout.step_hook = None
    event(f"saves kept: {len(saved)}, crashed: {crash_at is not None and next(calls) > crash_at}")
    assert git(r, "rev-parse", "HEAD") == new
    assert not (r / ".git" / "autosync" / "update").exists()
    assert snapshot(outside) == before_outside, "nothing outside the work tree changes"
    got = snapshot(r)
    kept_dir = r / ".git" / "autosync" / "kept"
    kept = snapshot(kept_dir) if kept_dir.exists() else {}
    # what git checkout gives
    ref = base / "ref"
    git(tmp_path, "clone", "-q", "--no-checkout", str(r), str(ref))
    git(ref, "checkout", "-q", new)
    want = snapshot(ref)
    for path, entry in want.items():
        if path in saved:
            continue
        assert got.get(path) == entry, (path, got.get(path), entry)
    # every last save is in the tree: at its path, beside it, or under kept/
    everywhere = list(got.values()) + list(kept.values())
    for path, text in saved.items():
        assert any(v[0] == "file" and v[1] == text.encode() for v in everywhere), (path, text)
    # nothing else appeared: only saves, copies of new versions beside them, kept files
    for path in got:
        assert path in want or path in saved or ".conflict-" in path, path
    # the index holds the new tree (a save shows as a change in the work tree, not staged)
    assert git(r, "diff-index", "--cached", "--name-only", new) == ""
