"""Second attack round on the merge/update path: each test reproduces one bug with real git
repositories and real processes, and states the behaviour the README and DESIGN.md promise.
Same conventions as test_attacks.py (libexec helpers, GIT_AUTOSYNC_FAULT kills, no sleeps).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from autosync import checkout
from autosync.checkout import advance
from autosync.git import Repo
from conftest import LIBEXEC, git
from test_attacks import commit_all, commit_helper, merge_helper, two_clones


# -- helpers ----------------------------------------------------------------------------------
def unprivileged():
    """A prefix that makes a root process honour file permissions (chmod 555)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop CAP_DAC_OVERRIDE as root")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


def settle(r, *paths):
    """Date files a minute back (as in a real folder) and let git record it."""
    past = time.time_ns() - 60 * 10**9
    for p in paths:
        os.utime(r / p, ns=(past, past))
    git(r, "update-index", "-q", "--refresh", check=False)


# -- 1. an interrupted merge un-ignores a secret and the next commit pushes it ----------------
@pytest.mark.parametrize("how", ["killed", "read-only"])
def test_an_interrupted_merge_that_changes_gitignore_never_commits_an_ignored_file(
        make_repo, env, how):
    """The shared .gitignore says `*.key`; the user keeps server.key in the folder. A pusher
    drops that line. integrate() holds un-ignored files only *after* advance() returns: when
    the merge is killed (power loss, OOM, kill -9 of the daemon: fault 'ref') or fails half
    way (a read-only directory, a full disk: Retry), the new .gitignore is already in the
    work tree and hold() never runs. The next autosync-commit completes the update (or
    commits "everything else meanwhile") and commits server.key, which the daemon pushes.
    Observed: server.key is in HEAD. Expected (README Security): a file ignored before a
    merge changed the ignore rules is never committed by autosync."""
    r = make_repo("ign")
    (r / ".gitignore").write_text("*.key\n")
    (r / "ro").mkdir()
    (r / "ro" / "a.txt").write_text("a\n")
    old = commit_all(r, "ignore keys")
    (r / ".gitignore").write_text("# tidied up\n")
    (r / "ro" / "new.txt").write_text("added by the pusher\n")
    new = commit_all(r, "tidy .gitignore")
    git(r, "reset", "-q", "--hard", old)
    (r / "server.key").write_text("-----BEGIN PRIVATE KEY----- hunter2\n")
    prefix = ()
    try:
        if how == "killed":
            res = merge_helper(r, new, env, fault="ref")
            assert res.returncode == -signal.SIGKILL, res.stderr
        else:
            prefix = unprivileged()
            os.chmod(r / "ro", 0o555)
            res = merge_helper(r, new, env, prefix=prefix)
            assert res.returncode != 0, res.stderr
        (r / "mine.txt").write_text("a save after the merge\n")
        res = commit_helper(r, env, prefix=prefix)
        assert res.returncode == 0, res.stderr
    finally:
        os.chmod(r / "ro", 0o755)
    committed = git(r, "ls-tree", "-r", "--name-only", "HEAD").split("\n")
    assert "server.key" not in committed, "the ignored private key was committed"


