"""Attacks on the merge/update path that broke it: each test reproduces one bug with real git
repositories and real processes, and states the behaviour the README and DESIGN.md promise.

Hostile trees are written with `git hash-object -t tree --literally` or `git mktree` (as in
test_hostile.py); merges go through the libexec helpers the daemon's code uses
(`autosync-merge`, `autosync-commit`) or through a real daemon (tests/cluster.py).
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from autosync import checkout
from autosync.checkout import advance
from autosync.config import Config
from autosync.git import Repo
from autosync.merge import integrate
from cluster import Cluster
from conftest import LIBEXEC, git, wait_for


# -- helpers ----------------------------------------------------------------------------------
def helper(name, repo, *args, env, fault=None, preexec_fn=None, prefix=()):
    e = dict(env, GIT_AUTOSYNC_FAULT=fault) if fault else dict(env)
    e.pop("GIT_AUTOSYNC_DEBUG", None)  # the one-line error, as users see it
    return subprocess.run([*prefix, sys.executable, str(LIBEXEC / name), "-C", str(repo),
                           *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, preexec_fn=preexec_fn)


def merge_helper(repo, target, env, **kw):
    return helper("autosync-merge", repo, target, env=env, **kw)


def commit_helper(repo, env, **kw):
    return helper("autosync-commit", repo, env=env, **kw)


def commit_all(r, message):
    git(r, "add", "-A")
    git(r, "commit", "-q", "--allow-empty", "-m", message)
    return git(r, "rev-parse", "HEAD")


def two_clones(tmp_path):
    """Plain clones a and b of a bare server, in sync at one commit."""
    server = tmp_path / "srv.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(server))
    a, b = tmp_path / "a", tmp_path / "b"
    git(tmp_path, "clone", "-q", str(server), str(a))
    (a / "README").write_text("r\n")
    commit_all(a, "init")
    git(a, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(server), str(b))
    return a, b


def journal(r):
    return Repo(r).state_dir + "/update"


def assert_still_commits(r, env, name="save-after.txt"):
    """The user's own save is committed: nothing wedges autosync-commit."""
    (r / name).write_text("a save made after the merge\n")
    res = commit_helper(r, env)
    assert res.returncode == 0, (
        f"autosync-commit exited {res.returncode}: the user's saves are no longer committed\n"
        f"{res.stderr}")
    assert name in git(r, "ls-tree", "--name-only", "HEAD").split("\n")


# -- 1. a persistent error on one path wedges every later commit -------------------------------
def other_filesystem(tmp_path):
    """A directory on another file system than tmp_path (/dev/shm, or a tmpfs we mount)."""
    here = os.stat(tmp_path).st_dev
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = tempfile.mkdtemp(prefix="autosync-exdev-", dir="/dev/shm")
        if os.stat(d).st_dev != here:
            return d, lambda: shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d)
    if os.geteuid() == 0 and shutil.which("mount"):
        d = tmp_path / "otherfs"
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(d)]
                          ).returncode == 0:
            return str(d), lambda: subprocess.run(["umount", "-l", str(d)])
    pytest.skip("no second file system available")


def test_git_dir_on_another_file_system_is_a_clear_error_and_commits_go_on(tmp_path, env):
    """`git init --separate-git-dir` on another file system (or a mount point inside the work
    tree): the journal under $GIT_DIR/autosync cannot be renamed into the work tree. It used
    to leave the merge half done, and every later autosync-commit failed for ever.
    Now: the merge is refused before anything changes, with one line saying why, and the
    user's saves go on being committed (a documented limitation: one file system)."""
    gitdir, cleanup = other_filesystem(tmp_path)
    try:
        r = tmp_path / "wt"
        git(tmp_path, "init", "-q", "-b", "main", f"--separate-git-dir={gitdir}/repo.git",
            str(r))
        (r / "a.txt").write_text("a\n")
        (r / "b.txt").write_text("b\n")
        old = commit_all(r, "old")
        (r / "a.txt").write_text("a, edited\n")
        (r / "b.txt").unlink()
        (r / "c.txt").write_text("c\n")
        new = commit_all(r, "new")
        git(r, "reset", "-q", "--hard", old)
        res = merge_helper(r, new, env)
        assert res.returncode == 1 and "on another file system" in res.stderr, res.stderr
        assert len(res.stderr.splitlines()) == 2 and "Traceback" not in res.stderr
        assert (r / "a.txt").read_text() == "a\n" and (r / "b.txt").exists()
        assert not (r / "c.txt").exists() and not os.path.isdir(journal(r))
        assert_still_commits(r, env)
    finally:
        cleanup()


