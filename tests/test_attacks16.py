"""Attacks on the commits of 26 Nov 2026 (git.Objects, plan.json v2, no push after a
fast-forward to B, for-each-ref --no-merged and "plain" commits, one maintenance check in
32 commits, SETTLE 8 ms, lazily imported transports). One test per problem found."""

import os
import time

import pytest

from cluster import Cluster
from conftest import git, wait_for


# -- watch.py: a lone save is committed SETTLE (8 ms) after its last finishing event ---------
# An editor's save made of two steps with a pause between them (a loaded machine preempts
# the editor for a few ms: two CPU hogs on two cores do it) must never be committed half
# way. These saves script the system calls the programs make; the pause stands for the
# preemption.
PAUSE = 0.015  # seconds the editor is off the CPU between two steps of its save


def install_save(d, name, text, outside):  # GNU install / cp --remove-destination
    os.unlink(d / name)  # (install unlinks the destination before it opens it)
    time.sleep(PAUSE)
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, text.encode())
    os.close(fd)


def vim_backupdir_save(d, name, text, outside):  # vim with `set backupdir=~/.vim/backup//`
    os.rename(d / name, outside / f"{name}~")  # the backup by rename, out of the work tree
    time.sleep(PAUSE)
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.unlink(outside / f"{name}~")


@pytest.fixture
def slow_clone(tmp_path, tenv, toolkit):
    """A clone whose daemon has a 30 s debounce: only a lone save is committed at once."""
    cl = Cluster(tmp_path, tenv, toolkit, debounce=30000, maxDelay=60000)
    yield cl.clone("a", start=False)
    cl.stop()


@pytest.mark.parametrize("save", [install_save, vim_backupdir_save],
                         ids=["install", "vim-backupdir"])
def test_a_save_that_removes_the_file_first_never_commits_its_deletion(slow_clone, tmp_path,
                                                                       save):
    """The file is gone for a moment in the middle of the save: the watcher took that for
    a finished lone save (a deletion), committed and pushed it, so every other clone
    deleted the file until the next commit brought it back."""
    a = slow_clone
    outside = tmp_path / "backup"
    outside.mkdir()
    (a.path / "notes.md").write_text("first version\n")
    git(a.path, "add", "notes.md", env=a.env)
    git(a.path, "commit", "-qm", "first version", env=a.env)
    a.start()
    save(a.path, "notes.md", "the final content\n", outside)
    wait_for(lambda: git(a.path, "status", "--porcelain", env=a.env) == ""
             and git(a.path, "show", "HEAD:notes.md", env=a.env, check=False)
             == "the final content", timeout=10, what="the save committed")
    deleted = git(a.path, "log", "--diff-filter=D", "--name-only", "--format=%h %s",
                  env=a.env)
    assert deleted == "", "a save in progress was committed as a deletion"
