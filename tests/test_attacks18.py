"""Attacks on the polling watcher (pollwatch.py, issue 14): what an unlucky user's tree does
to it. One test per problem found."""

import os
import subprocess
import sys
import time

import pytest

from conftest import LIBEXEC, git
from test_poll import poller  # noqa: F401  (fixture)
from test_watch import collect, repo, watcher, watcher_kind  # noqa: F401  (fixtures)


def can_mount():
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "--version"], capture_output=True).returncode == 0


@pytest.fixture
def mount():
    """mount ARGS... DST (another file system, as sshfs or NFS would be), unmounted at the
    end whatever happens."""
    mounted = []

    def do(*args):
        res = subprocess.run(["mount", *map(str, args)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount here: {res.stderr.decode().strip()}")
        mounted.append(args[-1])
    yield do
    for dst in reversed(mounted):
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)


# -- a mount inside the work tree comes or goes: its files are not deleted ------------------
# ~/notes/shared is an sshfs (or NFS, or a USB disk) mount; the connection drops, or the user
# unmounts it: the directory shows what is under the mount point (nothing, as a rule). With
# inotify this makes no event (IN_UNMOUNT is no deletion); the polling watcher listed the
# directory again, found it empty and reported every file of the mount as deleted - the
# daemon commits the deletions and pushes them, and every other clone deletes the files.
# The same when a file system is mounted over a directory of the tree: its files are hidden,
# not deleted.
@pytest.mark.skipif(not can_mount(), reason="needs root to mount")
@pytest.mark.parametrize("watcher_kind", ["poll"])
def test_a_mount_going_away_deletes_nothing(repo, watcher, mount, tmp_path):
    remote = tmp_path / "remote"  # what the share holds (a tmpfs: another file system)
    remote.mkdir()
    mount("-t", "tmpfs", "tmpfs", remote)
    (remote / "sub").mkdir()
    for i in range(5):
        (remote / f"f{i}.txt").write_text(f"file {i}\n")
    (remote / "sub" / "deep.txt").write_text("deep\n")
    shared = repo / "shared"
    shared.mkdir()
    mount("--bind", remote, shared)
    w = watcher()
    subprocess.run(["umount", str(repo / "shared")], check=True)
    # something in the tree is written after the unmount, under the mount point too (that
    # directory is listed again to find it)
    (repo / "shared" / "local.txt").write_text("written after the unmount\n")
    paths, _ = collect(w, lambda p: "shared/local.txt" in p)
    # (anything reported within the next look or two is caught: the tree stays as it is)
    paths |= reported_within(w, 1.5)
    lost = sorted(p for p in paths if p.startswith("shared") and p != "shared/local.txt")
    assert lost == [], f"reported as changed (deleted) by the unmount: {lost}"
    # mounted again: the files are there, nothing to commit for them; a new one is seen
    mount("--bind", remote, shared)
    (shared / "new.txt").write_text("made on the remote\n")
    collect(w, lambda p: "shared/new.txt" in p)



# inotify, for its part, reported nothing - and saw nothing more in that directory: its
# watch was on the mount's root, which the kernel drops at the unmount (IN_UNMOUNT, then
# IN_IGNORED); the mount point under it was watched by no one, and the saves made there were
# committed at the daemon's next start at best.
@pytest.mark.skipif(not can_mount(), reason="needs root to mount")
@pytest.mark.parametrize("watcher_kind", ["inotify", "poll"])
def test_a_directory_unmounted_is_watched_still(repo, watcher, mount):
    shared = repo / "shared"
    (shared / "sub").mkdir(parents=True)
    mount("-t", "tmpfs", "tmpfs", shared)
    (shared / "f.txt").write_text("on the share\n")
    (shared / "sub").mkdir()
    (shared / "sub" / "deep.txt").write_text("deep\n")
    w = watcher()
    subprocess.run(["umount", str(shared)], check=True)
    (shared / "local.txt").write_text("written after the unmount\n")
    (shared / "sub" / "local2.txt").write_text("and below\n")
    paths, _ = collect(w, lambda p: {"shared/local.txt", "shared/sub/local2.txt"} <= p)
    assert "shared/f.txt" not in paths and "shared/sub/deep.txt" not in paths


# -- a directory whose mtime is in the future is listed again at every look ---------------
# A directory listed within RACY_NS (2 s) of its mtime is listed again at its next look (a
# second change in the same timestamp tick leaves the mtime as it was). One whose mtime is
# in the future - a tarball from a machine whose clock is ahead, `touch -d tomorrow`, an
# NFS server ahead of this client - was "within 2 s" for ever: listed whole at every pass,
# at the round robin's expense. 50,000 entries there made every save elsewhere in the tree
# wait 10 to 19 s for the round robin instead of 1 s, for good. Such a directory changed
# again gets the current time, which is no tick of the future mtime: a look at its stat
# sees the change.
@pytest.mark.parametrize("ahead", [3600, 10 * 365 * 86400])
def test_a_directory_dated_in_the_future_is_not_listed_at_every_look(repo, poller, ahead):
    big = repo / "big"
    big.mkdir()
    for i in range(2000):
        (big / f"f{i}").touch()
    future = time.time() + ahead
    os.utime(big, (future, future))
    w = poller()
    for _ in range(3):  # (looks at its stat alone: one stat call each)
        assert w._look_dir("big", force=False) == 1
    (big / "f1").unlink()  # changed: seen, and listed again
    assert w._look_dir("big", force=False) > 1
    collect(w, lambda p: "big/f1" in p)


# -- a FUSE file system's hidden files (an open file deleted or saved over) ----------------
# libfuse (sshfs, and most FUSE file systems, unless mounted with hard_remove) keeps a file
# that is unlinked or replaced while a program has it open under the name
# .fuse_hidden%08x%08x until that program closes it, as the NFS client does under .nfsXXXX
# (an editor saving by rename while a viewer, `tail -f` or a player holds the file). Polling
# is there for such file systems: it committed the old version under that name, pushed it to
# every clone (where nothing removes it while the program here keeps the file open), and
# deleted it again at the close.
@pytest.mark.parametrize("watcher_kind", ["poll", "inotify"])
def test_a_fuse_hidden_file_is_never_committed(repo, watcher):
    (repo / "doc.txt").write_text("old\n")
    w = watcher()
    # sshfs's rename of the old file away, the editor's new version renamed into place
    os.rename(repo / "doc.txt", repo / ".fuse_hidden0000000a00000001")
    (repo / ".doc.txt.new").write_text("new\n")
    os.rename(repo / ".doc.txt.new", repo / "doc.txt")
    paths, _ = collect(w, lambda p: "doc.txt" in p)
    paths |= reported_within(w, 1.0)
    assert not [p for p in paths if ".fuse_hidden" in p]
    res = subprocess.run([sys.executable, os.path.join(LIBEXEC, "autosync-commit"), "-C",
                          str(repo)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert ".fuse_hidden0000000a00000001" not in git(repo, "ls-files").split()
    assert "doc.txt" in git(repo, "ls-files").split()


def reported_within(w, seconds):
    """The paths of every batch the watcher reports in the next seconds."""
    paths = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        batch = w.wait(timeout=end - time.monotonic())
        if batch is not None:
            paths |= batch.paths
    return paths
