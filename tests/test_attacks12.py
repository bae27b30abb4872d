"""Attacks on the issue-12 sync engine (a ref per clone under refs/autosync/B/, the fold of
all tips, one announcement per push). Real daemons, a real bare server with its hook, a
real mosquitto; the attacker is a plain clone with push access that runs no autosync.

Every test states what should happen. Tests 1-6 and 9 fail on the code they were written
against (real problems); 7, 8, 10 and 11 pass (attacks it withstood, kept as guards).
"""

import subprocess
import time

import pytest
from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import Cluster, Pipeline, wait_converged
from conftest import git, wait_for

from autosync.daemon import LEAD_DELAY


class Pusher:
    """A plain clone (no autosync) that pushes whatever it likes wherever it may."""

    def __init__(self, cluster, name="attacker"):
        self.env = cluster.env
        self.path = cluster.tmp / name
        git(cluster.tmp, "clone", "-q", str(cluster.server), str(self.path), env=self.env)

    def run(self, *args, input=None, check=True):
        res = subprocess.run(["git", *args], cwd=self.path, env=self.env, input=input,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check:
            assert res.returncode == 0, f"git {args}: {res.stderr.decode(errors='replace')}"
        return res

    def out(self, *args, input=None):
        return self.run(*args, input=input).stdout.decode().strip()

    def blob(self, text):
        return self.out("hash-object", "-w", "--stdin", input=text.encode())

    def push(self, *refspecs):
        return self.run("push", "-q", "origin", *refspecs)


def wait_or_dump(clones, condition, what, timeout=30):
    """wait_for, and on failure the tail of every clone's log in the message."""
    try:
        return wait_for(condition, timeout=timeout, what=what)
    except AssertionError as e:
        logs = "\n".join(f"==== {c.name}\n{c.log()[-2500:]}" for c in clones)
        raise AssertionError(f"{e}\n{logs}") from None


def server_refs(cl):
    out = git(cl.server, "for-each-ref", "--format=%(refname) %(objectname)", env=cl.env)
    return dict(line.split() for line in out.splitlines())


def own_ref(cl, clone):
    """The server's ref for clone (refs/autosync/main/<host>-<8 hex>)."""
    refs = [r for r in server_refs(cl) if r.startswith(f"refs/autosync/main/{clone.name}-")]
    return refs[0] if refs else None


# -- 1. a tip that is not a commit -------------------------------------------------------------
@pytest.mark.parametrize("what", ["blob", "tree", "tag-of-blob"])
def test_a_non_commit_under_refs_autosync_does_not_stop_syncing(cluster, what):
    """Anyone with push access can put any object under refs/autosync/main/. It is not a
    clone's work: it must be left out, and the clones' own work must keep flowing."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("before.txt", "before\n")
    wait_for(lambda: b.read("before.txt") == "before\n", what="the first edit at b")
    atk = Pusher(cluster)
    obj = atk.blob("not a commit\n")
    if what == "tree":
        obj = atk.out("rev-parse", "HEAD^{tree}")
    elif what == "tag-of-blob":
        obj = atk.out("mktag", input=(f"object {obj}\ntype blob\ntag t\n"
                                       "tagger T <t@example.invalid> 0 +0000\n\nt\n").encode())
    atk.push(f"{obj}:refs/autosync/main/zz-evil")
    b.write("after.txt", "after\n")
    a.write("also.txt", "also\n")
    wait_or_dump([a, b], lambda: a.read("after.txt") == "after\n"
                 and b.read("also.txt") == "also\n",
                 what="both clones' edits to cross despite the non-commit ref")
    res = a.autosync("status", check=False)
    assert res.returncode == 0, res.stderr


# -- 2. flooding the namespace (MAX_TIPS) --------------------------------------------------------
def test_a_flood_of_clone_refs_does_not_hide_the_branch_and_the_real_clones(cluster):
    """300 refs that sort before every real clone's name, all at an old commit: cheap to
    push, and MAX_TIPS must not let them push the branch and the real clones out of view."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("before.txt", "before\n")
    wait_for(lambda: b.read("before.txt") == "before\n", what="the first edit at b")
    atk = Pusher(cluster)
    old = atk.out("rev-parse", "HEAD")
    atk.push(*(f"{old}:refs/autosync/main/0-flood-{i:04d}" for i in range(300)))
    b.write("after.txt", "after\n")
    wait_or_dump([a, b], lambda: a.read("after.txt") == "after\n",
                 what="b's edit at a despite the flood")


# -- 3. an amended autosync merge ------------------------------------------------------------------
def test_amending_an_autosync_merge_does_not_lose_the_amendment(cluster):
    """local_side takes any merge whose author is git-autosync@localhost for a fold that
    stands for its parents. `git commit --amend` keeps the author: a user who amends the
    merge autosync made (to add or fix a file) has made a commit of their own."""
    a, b = (cluster.clone(n, start=False) for n in ("a", "b"))
    a.write("a.txt", "a\n")
    a.autosync("sync")
    b.write("b.txt", "b\n")
    b.autosync("sync")  # b folds a's tip with its own: HEAD is an autosync merge
    a.autosync("sync")
    assert git(a.path, "log", "-1", "--format=%ae %P", env=a.env).startswith(
        "git-autosync@localhost "), "setup: a's HEAD should be an autosync merge"
    a.write("amended.txt", "the user's own work\n")
    git(a.path, "add", "amended.txt", env=a.env)
    git(a.path, "commit", "-q", "--amend", "--no-edit", env=a.env)  # keeps the author
    amended = a.head()
    a.autosync("sync")
    holders = git(a.path, "for-each-ref", "--contains", amended, "--format=%(refname)",
                  env=a.env)
    assert a.read("amended.txt") == "the user's own work\n", (
        f"the amended file is gone from the work tree; HEAD {a.head()[:10]}, the amended "
        f"commit {amended[:10]} is in no ref ({holders!r}), only in the reflog")
    assert "amended.txt" in a.files()
    b.autosync("sync")
    assert b.read("amended.txt") == "the user's own work\n"


# -- 4. a server that refuses refs outside refs/heads -------------------------------------------
PRE_RECEIVE = """#!/bin/sh
# like a hosting service that takes branches and tags only
while read old new ref; do
    case "$ref" in refs/heads/*|refs/tags/*) ;; *) echo "refusing $ref" >&2; exit 1;; esac
done
exit 0
"""


def test_a_server_that_refuses_refs_autosync_still_gets_the_branch(cluster):
    """'Any plain bare repository works': a hosting service that accepts only branches must
    still get each clone's work on the branch (the ref per clone is an optimisation)."""
    hook = cluster.server / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("from-a.txt", "a\n")
    wait_or_dump([a, b], lambda: b.read("from-a.txt") == "a\n",
                 what="a's edit at b through a server refusing refs/autosync/*")


# -- 5. the server says it announces, and its publisher cannot -----------------------------------
def test_a_server_whose_publisher_fails_does_not_silence_every_push(tmp_path, tenv, toolkit,
                                                                      mosquitto):  # noqa: F811
    """The post-receive shim prints 'autosync: announcing' as soon as autosync.mqtt.url is
    set on the server, whether or not its publisher can reach a broker (a wrong URL, a
    password file the hook cannot read, an ACL). The pusher then stays silent and, the
    transport being connected, nobody polls: the other clones never hear of the push."""
    cl = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    try:
        # the server's own view of the broker is wrong: a port nobody listens on
        from conftest import free_port
        git(cl.server, "config", "autosync.mqtt.url", f"mqtt://127.0.0.1:{free_port()}",
            env=tenv)
        a, b = cl.clone("a"), cl.clone("b")
        wait_for(lambda: '"transport_connected": true' in
                 (b.path / ".git/autosync/state.json").read_text(), what="b's transport")
        a.write("x.txt", "x\n")
        wait_or_dump([a, b], lambda: b.read("x.txt") == "x\n", timeout=20,
                     what="a's edit at b (announced by someone)")
    finally:
        cl.stop()


# -- 6. a refused ref turns --prune off; a ref that moves to a name below another wedges fetch ----
def literal_tree(pusher, entries):
    """A tree object with exactly these (mode, name, oid) entries, duplicates kept, written
    without git's checks (git's fsck calls a duplicate entry an error)."""
    data = b"".join(f"{mode} {name}".encode() + b"\0" + bytes.fromhex(oid)
                    for mode, name, oid in sorted(entries, key=lambda e: e[1]))
    return pusher.out("hash-object", "-t", "tree", "-w", "--literally", "--stdin", input=data)


def test_a_refused_ref_and_a_renamed_ref_do_not_wedge_every_fetch(cluster):
    """fetch.fsckObjects (autosync's default) refuses one clone ref: Remote.fetch then
    fetches without --prune. A ref deleted on the server and created again one level
    down (refs/autosync/main/z -> refs/autosync/main/z/y: a plain rename by whoever owns
    it) no longer fits beside the stale local copy, and git refuses the whole fetch."""
    git(cluster.server, "config", "receive.fsckObjects", "false", env=cluster.env)
    a, b = cluster.clone("a"), cluster.clone("b")
    atk = Pusher(cluster)
    base = atk.out("rev-parse", "HEAD")
    blob = atk.blob("x\n")
    bad = atk.out("commit-tree", literal_tree(atk, [("100644", "dup", blob),
                                                    ("100644", "dup", blob)]),
                  "-p", base, "-m", "duplicate entries")
    atk.push(f"{bad}:refs/autosync/main/bad")
    wait_or_dump([a], lambda: "refusing commit" in a.log(), what="a to refuse the bad ref")
    good = atk.out("commit-tree", "HEAD^{tree}", "-p", base, "-m", "an ordinary commit")
    atk.push(f"{good}:refs/autosync/main/z")
    wait_or_dump([a], lambda: git(a.path, "for-each-ref", "refs/autosync/remotes/origin/main/z",
                                  env=a.env), what="a to fetch refs/autosync/main/z")
    atk.push(":refs/autosync/main/z")
    atk.push(f"{good}:refs/autosync/main/z/y")
    b.write("after.txt", "after\n")
    wait_or_dump([a, b], lambda: a.read("after.txt") == "after\n",
                 what="b's edit at a after the rename")


# -- 7. a branch with a slash in its name ---------------------------------------------------------
def test_a_branch_name_with_slashes_syncs(tmp_path, tenv, toolkit, mosquitto):  # noqa: F811
    cl = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url, branch="team/notes")
    try:
        git(cl.server, "branch", "team/notes", "main", env=tenv)
        a, b = (cl.clone(n, start=False) for n in ("a", "b"))
        for c in (a, b):
            git(c.path, "switch", "-q", "team/notes", env=tenv)
            c.start()
        a.write("a.txt", "a\n")
        b.write("b.txt", "b\n")
        wait_or_dump([a, b], lambda: a.read("b.txt") == "b\n" and b.read("a.txt") == "a\n",
                     what="both edits on team/notes")
        wait_converged([a, b])
        refs = server_refs(cl)
        assert any(r.startswith("refs/autosync/team/notes/a-") for r in refs), refs
    finally:
        cl.stop()


