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