def test_a_read_only_directory_does_not_stop_every_later_commit(tmp_path, env, make_repo):
    """A directory the user made read-only (chmod 555) where another clone adds a file: the
    merge fails with EACCES, leaves its journal, and from then on every autosync-commit
    fails ('cannot complete the interrupted merge ... Permission denied'): the user's saves
    anywhere in the folder are never committed again.
    Expected (README: a local file never blocks syncing; your own saves go on being
    committed): the file that cannot be written is kept aside (or the merge is refused
    before anything is written), and commits go on."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to drop CAP_DAC_OVERRIDE as root")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")
    else:
        prefix = ()
    r = make_repo("ro")
    (r / "archive").mkdir()
    (r / "archive" / "2019.txt").write_text("old notes\n")
    old = commit_all(r, "old")
    (r / "archive" / "2020.txt").write_text("added on another clone\n")
    new = commit_all(r, "new")
    git(r, "reset", "-q", "--hard", old)
    os.chmod(r / "archive", 0o555)
    try:
        merge_helper(r, new, env, prefix=prefix)
        (r / "mine.txt").write_text("saved after the merge\n")
        res = commit_helper(r, env, prefix=prefix)
        assert res.returncode == 0, (
            f"autosync-commit exited {res.returncode}: {res.stderr.strip()}")
        assert "mine.txt" in git(r, "ls-tree", "--name-only", "HEAD").split("\n")
        assert (r / "archive" / "2019.txt").read_text() == "old notes\n"
    finally:
        os.chmod(r / "archive", 0o755)


def test_a_merge_adding_3000_directories_completes_under_the_usual_fd_limit(tmp_path, env,
                                                                          make_repo):
    """Each safefs.Root caches up to 1024 directory descriptors, and an update holds two
    (work tree and journal): with the soft RLIMIT_NOFILE most desktops and systemd user
    services give (1024), a merge that adds files in 3000 directories fails with EMFILE, and
    every recovery fails the same way at the same place: autosync-commit never succeeds
    again. Expected: descriptors stay well below the limit; the merge completes."""
    r = make_repo("many")
    old = git(r, "rev-parse", "HEAD")
    for i in range(3000):
        d = r / f"d{i}"
        d.mkdir()
        (d / "f.txt").write_text(f"{i}\n")
    new = commit_all(r, "3000 directories")
    git(r, "reset", "-q", "--hard", old)
    git(r, "clean", "-qfdx")

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))
    merge_helper(r, new, env, preexec_fn=limit)
    for _ in range(3):  # the daemon's next commits complete an interrupted merge
        if commit_helper(r, env, preexec_fn=limit).returncode == 0:
            break
    assert not os.path.isdir(journal(r)), "the merge is still interrupted"
    assert git(r, "rev-parse", "HEAD") == new
    assert len([p for p in os.listdir(r) if p.startswith("d")]) == 3000


# -- 2. a local edit destroyed without a comparison ------------------------------------------
@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_a_local_edit_git_is_told_to_ignore_is_never_destroyed(make_repo, env, flag):
    """A tracked file with local changes marked `git update-index --assume-unchanged` (the
    common "keep my local settings" recipe) or --skip-worktree. `git merge` refuses ("Your
    local changes ... would be overwritten"); autosync takes `git status` being silent as
    proof the file is the committed version (the stat fast path), swaps it out and deletes
    the user's content: it is nowhere, not at its path, not beside it, not in kept/.
    Expected (README: what comes out is compared with its committed version and deleted
    only when equal): the local content survives (at its path, beside it, or under kept/)."""
    r = make_repo("au")
    (r / "settings.ini").write_text("shared = 1\n")
    old = commit_all(r, "old")
    (r / "settings.ini").write_text("shared = 2\n")
    new = commit_all(r, "new")
    git(r, "reset", "-q", "--hard", old)
    (r / "settings.ini").write_text("shared = 1\nmy local password = hunter2\n")
    git(r, "update-index", flag, "settings.ini")
    res = merge_helper(r, new, env)
    found = []
    for dirpath, _, files in os.walk(r):
        for f in files:
            p = os.path.join(dirpath, f)
            if "/objects/" not in p and os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    if b"hunter2" in fh.read():
                        found.append(os.path.relpath(p, r))
    assert found, (f"the local edit of settings.ini is gone (merge exit {res.returncode}; "
                   f"settings.ini now: {(r / 'settings.ini').read_text()!r})")


def coarse_fs(tmp_path):
    """An ext4 file system with 1-second timestamps (128-byte inodes), like ext3, HFS+,
    FAT and many network file systems."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("mount"):
        pytest.skip("needs root, mkfs.ext4 and mount")
    img, mnt = tmp_path / "coarse.img", tmp_path / "coarse"
    with open(img, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    res = subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(img)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    mnt.mkdir()
    if res.returncode != 0 or subprocess.run(["mount", "-o", "loop", str(img), str(mnt)],
                                             stderr=subprocess.PIPE).returncode != 0:
        pytest.skip("cannot mount a loop file system here")
    return mnt


def test_a_same_size_save_during_the_merge_on_a_coarse_timestamp_fs_is_kept(tmp_path, env,
                                                                             monkeypatch):
    """in_the_way() records (inode, mtime, size, mode) of each unchanged file; the update then
    deletes whatever comes out of the work tree with the same stat data without reading it.
    On a file system with 1-second timestamps an in-place save of the same size within the
    same second as the previous write keeps all of them: the save is deleted unread (git's
    racy-git check would re-read such a file).
    Expected: the save stays at its path and the new version is beside it."""
    mnt = coarse_fs(tmp_path)
    try:
        r = mnt / "repo"
        git(mnt, "init", "-q", "-b", "main", str(r))
        (r / "edit.txt").write_text("old version\n")
        old = commit_all(r, "old")
        (r / "edit.txt").write_text("new version\n")
        new = commit_all(r, "new")

        def save(name, path):
            if name == "staged":
                with open(r / "edit.txt", "r+") as f:  # an in-place save, same size
                    f.write("MY SAVE!!!!\n")
        # start at the beginning of a second so that the reset's write, the checks and the
        # save fall in the same second (a bounded wait, not a sleep)
        wait_for(lambda: time.time() % 1 < 0.2, timeout=2, interval=0.01, what="a new second")
        git(r, "reset", "-q", "--hard", old)
        monkeypatch.setattr(checkout, "step_hook", save)
        advance(Repo(r), "main", old, new)
        monkeypatch.setattr(checkout, "step_hook", None)
        texts = [(r / p).read_text() for p in os.listdir(r) if p.startswith("edit")]
        assert "MY SAVE!!!!\n" in texts, f"the save is lost: {texts}"
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# -- 3. hostile trees git accepts crash or wedge the clone -------------------------------------
def deep_commit(r, depth):
    """A commit adding a/a/a/.../f, `depth` directories deep, written with git mktree (git
    fsck accepts it; `git checkout` checks it out)."""
    def out(*args, data):
        return subprocess.run(["git", *args], cwd=r, input=data, stdout=subprocess.PIPE,
                              check=True).stdout.decode().strip()
    blob = out("hash-object", "-w", "--stdin", data=b"deep\n")
    oid = out("mktree", data=f"100644 blob {blob}\tf\n".encode())
    for _ in range(depth):
        oid = out("mktree", data=f"040000 tree {oid}\ta\n".encode())
    entries = git(r, "ls-tree", "HEAD") + f"\n040000 tree {oid}\ta\n"
    root = out("mktree", data=entries.encode())
    return git(r, "commit-tree", root, "-p", "HEAD", "-m", "deep")


def test_a_deep_tree_is_refused_or_checked_out_never_a_crash_that_wedges(make_repo, env):
    """A pushed commit 1500 directories deep (fine for git fsck and git checkout): safefs
    walks directories recursively, so the update dies with RecursionError half way, and
    every later autosync-commit dies the same way in recover(): the clone never commits
    again (the daemon exits with 'internal error' at every start).
    Expected: the commit is merged (as git checkout does) or refused with a one-line
    reason; either way the user's saves go on being committed."""
    r = make_repo("deep")
    try:
        target = deep_commit(r, 1500)
        res = merge_helper(r, target, env)
        assert_still_commits(r, env)
        assert "internal error" not in res.stderr, res.stderr
    finally:  # pytest's own clean-up of old runs recurses too deep in what it leaves
        subprocess.run(["rm", "-rf", str(r)])


def test_a_name_longer_than_the_file_system_allows_does_not_kill_the_daemon(tmp_path, tenv,
                                                                           toolkit):
    """A pushed file named with 300 bytes (git and git fsck accept it; the file system does
    not): in_the_way() lets ENAMETOOLONG escape as a plain OSError, which is not an Error:
    the daemon's main loop dies ('internal error', exit 1, which its systemd unit does not
    restart), and it dies again at every start, at its catch-up fetch.
    Expected: the commit is refused (or the path is kept out) and the daemon keeps running
    and committing."""
    c = Cluster(tmp_path, tenv, toolkit)
    try:
        a = c.clone("a", start=False)
        attacker = tmp_path / "attacker"
        git(tmp_path, "clone", "-q", str(c.server), str(attacker), env=tenv)
        blob = git(attacker, "hash-object", "-w", "--stdin", input=b"x\n", env=tenv)
        git(attacker, "update-index", "--add", "--cacheinfo", f"100644,{blob},{'x' * 300}",
            env=tenv)
        git(attacker, "commit", "-q", "-m", "a long name", env=tenv)
        git(attacker, "push", "-q", "origin", "main", env=tenv)
        a.start()  # catch-up: commit, fetch, merge
        wait_for(lambda: "x" * 50 in a.log() or not a.running(), timeout=30,
                 what="a to try the merge")
        a.write("mine.txt", "still syncing\n")
        wait_for(lambda: not a.running() or "mine.txt" in git(
            a.path, "ls-tree", "--name-only", "HEAD", env=tenv), timeout=30,
            what="a to commit its save")
        assert a.running(), "the daemon died:\n" + a.log()[-1500:]
    finally:
        c.stop()


def test_a_conflict_on_a_long_file_name_keeps_both_versions(make_repo, env):
    """Two clones edit the same file, named with 240 bytes (fine on every file system), at
    the same time. The conflict copy's name, '<stem>.conflict-<host>-<time>.txt', is longer
    than 255 bytes: the merge dies with 'internal error: OSError: File name too long' on
    both clones, for ever (the daemon dies too): they never converge again.
    Expected (README: both versions kept): a copy name that fits, and the merge done."""
    r = make_repo("longname")
    name = "n" * 236 + ".txt"
    (r / name).write_text("base\n")
    base = commit_all(r, "base")
    (r / name).write_text("theirs\n")
    theirs = commit_all(r, "theirs (host b)")
    git(r, "reset", "-q", "--hard", base)
    (r / name).write_text("ours\n")
    commit_all(r, "ours (host a)")
    res = merge_helper(r, theirs, env)
    assert res.returncode == 0, res.stderr
    texts = sorted((r / p).read_text() for p in os.listdir(r) if p.startswith("nnnn"))
    assert texts == ["ours\n", "theirs\n"]


def test_a_commit_dated_far_in_the_future_and_a_save_do_not_wedge(make_repo, env,
                                                                  monkeypatch):
    """A pushed commit with committer time 2**62 (git fsck accepts it). When a save lands
    during the update, the new version is put beside it under a name made from that time:
    time.gmtime() raises OSError(EOVERFLOW), taken for an I/O error: the update is left
    'interrupted', and every later commit fails the same way in recover(): no save is ever
    committed again. Expected: the save stays, the new version is beside it, commits go on."""
    r = make_repo("future")
    (r / "edit.txt").write_text("old\n")
    old = commit_all(r, "old")
    (r / "edit.txt").write_text("new\n")
    git(r, "add", "-A")
    target = git(r, "commit-tree", git(r, "write-tree"), "-p", old, "-m", "new (host far)",
                 env=dict(env, GIT_COMMITTER_DATE="@4611686018427387904 +0000"))
    git(r, "reset", "-q", "--hard", old)
    assert "error" not in subprocess.run(["git", "fsck"], cwd=r, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True).stdout

    def save(name, path):
        if name == "staged":
            (r / "edit.txt").write_text("a save during the merge\n")
    repo = Repo(r)
    monkeypatch.setattr(checkout, "step_hook", save)
    try:
        with repo.lock():
            integrate(repo, target, Config(repo))
    except Exception:
        pass
    monkeypatch.setattr(checkout, "step_hook", None)
    assert (r / "edit.txt").read_text() == "a save during the merge\n"
    assert_still_commits(r, env)


# -- 4. recovery after the user cleaned up by hand ----------------------------------------------
@pytest.mark.parametrize("cleanup", [("reset", "-q", "--hard"), ("restore", "."),
                                     ("stash", "-q")])
def test_after_a_crash_and_a_reset_by_hand_no_remote_edit_is_reverted(make_repo, env,
                                                                       cleanup):
    """The merge is killed after swapping in the new version of edit.txt; the user sees a
    half-updated folder and runs `git reset --hard` (or `git restore .`, `git stash`): the
    branch is still at the old commit, the work tree is the old one again. The next commit
    completes the 'interrupted' merge: the branch and the index move to the new commit but
    the old content stays in the work tree, and autosync commits it: the other clone's edit
    is silently reverted and pushed to everyone (no conflict copy).
    Expected: the remote edit is either applied to the work tree, or the merge abandoned and
    done again; never a commit that reverts it."""
    r = make_repo("reset")
    (r / "edit.txt").write_text("old\n")
    old = commit_all(r, "old")
    (r / "edit.txt").write_text("new, from the other clone\n")
    new = commit_all(r, "new")
    git(r, "reset", "-q", "--hard", old)
    res = merge_helper(r, new, env, fault="exchanged")
    assert res.returncode == -signal.SIGKILL, res.stderr
    git(r, *cleanup)
    res = commit_helper(r, env)
    assert res.returncode == 0, res.stderr
    head = git(r, "rev-parse", "HEAD")
    if subprocess.run(["git", "merge-base", "--is-ancestor", new, head], cwd=r).returncode == 0:
        assert git(r, "show", "HEAD:edit.txt") == "new, from the other clone", \
            git(r, "log", "--format=%s", "--stat", f"{new}..HEAD")


# -- 5. a clone commits what every clone then refuses ------------------------------------------
def test_a_symlinked_gitignore_saved_on_one_clone_does_not_stop_all_syncing(tmp_path, env):
    """A user symlinks .gitignore to a shared file (git accepts and checks out such a link;
    dotfile folders do it). autosync-commit commits and pushes it, then every other clone
    refuses every later commit ('.gitignore as a symlink'), and the clone that committed it
    refuses every merge too (blaming the other clone's clean commit): syncing stops for good
    on all clones. Expected: autosync never commits a tree it would refuse to merge (leave
    the link uncommitted with a warning), or merges it."""
    a, b = two_clones(tmp_path)
    (a / "shared-ignore").write_text("*.log\n")
    os.symlink("shared-ignore", a / ".gitignore")
    assert commit_helper(a, env).returncode == 0
    git(a, "push", "-q", "origin", "main")
    (b / "b.txt").write_text("from b\n")
    commit_all(b, "b")
    git(b, "fetch", "-q")
    res_b = merge_helper(b, "origin/main", env)
    git(a, "fetch", "-q", str(b), "main")
    res_a = merge_helper(a, "FETCH_HEAD", env)
    assert (res_b.returncode, res_a.returncode) == (0, 0), (res_b.stderr, res_a.stderr)


# -- 6. a pusher reads the victim's ignored files ------------------------------------------------
def test_a_pushed_gitignore_change_does_not_leak_locally_ignored_files(tmp_path, tenv, toolkit):
    """The shared .gitignore says `*.key`; the user keeps a private key in the folder, never
    committed. Anyone with push access pushes a commit that drops that line: the clone
    merges it, the watcher rescans (an ignore file changed), and the daemon commits and
    pushes the private key to the server, where the pusher reads it.
    Expected (README Security: a pusher cannot read secrets): a file that was ignored before
    a merge changed the ignore rules is not committed by autosync without the user's say."""
    c = Cluster(tmp_path, tenv, toolkit, pollInterval=1)  # no broker: a polls the server
    try:
        a = c.clone("a", start=False)
        (a.path / ".gitignore").write_text("*.key\n")
        git(a.path, "add", ".gitignore", env=tenv)
        git(a.path, "commit", "-q", "-m", "ignore keys", env=tenv)
        git(a.path, "push", "-q", "origin", "main", env=tenv)
        (a.path / "server.key").write_text("-----BEGIN PRIVATE KEY----- secret\n")
        a.start()
        a.write("notes.txt", "ordinary work\n")
        wait_for(lambda: "notes.txt" in git(c.server, "ls-tree", "--name-only", "main",
                                            env=tenv), timeout=30, what="a's first push")
        attacker = tmp_path / "attacker"
        git(tmp_path, "clone", "-q", str(c.server), str(attacker), env=tenv)
        (attacker / ".gitignore").write_text("# tidied up\n")
        git(attacker, "commit", "-q", "-am", "tidy .gitignore", env=tenv)
        git(attacker, "push", "-q", "origin", "main", env=tenv)
        pushed = git(attacker, "rev-parse", "HEAD", env=tenv)
        wait_for(lambda: subprocess.run(["git", "merge-base", "--is-ancestor", pushed, "HEAD"],
                                        cwd=a.path).returncode == 0, timeout=30,
                 what="a to merge the attacker's commit")
        a.write("later.txt", "a later save\n")  # after the rescan the .gitignore change asks
        wait_for(lambda: "later.txt" in git(c.server, "ls-tree", "--name-only", "main",
                                            env=tenv), timeout=30, what="a's later save")
        leaked = git(c.server, "ls-tree", "-r", "--name-only", "main", env=tenv).split("\n")
        assert "server.key" not in leaked, "the private key was committed and pushed"
    finally:
        c.stop()


def test_after_a_crash_an_excluded_file_in_the_way_is_not_committed(make_repo, env):
    """The user's `.env` is excluded (.git/info/exclude) and never committed; another clone
    adds a `.env` of its own. Normally the local one is moved to .git/autosync/kept/. If the
    merge dies between starting its journal and that move (power loss, OOM kill: fault
    'staged'), recovery treats the excluded file as a save that wins the path: it stays,
    the path is now tracked, and the next commit commits and pushes the excluded secret.
    Expected: recovery moves it to kept/ as the uninterrupted merge does; it is never
    committed."""
    r = make_repo("excl")
    old = git(r, "rev-parse", "HEAD")
    (r / ".env").write_text("PUBLIC_SETTING=1\n")
    new = commit_all(r, "add .env")
    git(r, "reset", "-q", "--hard", old)
    with open(r / ".git" / "info" / "exclude", "a") as f:
        f.write("/.env\n")
    (r / ".env").write_text("SECRET_TOKEN=hunter2\n")
    res = merge_helper(r, new, env, fault="staged")
    assert res.returncode == -signal.SIGKILL, res.stderr
    res = commit_helper(r, env)
    assert res.returncode == 0, res.stderr
    committed = subprocess.run(["git", "log", "-p", "--all"], cwd=r, stdout=subprocess.PIPE,
                               text=True).stdout
    assert "hunter2" not in committed, "the excluded file was committed"
