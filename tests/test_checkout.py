"""checkout.advance: the work tree moves to a descendant commit, and no save is ever lost."""

import os

import pytest

from autosync import checkout
from autosync.checkout import Busy, advance
from autosync.git import Repo
from conftest import git


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


def test_a_file_changed_since_its_commit_refuses_and_stays(two_commits):
    r, old, new = two_commits
    (r / "edit.txt").write_text("saved after the commit\n")
    with pytest.raises(Busy):
        advance(Repo(r), "main", old, new)
    assert git(r, "rev-parse", "HEAD") == old
    assert (r / "edit.txt").read_text() == "saved after the commit\n"
    assert (r / "gone" / "deep" / "x.txt").exists()  # everything moved aside came back
    assert status(r) == " M edit.txt"


def test_an_untracked_file_where_one_is_added_refuses(two_commits):
    r, old, new = two_commits
    (r / "new" / "dir").mkdir(parents=True)
    (r / "new" / "dir" / "added.txt").write_text("mine\n")
    with pytest.raises(Busy):
        advance(Repo(r), "main", old, new)
    assert (r / "new" / "dir" / "added.txt").read_text() == "mine\n"
    assert git(r, "rev-parse", "HEAD") == old


def test_a_save_during_the_update_is_kept(two_commits, monkeypatch):
    """The race git's own checkout loses: a save lands after the checks, before the write."""
    r, old, new = two_commits
    real = checkout.place_new

    def save_then_place(repo, todo, aside_dir):
        (r / "edit.txt").write_text("saved in the middle\n")  # the editor wins the race
        real(repo, todo, aside_dir)
    monkeypatch.setattr(checkout, "place_new", save_then_place)
    advance(Repo(r), "main", old, new)
    assert (r / "edit.txt").read_text() == "saved in the middle\n"
    assert git(r, "rev-parse", "HEAD") == new
    assert status(r) == "M  edit.txt"  # staged: the next commit records it on the merge


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