# -- 2. the stat fast path deletes a save unread ------------------------------------------------
@pytest.mark.parametrize("remote", ["edit", "delete"])
def test_a_save_whose_tool_restores_the_mtime_is_not_deleted_unread(make_repo, env,
                                                                     monkeypatch, remote):
    """in_the_way() records (ino, dev, mtime_ns, size, mode) of files git calls clean; what
    comes out of the work tree with the same key is deleted without being read. ctime, the
    one field no tool can set, is left out. A same-size in-place save by a writer that keeps
    the file's mtime (touch -r, cp --preserve=timestamps / rsync --inplace -t onto the file
    or onto another hard link of it, exiftool -P) between the check and the swap keeps the
    whole key: the save is deleted unread (git's own check compares ctime too).
    Observed: 'MY SAVE!!!!' is gone from the folder, not beside, not in kept/.
    Expected (README: what comes out is compared with its committed version and deleted
    only when equal): the save stays, the new version beside it."""
    r = make_repo("stat")
    (r / "edit.txt").write_text("old version\n")
    old = commit_all(r, "old")
    if remote == "edit":
        (r / "edit.txt").write_text("new version\n")
    else:
        (r / "edit.txt").unlink()
    new = commit_all(r, "new")
    git(r, "reset", "-q", "--hard", old)
    settle(r, "edit.txt")

    def save(name, path):
        if name == "staged":
            st = os.stat(r / "edit.txt")
            with open(r / "edit.txt", "r+") as f:  # in place, same size
                f.write("MY SAVE!!!!\n")
            os.utime(r / "edit.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(checkout, "step_hook", save)
    advance(Repo(r), "main", old, new)
    monkeypatch.setattr(checkout, "step_hook", None)
    texts = [(r / p).read_text() for p in os.listdir(r) if p.startswith("edit")]
    kept = os.path.join(Repo(r).state_dir, "kept")
    for d, _, files in os.walk(kept):
        texts += [open(os.path.join(d, f)).read() for f in files]
    assert "MY SAVE!!!!\n" in texts, f"the save was deleted unread: {texts}"


# -- 3. every recovery makes one more conflict copy ---------------------------------------------
SAVE_DURING_MERGE = """
import sys
sys.path.insert(0, sys.argv[1])
from autosync import checkout, merge
repo, new = sys.argv[2], sys.argv[3]
def save(name, path):
    if name == "staged":
        with open(repo + "/notes.txt", "w") as f:
            f.write("my save during the merge\\n")
checkout.step_hook = save
sys.exit(merge.main(["-C", repo, new]))
"""


def test_recovering_a_merge_where_a_save_won_makes_one_conflict_copy(make_repo, env):
    """A save lands on notes.txt while the merge runs: the save keeps the path and the
    merged version goes beside it as a conflict copy. The merge is then killed before it
    ends (fault 'ref'). recover() -> redo_preparation() sees a save (USER) at the path and
    no staged version in the journal, takes it for 'a reset by hand undid it', checks the
    new version out again and apply() puts it beside the save a second time. Each
    interrupted recovery adds one more (three copies after a second kill); all are committed
    and pushed to every clone.
    Observed: two identical conflict copies. Expected: one."""
    r = make_repo("dup")
    (r / "notes.txt").write_text("old\n")
    old = commit_all(r, "old")
    (r / "notes.txt").write_text("merged version from the other clone\n")
    new = commit_all(r, "new")
    git(r, "reset", "-q", "--hard", old)
    settle(r, "notes.txt")
    e = dict(env, GIT_AUTOSYNC_FAULT="ref")
    res = subprocess.run([sys.executable, "-c", SAVE_DURING_MERGE, str(LIBEXEC), str(r), new],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    res = commit_helper(r, env)
    assert res.returncode == 0, res.stderr
    assert (r / "notes.txt").read_text() == "my save during the merge\n"
    copies = sorted(p for p in os.listdir(r) if p.startswith("notes.conflict-"))
    assert len(copies) == 1, f"{len(copies)} conflict copies of one version: {copies}"


# -- 4. one clone's deep folder stops every other clone ----------------------------------------
def test_a_folder_deeper_than_autosync_accepts_is_not_committed_for_others_to_refuse(
        tmp_path, env):
    """treecheck refuses trees more than 256 directories deep (git itself checks them out),
    but autosync-commit commits such a folder (a runaway recursive copy, a deep
    node_modules) and the daemon pushes it. Every other clone then refuses that commit and
    every later one from this clone ('it is more than 256 directories deep'): they stop
    syncing for good. The first round fixed this for a symlinked .gitignore (REFUSED names)
    but commit.skip_reason() never looks at depth.
    Observed: the other clone's merge exits 1 with 'refusing commit'. Expected: autosync
    never commits a tree it would refuse to merge (leaves the deep file out with a
    warning), or the other clone merges it."""
    a, b = two_clones(tmp_path)
    deep = a.joinpath(*["d"] * 260)
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("a deep file\n")
    (a / "work.txt").write_text("ordinary work\n")
    assert commit_helper(a, env).returncode == 0
    git(a, "push", "-q", "origin", "main")
    (b / "b.txt").write_text("from b\n")
    commit_all(b, "b")
    git(b, "fetch", "-q")
    res = merge_helper(b, "origin/main", env)
    assert res.returncode == 0, res.stderr
    assert (b / "work.txt").exists()


# -- 5. a held directory hides the user's later files for ever ----------------------------------
def test_files_created_after_an_unignoring_merge_are_not_held_for_ever(make_repo, env):
    """.gitignore had `private/`; a pusher removes the rule: the whole directory 'private' is
    written to $GIT_DIR/autosync/held. Nothing ever takes an entry out again: after the
    user deletes that folder and later creates private/notes.txt (a new file, never ignored,
    long after the merge), it is never committed: autosync-commit exits 0 and prints
    nothing, the file stays untracked on this clone only.
    Expected (README: files a merged .gitignore change un-ignores are held): only what was
    ignored before the merge is held; a file created afterwards is committed."""
    r = make_repo("held")
    (r / ".gitignore").write_text("private/\n")
    old = commit_all(r, "ignore private/")
    (r / ".gitignore").write_text("# nothing ignored\n")
    new = commit_all(r, "un-ignore")
    git(r, "reset", "-q", "--hard", old)
    (r / "private").mkdir()
    (r / "private" / "a.txt").write_text("secret\n")
    res = merge_helper(r, new, env)
    assert res.returncode == 0, res.stderr
    shutil.rmtree(r / "private")
    (r / "private").mkdir()
    (r / "private" / "notes.txt").write_text("my new notes, written after the merge\n")
    res = commit_helper(r, env)
    assert res.returncode == 0, res.stderr
    assert "private/notes.txt" in git(r, "ls-tree", "-r", "--name-only", "HEAD").split("\n"), \
        "a file created after the merge is never committed"
