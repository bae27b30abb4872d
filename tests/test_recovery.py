"""A merge cut short - by SIGKILL in the middle of thousands of files, or by a full disk -
is completed later without a missing file, a lost save or a committed deletion."""

import os
import shutil
import subprocess

import pytest

from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import wait_converged
from conftest import git, wait_for
from autosync import checkout
from autosync.checkout import advance
from autosync.commit import commit_changes
from autosync.config import Config
from autosync.git import Repo
from autosync.util import Error, Retry

FILES = 3000


def stray(path):
    """Temp files an update might leave in the work tree."""
    return [os.path.join(d, f) for d, dirs, files in os.walk(path)
            for f in files if f.startswith(".merge_file") and ".git" not in d]


def test_daemon_killed_in_the_middle_of_a_big_merge_completes_it_at_restart(cluster):
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    b.env = dict(b.env, GIT_AUTOSYNC_FAULT=f"placed:{FILES // 2}")  # SIGKILL half way
    b.start()
    for i in range(FILES):
        p = a.path / f"d{i % 30}" / f"f{i}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"file {i}\n")
    wait_for(lambda: (b.path / ".git" / "autosync" / "update").is_dir() and not b.running(),
             timeout=120, what="b to die in the middle of the merge")
    assert (b.path / ".git" / "autosync" / "update").is_dir()
    b.env = cluster.env
    b.start()
    wait_converged([a, b], cluster.server, timeout=120)
    assert stray(b.path) == []
    assert len(list((b.path / "d7").iterdir())) == FILES // 30
    assert not (b.path / ".git" / "autosync" / "update").exists()
    deleted = git(b.path, "log", "--diff-filter=D", "--name-only", "--format=", env=b.env)
    assert deleted == "", "an interrupted merge must never be committed as deletions"
    assert "completing a merge that was interrupted" in b.log()


# -- a full disk --------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                         stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def fill(mnt, leave=1024 * 1024):
    """Fill the file system but about `leave` bytes; returns the filler to delete later."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    with open(filler, "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
            while not leave:  # to the last page
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.fixture
def repo_on_small_disk(small_disk, env):
    r = small_disk / "repo"
    git(small_disk, "init", "-q", "-b", "main", str(r))
    (r / "a.txt").write_text("old a\n")
    (r / "b.txt").write_text("old b\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "old")
    old = git(r, "rev-parse", "HEAD")
    (r / "a.txt").write_text("new a\n")
    os.unlink(r / "b.txt")
    (r / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible
    git(r, "add", "-A")
    git(r, "commit", "-qm", "new")
    new = git(r, "rev-parse", "HEAD")
    git(r, "reset", "-q", "--hard", old)
    return small_disk, r, old, new


def test_a_full_disk_before_the_update_changes_nothing(repo_on_small_disk):
    mnt, r, old, new = repo_on_small_disk
    filler = fill(mnt)
    with pytest.raises(Retry):
        advance(Repo(r), "main", old, new)
    assert git(r, "rev-parse", "HEAD") == old
    assert (r / "a.txt").read_text() == "old a\n" and (r / "b.txt").read_text() == "old b\n"
    assert not (r / "big.bin").exists() and stray(r) == []
    assert not (r / ".git" / "autosync" / "update").exists()
    assert not (r / ".git" / "autosync" / "update.new").exists()
    filler.unlink()
    advance(Repo(r), "main", old, new)
    assert git(r, "rev-parse", "HEAD") == new
    assert git(r, "status", "--porcelain") == ""


def test_a_disk_that_fills_during_the_update_never_commits_a_deletion(repo_on_small_disk,
                                                                      monkeypatch):
    mnt, r, old, new = repo_on_small_disk
    fillers = []

    def fill_after_staging(name, path):
        if name == "placed" and not fillers:  # the last file is in: nothing frees space now
            fillers.append(fill(mnt, leave=0))
    monkeypatch.setattr(checkout, "step_hook", fill_after_staging)
    repo = Repo(r)
    with pytest.raises(Retry):  # the index cannot be written: the journal completes it later
        advance(repo, "main", old, new)
    assert (r / ".git" / "autosync" / "update").is_dir()
    monkeypatch.setattr(checkout, "step_hook", None)
    config = Config(repo)
    with repo.lock():
        commit_changes(repo, config)  # the daemon's next commit, still on a full disk: the
        # merge cannot complete, everything it is about waits, nothing else changed
    assert git(r, "rev-parse", "HEAD") in (old, new), "no commit of a half-done merge"
    fillers[0].unlink()
    with repo.lock():
        commit_changes(repo, config)
    assert git(r, "rev-parse", "HEAD") == new, "completed, and nothing else committed"
    assert (r / "a.txt").read_text() == "new a\n" and not (r / "b.txt").exists()
    assert git(r, "status", "--porcelain") == "" and stray(r) == []
    assert not (r / ".git" / "autosync" / "update").exists()


def test_a_mount_point_inside_the_work_tree_is_a_clear_error_that_changes_nothing(make_repo):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = make_repo()
    (r / "sub").mkdir()
    (r / "sub" / "x.txt").write_text("old x\n")
    (r / "a.txt").write_text("old a\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "old")
    old = git(r, "rev-parse", "HEAD")
    (r / "sub" / "x.txt").write_text("new x\n")
    (r / "a.txt").write_text("new a\n")
    git(r, "commit", "-qam", "new")
    new = git(r, "rev-parse", "HEAD")
    git(r, "reset", "-q", "--hard", old)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(r / "sub")],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (r / "sub" / "x.txt").write_text("old x\n")
        with pytest.raises(Error, match="on another file system"):
            advance(Repo(r), "main", old, new)
        assert git(r, "rev-parse", "HEAD") == old
        assert (r / "a.txt").read_text() == "old a\n"
        assert (r / "sub" / "x.txt").read_text() == "old x\n"
        assert not (r / ".git" / "autosync" / "update").exists()
    finally:
        subprocess.run(["umount", "-l", str(r / "sub")])
