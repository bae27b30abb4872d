"""Attack round 15c on the "fast by default" work (issue 15) of 26 Nov 2026: a new file
written and closed alone waits SAVE_SPAN for a rename that may come (036636b), clone-ids
drawn at random and kept (61ce64b), and the installed package compiled by make install.

Each test is one finding and failed while the bug was there. In-process tests drive the
real Watcher against the real kernel and look at it right after a save's last system call
(inotify queues every event of a call before the call returns, so one read sees them all).
"""

import os
import subprocess

import pytest

from autosync.watch import SAVE_SPAN
from conftest import git, mount_tmpfs
from test_watch import repo, watcher  # noqa: F401  (fixtures; inotify here)

SLOW = dict(debounce=30000, max_delay=60000)  # only the lone-save path can be ready in time


def commit(path, *names):
    git(path, "add", *names)
    git(path, "commit", "-qm", "seed")


# -- watch.py: a file saved anew in its place is an edit, not a new file ----------------------
def vim_backup_rename(d, name, text):  # vim's default save where it may; emacs's first save
    os.rename(d / name, d / f"{name}~")
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.close(fd)
    os.unlink(d / f"{name}~")


def unlink_then_write(d, name, text):  # install(1), and git checkout -- name
    os.unlink(d / name)
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, text.encode())
    os.close(fd)


def real_git_checkout(d, name, text):
    (d / name).write_text(text)  # (committed, then the old version checked out again)
    git(d, "commit", "-qam", "tmp")
    git(d, "checkout", "-q", "HEAD~", "--", name)


@pytest.mark.parametrize("save", [vim_backup_rename, unlink_then_write,
                                  real_git_checkout], ids=lambda s: s.__name__)
def test_a_file_saved_anew_in_its_place_is_committed_settle_after_its_save(repo, watcher,
                                                                            save):
    """vim's default save (the file renamed to its backup, written anew), emacs's first
    save, install(1) and `git checkout -- f` (unlinked, created anew) are edits of an
    existing file: ready SETTLE after the save, as before 036636b. They were taken for a
    new file (born by CREATE in this batch) that may be a tool's temp file, and waited
    SAVE_SPAN (0.5 s) instead: every vim save in a synced folder came 60 times later."""
    (repo / "notes.md").write_text("old\n")
    commit(repo, "notes.md")
    w = watcher(**SLOW)
    save(repo, "notes.md", "new\n")
    w.read_events()  # every event of the save (see the module's docstring)
    due = w.ready_at()
    assert due is not None and w.last is not None
    assert due - w.last < SAVE_SPAN / 2, f"a save of an existing file waited {due - w.last:.3f} s"
    batch = w.wait(timeout=5)
    assert batch is not None and batch.paths == {"notes.md"}
    assert (repo / "notes.md").read_text().strip() == "new" or save is real_git_checkout


def test_a_new_file_still_waits_for_its_rename(repo, watcher):
    """(guard) A new file written and closed alone still waits SAVE_SPAN: it may be a
    tool's temp file."""
    w = watcher(**SLOW)
    (repo / "sedAb12Cd").write_text("x\n")
    w.read_events()
    due = w.ready_at()
    assert due is not None and w.last is not None and due - w.last >= SAVE_SPAN


# -- message.py: the clone-id ---------------------------------------------------------------------
@pytest.fixture
def full_state_dir(make_repo):
    """A repository whose .git/autosync is a tiny tmpfs, filled up (root only)."""
    path = make_repo("full")
    state = mount_tmpfs(path / ".git" / "autosync", "8k")
    try:
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(64):  # (bounded: 8 KiB fill it)
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        os.close(fd)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_a_clone_id_not_written_leaves_no_temp_file(full_state_dir):
    """The first start writes the clone-id through a temp file; on a full disk (or a file
    system without hard links) that failed, and the temp file was left behind: one more
    in .git/autosync at every start, sync and push of a clone that cannot write it. The
    clone is named by its path's digest then, the same every time."""
    import hashlib

    from autosync.git import Repo
    from autosync.message import repo_digest
    repo = Repo(str(full_state_dir))
    named = hashlib.sha1(repo.common_dir.encode()).hexdigest()[:8]
    assert [repo_digest(repo) for _ in range(3)] == [named] * 3
    left = sorted(p.name for p in (full_state_dir / ".git" / "autosync").iterdir())
    assert left == ["filler"], left


def test_a_merge_does_not_take_a_temp_file_waiting_for_its_rename(repo, watcher):
    """A commit of another clone is merged after the pending batch is flushed, unless the
    watcher is busy (a file half written, or gone half way through a save). A tool's new
    temp file written and closed, its rename into place still to come (036636b waits
    SAVE_SPAN for it), was not busy: a merge arriving in that half second committed the
    temp file and made it on every clone, as the lone save would have without 036636b."""
    (repo / "notes.md").write_text("v1\n")
    commit(repo, "notes.md")
    w = watcher(**SLOW)
    temp = repo / ".notes.md.Xq3b9Z"
    temp.write_text("v2\n")
    assert w.busy(), "a merge now would commit the temp file"
    os.rename(temp, repo / "notes.md")
    assert not w.busy()
    batch = w.flush()
    assert batch is not None and "notes.md" in batch.paths
    assert all(p == "notes.md" or not (repo / p).exists() for p in batch.paths), batch.paths


def test_an_edit_that_is_no_new_file_does_not_hold_a_merge(repo, watcher):
    """busy() holds a merge for a lone new file only: a chmod of a tracked file (no save
    finished, so due after the debounce) is no temp file, and a merge must not wait up to
    max_delay for it."""
    (repo / "run.sh").write_text("echo\n")
    commit(repo, "run.sh")
    w = watcher(**SLOW)
    os.chmod(repo / "run.sh", 0o755)
    w.read_events()
    assert w.changed == {"run.sh"}
    assert not w.busy(), "a merge waits for a chmod"


def test_a_stop_does_not_commit_a_temp_file_waiting_for_its_rename(tmp_path, tenv, toolkit):
    """`git autosync stop` commits what is pending at once. A tool's new temp file written
    and closed, its rename into place still to come (rsync, sed -i), was committed as it
    was: made on every clone, deleted by the next start. The stop gives a save half way
    SAVE_SPAN to finish."""
    from cluster import Cluster
    from conftest import wait_for
    cl = Cluster(tmp_path, tenv, toolkit, debounce=30000, maxDelay=60000)
    try:
        a = cl.clone("a")
        temp = a.path / ".notes.md.Xq3b9Z"
        temp.write_text("saved\n")
        stop = subprocess.Popen(["git", "autosync", "stop"], cwd=a.path, env=a.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: "stopping: committing pending changes" in a.log(),
                 what="the daemon to begin its stop")
        os.rename(temp, a.path / "notes.md")  # (the tool, a moment later)
        assert stop.wait(timeout=60) == 0
        log = git(a.path, "log", "--all", "--name-only", "--format=", env=a.env)
        assert ".notes.md.Xq3b9Z" not in log, log
        assert a.files().get("notes.md") == "saved"  # (git() strips its output)
    finally:
        cl.stop()
