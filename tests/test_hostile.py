"""Hostile pushes, end to end: real daemons, a real bare server, a real broker, plain pushes.

An attacker with push access writes tree objects git itself would never write (`git mktree`
refuses them: they are made with `git hash-object -t tree --literally`), wraps them in a
commit with `git commit-tree` and pushes it from a plain clone that runs no autosync. The
server's post-receive hook announces the push, so every clone's daemon fetches it at once.

For each case the clone must: leave its folder as it was, write nothing outside its work
tree and nothing into .git/hooks, keep running and committing the user's own saves, and
record the refusal (status --json "refused", the log) once, not in a loop. A later clean
descendant is merged by itself. Local files autosync does not commit never block syncing,
and a branch the user switched to by hand is left alone.
"""

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster, wait_converged
from conftest import git, wait_for

TREE, BLOB, EXEC, LINK = "40000", "100644", "100755", "120000"


@pytest.fixture
def cluster(tmp_path, tenv, toolkit, mosquitto):  # noqa: F811
    c = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    # the attacker owns (or fools) the server: it accepts whatever is pushed
    git(c.server, "config", "receive.fsckObjects", "false", env=tenv)
    git(c.server, "config", "transfer.fsckObjects", "false", env=tenv)
    yield c
    c.stop()


def victim(cluster, name="a", fsck=False, **config):
    """A clone with its daemon running. fsck=False: git's own fetch check is off, so what
    stops a hostile tree is autosync's check alone."""
    c = cluster.clone(name, start=False)
    git(c.path, "config", "fetch.fsckObjects", "true" if fsck else "false", env=c.env)
    if config:
        c.config(**config)
    c.start()
    return c


