"""Attack round on issue 15 (a lone save committed SETTLE after it is finished, bursts still
coalesced): save sequences interrupted at an unlucky moment, writers that rename or reopen,
and the issue's burst targets against a real daemon at the default debounce and maxDelay.

Each test is one finding (or one target) and fails while the bug is there. In-process tests
drive the real Watcher against the real kernel and look at it exactly where a loaded machine
would (between two system calls of a save); daemon tests start it with `git autosync start`.
"""

import os
import subprocess
import threading
import time

import pytest
from cluster import Cluster
from conftest import git, wait_for
from test_watch import collect, repo, watcher  # noqa: F401  (fixtures)

SLOW = dict(debounce=30000, max_delay=60000)  # only the lone-save path can be ready in time


def commit(path, *names):
    git(path, "add", *names)
    git(path, "commit", "-qm", "seed")


# -- in-process: a save looked at half-way ------------------------------------------------------
def test_a_file_renamed_while_its_writer_still_writes_is_not_committed_half_written(
        repo, watcher):
    """A writer has part.txt open and half written when another program renames it
    (logrotate, a file manager, `mv`): the writer goes on writing whole.txt through its
    descriptor. The rename is no finished save of whole.txt: its half must not be taken."""
    w = watcher(**SLOW)
    with open(repo / "part.txt", "w") as f:
        f.write("first half\n")
        f.flush()
        os.rename(repo / "part.txt", repo / "whole.txt")
        early = w.wait(timeout=0.4)  # the writer is slow: the watcher looks meanwhile
        assert early is None or "whole.txt" not in early.paths, \
            f"whole.txt taken while still open for writing: {early.paths}"
        f.write("second half\n")
    batch = w.wait(timeout=5)
    assert batch is not None and "whole.txt" in batch.paths


def test_a_backup_rename_is_not_a_finished_delete(repo, watcher):
    """vim (backupcopy=no) and emacs first rename the file to its backup name, then write
    the new one. On a loaded machine the editor can be descheduled between the two: the
    file is missing for a moment, but it was not deleted - no deletion must be committed."""
    (repo / "notes.md").write_text("v1\n")
    commit(repo, "notes.md")
    w = watcher(**SLOW)
    os.rename(repo / "notes.md", repo / "notes.md~")
    early = w.wait(timeout=0.3)  # the editor is descheduled (pacing, not waiting)
    assert early is None, f"a half-done save was taken: {early.paths}"
    (repo / "notes.md").write_text("v2\n")
    os.unlink(repo / "notes.md~")
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"notes.md"}
    assert (repo / "notes.md").read_text() == "v2\n"


def test_a_save_looked_at_between_create_and_write_is_still_a_lone_save(repo, watcher):
    """`git checkout -- f`, vim's and emacs's backup saves: the old file goes (finishing),
    the new one is created, then written. If the watcher happens to look between create
    and first write (a busy machine), the save must still be committed in SETTLE, not
    after the debounce (30 s here)."""
    (repo / "f.txt").write_text("old\n")
    commit(repo, "f.txt")
    w = watcher(**SLOW)
    os.unlink(repo / "f.txt")
    fd = os.open(repo / "f.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        wait_for(lambda: (w.read_events(), w.ready_at())[1] is not None,
                 what="the watcher to see the delete and the create")
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"f.txt"}, \
        "a lone save waited for the 30 s debounce"