# -- 8. a ref squatting one level below a clone's own ref ----------------------------------------
@pytest.mark.parametrize("settled", [False, True])
def test_a_ref_below_a_clones_name_does_not_stop_its_pushes_for_good(cluster, settled):
    """Whoever can push can create refs/autosync/main/<a's name>/x (the names are listed
    on the server): a's own ref can then never be written. Its pushes fail forever and
    status reports a push error for good.
    settled: the next save comes LEAD_DELAY after a's last push, so that push moves B as well
    as a's ref; B went through, the ref did not, and the push made again to B alone found
    nothing left to do: nothing was announced, and b never heard of the save."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("one.txt", "1\n")
    wait_for(lambda: b.read("one.txt") == "1\n", what="a's first edit at b")
    mine = own_ref(cluster, a)
    assert mine
    atk = Pusher(cluster)
    old = atk.out("rev-parse", "HEAD")
    atk.push(f":{mine}")
    atk.push(f"{old}:{mine}/x")
    if settled:  # (a pace, as a user's: the next save is no part of a burst)
        end = time.monotonic() + 2 * LEAD_DELAY
        wait_for(lambda: time.monotonic() >= end, what="a pause after the first push")
    a.write("two.txt", "2\n")
    wait_or_dump([a, b], lambda: b.read("two.txt") == "2\n", what="a's second edit at b")
    a.write("three.txt", "3\n")
    wait_or_dump([a, b], lambda: b.read("three.txt") == "3\n", what="a's third edit at b")
    # every edit got through (on the branch): status must not report a push error for good
    state = a.path / ".git" / "autosync" / "state.json"
    wait_or_dump([a], lambda: '"push_error": null' in state.read_text(), timeout=20,
                 what="a's push error to clear once its edits are on the branch")


# -- 9. status and sync with a non-commit tip ------------------------------------------------------
def test_one_shot_sync_survives_a_blob_under_refs_autosync(cluster):
    """`git autosync sync` (and the push helper) fold the tips like the daemon: one blob
    under refs/autosync/main/ makes every one-shot sync fail; status must keep reporting."""
    a = cluster.clone("a", start=False)
    atk = Pusher(cluster)
    atk.push(f"{atk.blob('junk')}:refs/autosync/main/zz-evil")
    a.write("mine.txt", "mine\n")
    sync = a.autosync("sync", check=False)
    status = a.autosync("status", check=False)
    # status exits 3 here: no daemon runs (its documented code); it must still report
    assert "Traceback" not in status.stderr and "failed" not in status.stderr, status.stderr
    assert "unpushed:" in status.stdout, (status.returncode, status.stdout, status.stderr)
    assert sync.returncode == 0, sync.stderr


# -- 10. a crash between the fold and the push ----------------------------------------------
def test_kill_9_after_a_fold_before_its_push_converges(cluster):
    a, b = (cluster.clone(n, start=False) for n in ("a", "b"))
    a.write("a.txt", "a\n")
    a.autosync("sync")
    b.write("b.txt", "b\n")
    b.config(push="false")  # b folds and does not push: the moment of a crash before it
    b.autosync("sync")
    b.start()
    b.config(push="true")
    b.kill()
    a.start()
    b.start()
    wait_converged([a, b], cluster.server, timeout=30)
    assert {"a.txt", "b.txt"} <= set(a.files())


# -- 11. the watch | commit pipeline with odd names -----------------------------------------------
def test_the_pipeline_with_odd_names(cluster):
    a = cluster.clone("a", start=False)
    b = cluster.clone("b")
    names = ["-n.txt", "--all", "new\nline.txt", "sub dir/.", "sub dir/x y.txt"]
    pipeline = Pipeline(a)
    try:
        for n in names:
            if not n.endswith("/."):
                a.write(n, f"{n}\n")
        wait_or_dump([a, b], lambda: all(b.read(n) == f"{n}\n" for n in names
                                         if not n.endswith("/.")),
                     timeout=60, what="every odd name at b")
    finally:
        code, out, err = pipeline.close()
    assert code == 0, err
    assert b"Traceback" not in err