class Attacker:
    """A plain clone (no autosync installed) that writes raw objects and pushes by hand."""

    def __init__(self, cluster):
        self.env = cluster.env
        self.path = cluster.tmp / "attacker"
        git(cluster.tmp, "clone", "-q", str(cluster.server), str(self.path), env=self.env)

    def run(self, *args, input=None):
        res = subprocess.run(["git", *args], cwd=self.path, env=self.env, input=input,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert res.returncode == 0, f"git {args}: {res.stderr.decode(errors='replace')}"
        return res.stdout

    def out(self, *args, input=None):
        return self.run(*args, input=input).decode().strip()

    def head(self):
        """The server's main, fetched now."""
        self.run("fetch", "-q", "origin")
        return self.out("rev-parse", "refs/remotes/origin/main")

    def blob(self, data):
        return self.out("hash-object", "-w", "--stdin",
                        input=data if isinstance(data, bytes) else data.encode())

    def entries(self, treeish):
        """[(mode, name bytes, oid)] of one tree, as git stores them."""
        result = []
        for item in self.run("ls-tree", "-z", treeish).split(b"\0"):
            if not item:
                continue
            meta, name = item.split(b"\t", 1)
            mode, _, oid = meta.decode().split()
            result.append(("40000" if mode == "040000" else mode, name, oid))
        return result

    def tree(self, entries):
        """A tree object holding exactly these entries, in git's order (a name listed twice
        stays twice), written without any of git's checks."""
        def key(e):
            name = e[1] if isinstance(e[1], bytes) else e[1].encode()
            return name + b"/" if e[0] == TREE else name
        data = b"".join(mode.encode() + b" " + (name if isinstance(name, bytes) else
                                                 name.encode()) + b"\0" + bytes.fromhex(oid)
                        for mode, name, oid in sorted(entries, key=key))
        return self.out("hash-object", "-t", "tree", "-w", "--literally", "--stdin",
                        input=data)

    def commit(self, tree, parent, message):
        return self.out("commit-tree", tree, "-p", parent, "-m", message)

    def push(self, commit):
        self.run("push", "-q", "origin", f"{commit}:refs/heads/main")


# -- what must not change -----------------------------------------------------------------------
def _digest(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    return ("file", stat.S_IMODE(st.st_mode),
            hashlib.sha256(Path(path).read_bytes()).hexdigest())


def listing(top, skip=()):
    """{relative path: digest} of everything below top (nothing followed), not entering
    the directories named in skip (.git, where the daemon writes its state meanwhile)."""
    top = Path(top)
    result = {}
    if not top.exists():
        return result
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            result[os.path.relpath(p, top)] = _digest(p)
    return result


class Outside:
    """What a hostile tree could reach outside the clone's work tree: the clone's hooks and
    config, a directory beside the clones, the temp directory's top level."""

    def __init__(self, cluster, clone):
        self.clone = clone
        self.tmp = cluster.tmp
        self.dir = cluster.tmp / "outside"
        self.dir.mkdir(exist_ok=True)
        self.marker = cluster.tmp / "pwned"
        self.before = self.snapshot()

    def snapshot(self):
        git_dir = self.clone.path / ".git"
        return {"hooks": listing(git_dir / "hooks"),
                "config": _digest(git_dir / "config"),
                "git-top": sorted(n for n in os.listdir(git_dir)
                                  if n.lower().startswith(("config", "hooks"))),
                "outside": listing(self.dir),
                "tmp-top": sorted(os.listdir(self.tmp))}

    def assert_untouched(self):
        assert not self.marker.exists(), "a pushed hook ran"
        assert self.snapshot() == self.before


# -- helpers ----------------------------------------------------------------------------------
def status_json(clone):
    res = clone.autosync("status", "--json", check=False)
    try:
        return json.loads(res.stdout)
    except ValueError:
        return {}


def state_file(clone):
    p = clone.path / ".git" / "autosync" / "state.json"
    return p.read_text() if p.exists() else "(no state.json)"


def refusal_line(commit):
    return f"refusing commit {commit[:10]}"


def refusal_warnings(clone, commit):
    """The log's warning lines about refusing commit (a desktop notification may echo it
    in an INFO line)."""
    return [l for l in clone.log().splitlines()
            if " WARNING " in l and refusal_line(commit) in l]


def wait_refused(clone, commit):
    """Wait for the daemon to log the refusal; then the status it shows (a short wait for
    the "refused" entry: the log line comes first)."""
    wait_for(lambda: refusal_line(commit) in clone.log(), timeout=30,
             what=f"{clone.name} to refuse {commit[:10]}")
    seen = {}

    def shows():
        seen["status"] = status_json(clone)
        return _refused_entries(seen["status"])
    try:
        wait_for(shows, timeout=5, what="status --json to show the refusal")
    except AssertionError:
        pass
    return seen["status"]


def _refused_entries(status):
    value = status.get("refused")
    if not value:
        return []
    return value if isinstance(value, list) else [value]


def assert_refusal_recorded(clone, commit, status):
    """status --json (taken while refused) names the commit with a reason; the plain status
    or the log says so too."""
    text = clone.autosync("status", check=False).stdout
    assert commit[:10] in text or refusal_line(commit) in clone.log()
    entries = _refused_entries(status)
    assert any(isinstance(e, dict) and e.get("commit") == commit and e.get("reason")
               for e in entries), (f"`git autosync status --json` has no 'refused' entry for "
                                   f"{commit}: {json.dumps(status, sort_keys=True)}\n"
                                   f"(the daemon's state.json: {state_file(clone)})")


def committed_files(clone):
    return set(git(clone.path, "ls-tree", "-r", "-z", "--name-only", "HEAD",
                   env=clone.env).split("\0")) - {""}


def assert_keeps_committing(clone, *names):
    """The daemon is alive and commits the user's saves (locally: the remote is refused)."""
    for i, name in enumerate(names):
        clone.write(name, f"the user's own save {i}\n")
    wait_for(lambda: set(names) <= committed_files(clone), timeout=30,
             what=f"{clone.name} to commit its own saves {names}")
    wait_for(clone.clean, timeout=15, what=f"{clone.name} clean after its commits")
    assert clone.running()


def is_ancestor(clone, commit, rev="HEAD"):
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, rev], cwd=clone.path,
                          env=clone.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def work_tree(clone):
    """{path: digest} of the work tree, without .git."""
    return listing(clone.path, skip=(".git",))


def hook_script(marker):
    return f"#!/bin/sh\necho pwned >> '{marker}'\n"


def ready(cluster, *clones):
    """Every clone caught up with the server (and so with each other)."""
    wait_converged(list(clones), cluster.server)


def assert_log_sane(clone):
    assert "Traceback" not in clone.log()


# -- 1. code execution ------------------------------------------------------------------------
def test_symlink_to_hooks_beside_a_directory_of_hooks_is_refused(cluster):
    a = victim(cluster)
    attacker = Attacker(cluster)
    ready(cluster, a)
    outside = Outside(cluster, a)
    tree_before = work_tree(a)
    base = attacker.head()

    hook = attacker.blob(hook_script(outside.marker))
    hooks = attacker.tree([(EXEC, "reference-transaction", hook), (EXEC, "post-commit", hook),
                           (EXEC, "pre-commit", hook), (EXEC, "post-merge", hook)])
    evil = attacker.tree(attacker.entries(base) + [(LINK, "x", attacker.blob(".git/hooks")),
                                                   (TREE, "x", hooks)])
    hostile = attacker.commit(evil, base, "innocent notes")
    attacker.push(hostile)

    status = wait_refused(a, hostile)
    assert_keeps_committing(a, "save-1.txt", "save-2.txt", "save-3.txt")  # hooks would run
    assert not os.path.lexists(a.path / "x")
    assert not is_ancestor(a, hostile)
    assert {p: d for p, d in work_tree(a).items() if not p.startswith("save-")} == tree_before
    outside.assert_untouched()
    assert_log_sane(a)
    assert_refusal_recorded(a, hostile, status)


def test_symlink_first_then_a_directory_in_its_place_never_reaches_hooks(cluster):
    """Two commits git accepts one by one: `x -> .git/hooks`, then `x/` a directory of
    hooks. The second must replace the link, never write through it."""
    a = victim(cluster)
    attacker = Attacker(cluster)
    ready(cluster, a)
    outside = Outside(cluster, a)
    base = attacker.head()
    first = attacker.commit(attacker.tree(attacker.entries(base) + [
        (LINK, "x", attacker.blob(".git/hooks"))]), base, "a link")
    attacker.push(first)
    wait_for(lambda: os.path.islink(a.path / "x"), what="the link to arrive")
    hook = attacker.blob(hook_script(outside.marker))
    hooks = attacker.tree([(EXEC, "reference-transaction", hook), (EXEC, "post-commit", hook)])
    second = attacker.commit(attacker.tree(attacker.entries(base) + [(TREE, "x", hooks)]),
                             first, "a directory where the link was")
    attacker.push(second)
    wait_for(lambda: a.head() == second, timeout=30, what="the second commit to merge")
    assert not os.path.islink(a.path / "x") and (a.path / "x").is_dir()
    assert sorted(os.listdir(a.path / "x")) == ["post-commit", "reference-transaction"]
    assert_keeps_committing(a, "after-1.txt", "after-2.txt")
    outside.assert_untouched()
    assert_log_sane(a)


# -- 2. writing outside the work tree -------------------------------------------------------------
def test_symlink_outside_beside_a_directory_writes_nothing_there(cluster):
    a = victim(cluster)
    attacker = Attacker(cluster)
    ready(cluster, a)
    outside = Outside(cluster, a)
    tree_before = work_tree(a)
    base = attacker.head()
    inner = attacker.tree([(BLOB, "evil.txt", attacker.blob("written outside\n"))])
    evil = attacker.tree(attacker.entries(base) + [
        (LINK, "y", attacker.blob(str(outside.dir))), (TREE, "y", inner)])
    hostile = attacker.commit(evil, base, "a link out")
    attacker.push(hostile)

    status = wait_refused(a, hostile)
    assert_keeps_committing(a, "mine.txt")
    assert os.listdir(outside.dir) == []
    assert not os.path.lexists(a.path / "y")
    assert {p: d for p, d in work_tree(a).items() if p != "mine.txt"} == tree_before
    outside.assert_untouched()
    assert_log_sane(a)
    assert_refusal_recorded(a, hostile, status)


def test_a_local_symlink_out_where_a_directory_arrives_is_never_followed(cluster):
    """The user's own (excluded, so never committed) symlink `y -> outside` sits where a
    pushed commit adds `y/evil.txt`: the link is kept aside, nothing lands outside."""
    a = victim(cluster)
    b = cluster.clone("b")
    ready(cluster, a, b)
    outside = Outside(cluster, a)
    with open(a.path / ".git" / "info" / "exclude", "a") as f:
        f.write("/y\n")
    os.symlink(str(outside.dir), a.path / "y")
    b.write("y/evil.txt", "from b\n")
    wait_for(lambda: (a.path / "y").is_dir() and not (a.path / "y").is_symlink()
             and a.read("y/evil.txt") == "from b\n", timeout=30, what="y/evil.txt at a")
    assert os.listdir(outside.dir) == []
    kept = [p for p, _ in listing(a.path / ".git" / "autosync" / "kept").items()
            if os.path.islink(a.path / ".git" / "autosync" / "kept" / p)]
    assert len(kept) == 1 and os.readlink(a.path / ".git/autosync/kept" / kept[0]) == \
        str(outside.dir)
    outside.assert_untouched()
    wait_converged([a, b], cluster.server)
    assert_log_sane(a)


# -- 3. paths git refuses -------------------------------------------------------------------------
def _dot_git_upper(attacker, marker):
    return [(TREE, ".GIT", attacker.tree([(BLOB, "config2", attacker.blob(
        "[core]\n\thooksPath = /tmp\n"))]))]


def _dotdot(attacker, marker):
    return [(TREE, "..", attacker.tree([(BLOB, "evil.txt", attacker.blob("up\n"))]))]


def _git_short(attacker, marker):
    return [(TREE, "git~1", attacker.tree([(EXEC, "post-commit",
                                            attacker.blob(hook_script(marker)))]))]


def _gitattributes_link(attacker, marker):
    return [(LINK, ".gitattributes", attacker.blob(".git/config"))]


def _twice(attacker, marker):
    return [(BLOB, "dup.txt", attacker.blob("first\n")),
            (BLOB, "dup.txt", attacker.blob("second\n"))]


def _nested_dot_git(attacker, marker):
    hooks = attacker.tree([(EXEC, "post-checkout", attacker.blob(hook_script(marker)))])
    dot_git = attacker.tree([(TREE, "hooks", hooks),
                             (BLOB, "HEAD", attacker.blob("ref: refs/heads/main\n"))])
    return [(TREE, "sub", attacker.tree([(TREE, ".git", dot_git),
                                         (BLOB, "ok.txt", attacker.blob("fine\n"))]))]


def _spelled(name):
    """`.git` as git refuses it on NTFS or HFS+ (on Linux only a look-alike), with a hook."""
    def entries(attacker, marker):
        hooks = attacker.tree([(EXEC, "post-commit", attacker.blob(hook_script(marker)))])
        return [(TREE, name, attacker.tree([(TREE, "hooks", hooks)]))]
    return entries


def _symlink_and_dir(attacker, marker):
    hooks = attacker.tree([(EXEC, "post-commit", attacker.blob(hook_script(marker)))])
    return [(LINK, "x", attacker.blob(".git/hooks")), (TREE, "x", hooks)]


def _in_existing_dir(attacker, marker):
    """docs/ is already there: the hostile entry sits in a changed subtree, not a new one."""
    hooks = attacker.tree([(EXEC, "post-commit", attacker.blob(hook_script(marker)))])
    docs = attacker.entries("refs/remotes/origin/main:docs")
    return [(TREE, b"docs", attacker.tree(docs + [(TREE, ".Git", attacker.tree([
        (TREE, "hooks", hooks)]))]))]


BAD = {".GIT/config2": _dot_git_upper, "..": _dotdot, "git~1": _git_short,
       ".gitattributes symlink": _gitattributes_link, "name twice": _twice,
       "sub/.git": _nested_dot_git, "docs/.Git (existing dir)": _in_existing_dir,
       "GIT~1": _spelled("GIT~1"), ".git. (NTFS)": _spelled(".git. "),
       ".git::$INDEX_ALLOCATION": _spelled(".git::$INDEX_ALLOCATION"),
       ".g\u200cit (HFS+)": _spelled(".g\u200cit")}


@pytest.mark.parametrize("bad", list(BAD))
def test_a_refused_path_refuses_the_whole_commit_then_a_clean_fix_resumes(cluster, bad):
    a = victim(cluster)
    attacker = Attacker(cluster)
    a.write("a.txt", "a, before\n")
    a.write("b.txt", "b, before\n")
    a.write("docs/keep.txt", "docs, before\n")
    wait_for(lambda: {"a.txt", "b.txt", "docs/keep.txt"} <= committed_files(a) and a.clean(),
             what="a, b and docs")
    ready(cluster, a)
    outside = Outside(cluster, a)
    base = attacker.head()
    kept_entries = [e for e in attacker.entries(base) if e[1] not in (b"a.txt", b"b.txt")]
    good = kept_entries + [(BLOB, "a.txt", attacker.blob("a, edited by the push\n"))]
    bad_entries = BAD[bad](attacker, outside.marker)
    replaced = {e[1] if isinstance(e[1], bytes) else e[1].encode() for e in bad_entries}
    hostile = attacker.commit(attacker.tree([e for e in good if e[1] not in replaced]
                                            + bad_entries), base,
                              "edit a.txt, delete b.txt, and something else")
    attacker.push(hostile)

    status = wait_refused(a, hostile)
    assert_keeps_committing(a, "during-1.txt", "during-2.txt")
    assert a.read("a.txt") == "a, before\n"
    assert a.read("b.txt") == "b, before\n"
    assert {"a.txt", "b.txt"} <= committed_files(a)
    history = git(a.path, "log", "--format=%H", "--name-status", "HEAD", env=a.env)
    assert "D\tb.txt" not in history and "D\ta.txt" not in history
    assert not is_ancestor(a, hostile)
    for mode, name, _ in bad_entries:
        if name not in ("..", b"..", b"docs"):
            assert not os.path.lexists(a.path / os.fsdecode(name)), name
    assert sorted(os.listdir(a.path / "docs")) == ["keep.txt"]
    assert not os.path.lexists(a.path / ".gitattributes")
    assert not (cluster.tmp / "evil.txt").exists()
    outside.assert_untouched()

    # the attacker (or the owner, cleaning up) pushes a descendant without the bad entry
    fix = attacker.commit(attacker.tree(good + ([bad_entries[0]] if bad == "name twice"
                                                else [])),
                          hostile, "without the bad entry")
    attacker.push(fix)
    wait_for(lambda: is_ancestor(a, fix) and a.read("a.txt") == "a, edited by the push\n",
             timeout=30, what="the clean descendant to merge by itself")
    wait_converged([a], cluster.server)
    assert a.read("b.txt") is None  # deleted by the fix's history now, as git would
    assert a.read("during-1.txt") == "the user's own save 0\n"
    assert {"during-1.txt", "during-2.txt"} <= set(
        git(cluster.server, "ls-tree", "-r", "--name-only", "main", env=a.env).split("\n"))
    if bad == "name twice":
        assert a.read("dup.txt") == "first\n"
    outside.assert_untouched()
    assert_log_sane(a)
    after = status_json(a)
    assert_refusal_recorded(a, hostile, status)
    assert not _refused_entries(after), after


@pytest.mark.parametrize("bad", ["symlink and dir", "..", ".GIT/config2", "name twice"])
def test_a_hostile_commit_merged_with_unpushed_local_work_is_refused_too(cluster, bad):
    """The clone has a save of its own the server has not seen: the hostile commit is not a
    fast-forward but goes through a real merge, and the merged tree is refused just the same."""
    a = victim(cluster)
    attacker = Attacker(cluster)
    a.write("a.txt", "a, before\n")
    a.write("b.txt", "b, before\n")
    wait_for(lambda: {"a.txt", "b.txt"} <= committed_files(a) and a.clean(), what="a and b")
    ready(cluster, a)
    a.stop()
    a.write("local.txt", "saved while the daemon was down\n")
    outside = Outside(cluster, a)
    base = attacker.head()
    good = [e for e in attacker.entries(base) if e[1] not in (b"a.txt", b"b.txt")] + \
        [(BLOB, "a.txt", attacker.blob("a, edited by the push\n"))]
    bad_entries = {"symlink and dir": _symlink_and_dir, "..": _dotdot,
                   ".GIT/config2": _dot_git_upper, "name twice": _twice}[bad](
        attacker, outside.marker)
    hostile = attacker.commit(attacker.tree(good + bad_entries), base, "hostile")
    attacker.push(hostile)
    a.start()  # commits local.txt first, then fetches and merges

    wait_for(lambda: refusal_line(hostile) in a.log() or is_ancestor(a, hostile), timeout=30,
             what=f"a to refuse (or merge) {hostile[:10]}")
    wait_for(lambda: "local.txt" in committed_files(a) and a.clean(), what="local.txt")
    assert_keeps_committing(a, "during.txt")
    # whatever happened, nothing went through a link or outside the work tree
    assert not os.path.islink(a.path / "x") and not os.path.lexists(a.path / ".GIT")
    assert not (cluster.tmp / "evil.txt").exists()
    outside.assert_untouched()
    # and the commit was refused whole, as it is when it would fast-forward
    assert not is_ancestor(a, hostile), (
        f"the hostile commit was merged because the clone had local work (a fast-forward "
        f"to it is refused): {git(a.path, 'ls-tree', 'HEAD', env=a.env)}\n{a.log()}")
    status = wait_refused(a, hostile)
    assert a.read("a.txt") == "a, before\n" and a.read("b.txt") == "b, before\n"
    history = git(a.path, "log", "--format=%H", "--name-status", "HEAD", env=a.env)
    assert "D\tb.txt" not in history
    assert not os.path.lexists(a.path / "x") and not os.path.lexists(a.path / "dup.txt")

    fix = attacker.commit(attacker.tree(good), hostile, "clean again")
    attacker.push(fix)
    wait_for(lambda: is_ancestor(a, fix) and a.read("a.txt") == "a, edited by the push\n",
             timeout=30, what="the clean descendant to merge with a's own work")
    wait_converged([a], cluster.server)
    assert a.read("local.txt") == "saved while the daemon was down\n"
    assert a.read("b.txt") is None
    outside.assert_untouched()
    assert len(refusal_warnings(a, hostile)) == 1, a.log()
    assert_log_sane(a)
    assert_refusal_recorded(a, hostile, status)
    assert not _refused_entries(status_json(a))


# -- 4. no retry loop -----------------------------------------------------------------------------
def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def test_a_refusal_is_logged_once_not_retried_in_a_loop(cluster, mosquitto):  # noqa: F811
    a = victim(cluster)
    attacker = Attacker(cluster)
    ready(cluster, a)
    outside = Outside(cluster, a)
    base = attacker.head()
    evil = attacker.tree(attacker.entries(base) + _twice(attacker, None))
    hostile = attacker.commit(evil, base, "a name twice")
    attacker.push(hostile)
    status = wait_refused(a, hostile)

    # everything that could make it try again: saves (commit, push request), a push request
    # by signal, a reconnect to the broker (a catch-up fetch of the same refused commit)
    assert_keeps_committing(a, "one.txt", "two.txt")
    os.kill(a.pid, signal.SIGUSR1)
    mosquitto.stop()
    wait_for(lambda: status_json(a).get("transport_connected") is False, timeout=30,
             what="a to notice the broker is gone")
    mosquitto.restart()
    wait_for(lambda: status_json(a).get("transport_connected") is True, timeout=60,
             what="a to reconnect (and ask for a catch-up fetch)")

    pid = a.pid
    cpu, lines = _cpu_seconds(pid), len(a.log().splitlines())
    window = time.monotonic() + 2.5  # a bounded observation window, counted once at its end
    wait_for(lambda: time.monotonic() >= window, timeout=5, interval=0.25, what="the window")
    log = a.log()
    assert len(refusal_warnings(a, hostile)) == 1, log
    assert len(log.splitlines()) - lines <= 3, log.splitlines()[lines:]
    assert _cpu_seconds(pid) - cpu < 0.5
    assert a.running() and a.pid == pid
    outside.assert_untouched()
    assert_log_sane(a)
    assert_refusal_recorded(a, hostile, status)


# -- git's own fetch check ------------------------------------------------------------------------
def test_with_fetch_fsck_objects_the_fetch_is_refused_and_nothing_changes(cluster):
    a = victim(cluster, fsck=True)
    attacker = Attacker(cluster)
    ready(cluster, a)
    outside = Outside(cluster, a)
    tree_before = work_tree(a)
    tracking = git(a.path, "rev-parse", "refs/remotes/origin/main", env=a.env)
    base = attacker.head()
    hook = attacker.blob(hook_script(outside.marker))
    evil = attacker.tree(attacker.entries(base) + [
        (LINK, "x", attacker.blob(".git/hooks")),
        (TREE, "x", attacker.tree([(EXEC, "reference-transaction", hook)])),
        (TREE, ".GIT", attacker.tree([(BLOB, "config", attacker.blob("[core]\n"))]))])
    hostile = attacker.commit(evil, base, "refused by fsck")
    attacker.push(hostile)

    status = wait_refused(a, hostile)  # git's fsck said no: nothing was even fetched
    assert_keeps_committing(a, "still-mine.txt")
    assert git(a.path, "rev-parse", "refs/remotes/origin/main", env=a.env) == tracking
    assert subprocess.run(["git", "cat-file", "-e", hostile], cwd=a.path, env=a.env,
                          stderr=subprocess.DEVNULL).returncode != 0
    assert not is_ancestor(a, hostile)
    assert {p: d for p, d in work_tree(a).items() if p != "still-mine.txt"} == tree_before
    outside.assert_untouched()
    assert a.running()
    assert len(refusal_warnings(a, hostile)) == 1, a.log()
    assert_log_sane(a)
    assert_refusal_recorded(a, hostile, status)


# -- 5. local files autosync does not commit never wedge syncing --------------------------------
def _find_kept(clone, content):
    base = clone.path / ".git" / "autosync" / "kept"
    found = [base / p for p, d in listing(base).items()
             if d[0] == "file" and (base / p).read_bytes() == content]
    return found


UNCOMMITTABLE = {  # why: (path the other clone adds, a's own content there (bytes: a file;
    # str: a file of that content inside a directory at the path))
    "too large": ("big.bin", b"local data, never committed\n" * 200),
    "excluded": ("secret.txt", b"my local secret\n"),
    "excluded directory": ("cache", "my local cache\n"),
    "nested repository": ("proj", "a file of my own nested repository\n"),
}


@pytest.mark.parametrize("why", list(UNCOMMITTABLE))
def test_an_uncommittable_local_file_is_kept_aside_and_sync_goes_on(cluster, why):
    a = victim(cluster, **({"maxFileSize": "1k"} if why == "too large" else {}))
    b = cluster.clone("b")
    ready(cluster, a, b)
    name, mine = UNCOMMITTABLE[why]
    if why.startswith("excluded"):
        with open(a.path / ".git" / "info" / "exclude", "a") as f:
            f.write(f"/{name}\n")
    if isinstance(mine, bytes):
        (a.path / name).write_bytes(mine)
    else:
        if why == "nested repository":
            git(a.path, "init", "-q", name, env=a.env)
        (a.path / name).mkdir(exist_ok=True)
        (a.path / name / "inner.txt").write_text(mine)
        mine = mine.encode()
    if why == "too large":
        wait_for(lambda: name in (status_json(a).get("skipped_large") or []), timeout=30,
                 what="a to skip the large file")
    if why == "nested repository":
        wait_for(lambda: name in (status_json(a).get("nested") or []), timeout=30,
                 what="a to see the nested repository")
    a.write("own.txt", "a's own save\n")  # a's daemon is busy and well before b adds it
    wait_for(lambda: "own.txt" in committed_files(a), what="a's own save")
    assert not [f for f in committed_files(a) if f == name or f.startswith(name + "/")]

    b.write(name, "b's version\n")
    wait_for(lambda: (a.path / name).is_file() and a.read(name) == "b's version\n",
             timeout=30, what=f"b's {name} to reach a")
    kept = _find_kept(a, mine)
    assert len(kept) == 1, listing(a.path / ".git" / "autosync" / "kept")
    where = kept[0] if kept[0].name == name else kept[0].parent  # the file, or its directory
    assert where.name == name
    if why == "nested repository":
        assert (where / ".git").is_dir()  # the repository moved whole
    wait_converged([a, b], cluster.server)

    b.write(name, "b's second version\n")  # later edits keep arriving
    b.write("more.txt", "more from b\n")
    wait_for(lambda: a.read(name) == "b's second version\n"
             and a.read("more.txt") == "more from b\n", timeout=30, what="later edits")
    a.write("reply.txt", "a still syncs\n")
    wait_for(lambda: b.read("reply.txt") == "a still syncs\n", timeout=30, what="a's reply")
    wait_converged([a, b], cluster.server)
    assert kept[0].read_bytes() == mine
    assert_log_sane(a)
    st = status_json(a)
    assert any(isinstance(k, dict) and k.get("path") == name
               and os.path.realpath(k.get("where", "")) == os.path.realpath(where)
               for k in st.get("kept") or []), (
        f"`git autosync status --json` has no 'kept' entry for {name}: "
        f"{json.dumps(st, sort_keys=True)}\n(the daemon's state.json: {state_file(a)})")


# -- 6. another branch checked out by hand --------------------------------------------------------
def test_another_branch_is_left_alone_and_switching_back_resumes(cluster):
    a, b = victim(cluster), cluster.clone("b")
    ready(cluster, a, b)
    base = a.head()
    git(a.path, "switch", "-q", "-c", "feature", env=a.env)
    a.write("on-feature.txt", "work on a feature\n")

    def warning():
        text = a.autosync("status").stdout
        return [l for l in text.splitlines() if "warning" in l and "feature" in l]
    try:
        wait_for(warning, timeout=20, what="status to warn about branch 'feature'")
    except AssertionError:
        raise AssertionError("`git autosync status` shows no warning about the other branch:\n"
                             + a.autosync("status").stdout + "\n" + a.log()[-2000:])
    b.write("from-b.txt", "sent while a is on feature\n")
    wait_for(lambda: cluster.server_head() == b.head() != base, what="b's push")
    wait_for(lambda: "not merging" in a.log(), timeout=30,
             what="a to hold back b's commit while on feature")
    assert git(a.path, "rev-parse", "feature", env=a.env) == base
    assert git(a.path, "rev-parse", "main", env=a.env) == base
    assert git(a.path, "log", "--format=%H", "feature", env=a.env) == \
        git(a.path, "log", "--format=%H", base, env=a.env)
    assert a.read("from-b.txt") is None
    assert git(a.path, "status", "--porcelain", env=a.env) == "?? on-feature.txt"
    assert git(a.path, "symbolic-ref", "--short", "HEAD", env=a.env) == "feature"

    git(a.path, "switch", "-q", "main", env=a.env)
    wait_for(lambda: a.read("from-b.txt") == "sent while a is on feature\n", timeout=60,
             what="b's edit once a is back on main")
    a.write("back.txt", "back on main\n")
    wait_for(lambda: b.read("back.txt") == "back on main\n", timeout=60,
             what="a's save to reach b")
    wait_converged([a, b], cluster.server)
    assert git(a.path, "rev-parse", "feature", env=a.env) == base
    assert not warning()
    assert_log_sane(a)
