"""Attacks on the commits of 26 Nov 2026 (git.Objects, plan.json v2, no push after a
fast-forward to B, for-each-ref --no-merged and "plain" commits, one maintenance check in
32 commits, SETTLE 8 ms, lazily imported transports). One test per problem found."""

import os
import time

import pytest

from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
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


# -- git.Objects: the one `git cat-file --batch` of a merge is killed (the OOM killer, a
# user's kill) ----------------------------------------------------------------------------
@pytest.fixture
def two_commits(make_repo):
    r = make_repo("co")
    (r / "keep.txt").write_text("same\n")
    (r / "edit.txt").write_text("old\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "old")
    old = git(r, "rev-parse", "HEAD")
    (r / "edit.txt").write_text("new\n")
    (r / "sub").mkdir()
    (r / "sub" / "added.txt").write_text("added\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "new")
    new = git(r, "rev-parse", "HEAD")
    git(r, "reset", "-q", "--hard", old)
    return r, old, new


class Killed:
    """Stands for the stdin of a GitProcess: the process is killed when the request is
    flushed (asked: git has the question and dies before it answers) or before."""

    def __init__(self, gp, asked):
        self.gp, self.inner, self.asked = gp, gp.stdin, asked

    def write(self, data):
        if not self.asked:
            self.kill()
        return self.inner.write(data)

    def flush(self):
        self.inner.flush()
        self.kill()

    def kill(self):
        self.gp.proc.kill()
        self.gp.proc.wait()

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("when", ["tree-check-asked", "tree-check", "update"])
def test_a_cat_file_killed_during_a_merge_is_a_retry_and_loses_nothing(two_commits,
                                                                        monkeypatch, when):
    """tree-check-asked: git died with the name of the new commit's tree asked for; its
    "no answer" was read as "missing", and the commit refused as a hostile one (for good:
    the daemon merged nothing more of that clone's until it committed again).
    tree-check: the pipe broken, a raw BrokenPipeError left advance(), which run_main
    takes for a reader gone away: the daemon ended at once with status 0 (no log line, and
    systemd's Restart=on-failure does not restart it). update: the update made a Retry of
    it (the journal completes it later) but Objects.close() raised BrokenPipeError over it."""
    from autosync import checkout
    from autosync.checkout import advance
    from autosync.git import Objects, Repo
    from autosync.treecheck import PASSED
    from autosync.util import Retry
    r, old, new = two_commits
    PASSED.clear()
    readers = []
    tree = git(r, "rev-parse", new + "^{tree}")

    class Killable(Objects):
        def header(self, oid):
            if oid == tree and not readers and when != "update":  # checking new's tree
                readers.append(self)
                self.proc.stdin = Killed(self.proc, asked=when == "tree-check-asked")
            return super().header(oid)
    monkeypatch.setattr(checkout, "Objects", Killable)

    def save_then_kill(name, path):
        if name == "staged" and when == "update":
            (r / "edit.txt").write_text("saved during the merge\n")
            reader = checkout_objects[0]
            reader.proc.kill()
            reader.proc.wait()
    checkout_objects = []
    original_init = Killable.__init__

    def init(self, repo):
        original_init(self, repo)
        checkout_objects.append(self)
    monkeypatch.setattr(Killable, "__init__", init)
    monkeypatch.setattr(checkout, "step_hook", save_then_kill)
    with pytest.raises(Retry):
        advance(Repo(r), "main", old, new)
    monkeypatch.setattr(checkout, "step_hook", None)
    monkeypatch.setattr(checkout, "Objects", Objects)
    with Repo(r).lock():
        checkout.recover(Repo(r))
    if when == "update":
        assert (r / "edit.txt").read_text() == "saved during the merge\n"
        assert [(r / p).read_text() for p in os.listdir(r)
                if p.startswith("edit.conflict-")] == ["new\n"]
        assert git(r, "rev-parse", "HEAD") == new
    else:  # nothing was touched; the next attempt merges
        assert git(r, "rev-parse", "HEAD") == old
        assert git(r, "status", "--porcelain") == ""
        advance(Repo(r), "main", old, new)
        assert (r / "sub" / "added.txt").read_text() == "added\n"


def test_a_cat_file_killed_while_checking_one_of_two_tips_refuses_neither(make_repo,
                                                                          monkeypatch):
    """Two clones' commits come in: each is checked on its own (merge.integrate) through a
    cat-file of check_update's own. Killed once it was asked for the first tip's tree, its
    silence was read as "tree missing": that clone's sound commit was refused as hostile
    (left out until it commits again); now it is a Retry, and the next attempt merges both."""
    from autosync import git as gitmod
    from autosync.config import Config
    from autosync.git import Repo
    from autosync.merge import integrate
    from autosync.treecheck import PASSED
    from autosync.util import Retry
    r = make_repo("co")
    base = git(r, "rev-parse", "HEAD")
    tips = []
    for name in ("a", "c"):
        git(r, "checkout", "-q", "-b", name, base)
        (r / name).mkdir()
        (r / name / f"from-{name}.txt").write_text(f"{name}\n")
        git(r, "add", "-A")
        git(r, "commit", "-qm", f"from {name}")
        tips.append(git(r, "rev-parse", "HEAD"))
    git(r, "checkout", "-q", "main")
    PASSED.clear()
    target = git(r, "rev-parse", tips[0] + "^{tree}")
    killed = []

    class Killable(gitmod.Objects):
        def header(self, oid):
            if oid == target and not killed:
                killed.append(oid)
                self.proc.stdin = Killed(self.proc, asked=True)
            return super().header(oid)
    import autosync.treecheck as treecheck
    monkeypatch.setattr(treecheck, "Objects", Killable)
    repo = Repo(r)
    with repo.lock():
        try:
            result = integrate(repo, tips, Config(repo))
        except Retry:
            result = None
    assert killed
    assert result is None or not result.refused, [e.message for e in result.refused]
    monkeypatch.setattr(treecheck, "Objects", gitmod.Objects)
    with repo.lock():
        result = integrate(repo, tips, Config(repo))
    assert not result.refused
    assert (r / "a" / "from-a.txt").exists() and (r / "c" / "from-c.txt").exists()


def last_pull(clone):
    import json
    try:
        return json.loads((clone.path / ".git/autosync/state.json").read_text())["last_pull"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_merge_arriving_in_the_middle_of_a_save_does_not_commit_its_deletion(cluster):
    """Before it merges, the daemon commits what is pending (Watcher.flush), waiting only
    for a file still open for writing (Watcher.busy). vim's save between its two steps -
    the file renamed to its backup, not written anew yet - was committed as the file's
    deletion and pushed: every other clone deleted the file until the save's second step
    was committed (a debounce later: a batch right after another is a burst)."""
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    b.config(debounce=30000, maxDelay=60000)  # only a lone save is committed at once
    b.start()
    (b.path / "notes.md").write_text("first version\n")
    wait_for(lambda: a.read("notes.md") == "first version\n", timeout=45,
             what="notes.md at a")
    os.rename(b.path / "notes.md", b.path / "notes.md~")  # vim's save, step one
    pulled = last_pull(b)
    a.write("other.txt", "from a\n")
    wait_for(lambda: a.clean() and git(b.path, "branch", "-r", "--contains", a.head(),
                                       env=b.env, check=False) and last_pull(b) != pulled,
             what="a's commit fetched by b (whose daemon then merges at once)")
    fd = os.open(b.path / "notes.md", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"the final content\n")  # step two
    os.close(fd)
    os.unlink(b.path / "notes.md~")
    wait_for(lambda: a.read("notes.md") == "the final content\n"
             and b.read("other.txt") == "from a\n", timeout=45,
             what="the save at a")
    deleted = git(cluster.server, "log", "--diff-filter=D", "--name-only", "--format=%h %s",
                  "main", env=cluster.env)
    assert deleted == "", "a save in progress was committed (and pushed) as a deletion"


def test_the_tree_of_a_commit_with_a_huge_message_is_read_in_little_memory(make_repo):
    """A peer chooses its commit's message: 64 MB of it were read whole by Repo.tree
    (through git.Objects) into the daemon, then copied by the split of its first line:
    the daemon held twice the commit's size (rev-parse, before, held none of it)."""
    import tracemalloc
    from autosync.git import Objects, Repo
    r = make_repo("big")
    message = b"subject\n\n" + b"x" * (64 << 20) + b"\n"
    tree = git(r, "rev-parse", "HEAD^{tree}")
    commit = git(r, "commit-tree", tree, "-p", "HEAD", input=message)
    repo = Repo(r)
    objects = Objects(repo)
    try:
        tracemalloc.start()
        try:
            assert repo.tree(commit, objects) == tree
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert repo.tree(git(r, "rev-parse", "HEAD"), objects) == tree  # still in step
    finally:
        objects.close()
    assert peak < 4 << 20, f"{peak >> 20} MB held to read the id of a tree"


def test_a_file_written_all_the_time_does_not_hold_merges_for_ever(cluster):
    """The merge waits for a file being written (Watcher.busy), up to max_delay - of the
    batch: a file written on and on (a log, a terminal recording in the folder) is taken
    at max_delay, the next write starts the next batch, busy again: b committed and pushed
    its log every second, and merged nothing of a's while the log went on."""
    import threading
    a, b = cluster.clone("a"), cluster.clone("b")  # (maxDelay: 1 s)
    stop = threading.Event()

    def writer():
        with open(b.path / "session.log", "a") as f:
            while not stop.is_set():
                f.write("a line of the session\n")
                f.flush()
                stop.wait(0.02)  # the pace of the writing program
    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(lambda: git(b.path, "ls-files", "session.log", env=b.env),
                 what="b's log committed while written")
        a.write("other.txt", "from a\n")
        wait_for(lambda: b.read("other.txt") == "from a\n", timeout=10,
                 what="a's commit merged at b while b's log is written")
    finally:
        stop.set()
        t.join()


def test_a_commit_whose_author_line_breaks_hides_no_ref(make_repo):
    """Remote.refs now reads %(authoremail): a commit whose author header holds a newline
    (git takes it where fsck is off - the user's choice, which install respects) printed
    its ref over two lines, and the ref was dropped: B at such a commit was no tip at all
    (never merged; B "absent", so every push tried to move it over the peer's commit)."""
    from autosync.git import Repo
    from autosync.sync import Remote
    r = make_repo("clone")
    tree = git(r, "rev-parse", "HEAD^{tree}")
    head = git(r, "rev-parse", "HEAD")
    raw = (f"tree {tree}\nparent {head}\nauthor Peer <peer\n@example.org> 1700000000 +0000\n"
           "committer Peer <peer@example.org> 1700000000 +0000\n\nfrom a peer\n")
    (r / ".git" / "obj").write_text(raw)
    odd = git(r, "hash-object", "-t", "commit", "-w", "--literally", ".git/obj")
    git(r, "update-ref", "refs/remotes/origin/main", odd)
    git(r, "update-ref", "refs/autosync/remotes/origin/main/peer", odd)
    remote = Remote(Repo(r), "origin", "main", "me")
    tips = remote.tips(with_branch=True)
    assert tips.get("refs/remotes/origin/main") == odd, tips
    assert tips.get("refs/autosync/remotes/origin/main/peer") == odd, tips
