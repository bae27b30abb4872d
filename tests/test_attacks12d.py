"""Fourth round of attacks on the issue-12 sync protocol (folding in a slow folder's stead by
turn, the SIGPIPE'd push re-asked, the connected clone's own polls, a push that moved B but not
the clone's ref). Real daemons started with `git autosync start`, a real bare server with its
hook, a real mosquitto on loopback; the attacker is a plain clone with push access, or an
unlucky user. Each test's docstring says what the attack is and what must hold."""


import os

import pytest
from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import Cluster, wait_converged
from conftest import git, wait_for
from test_attacks12 import Pusher, own_ref, wait_or_dump


def test_many_names_at_one_commit_do_not_hold_every_fold_for_ever(cluster):  # noqa: F811
    """Turns to fold in a slow folder's stead go by name, LEAD_MAX each, with no cap. Anyone
    with push access puts one commit of theirs under 300 clone names that sort before every
    real clone: a clone then waits 300 turns (10 minutes) before it folds, and two
    concurrent saves reach nobody meanwhile. They must cross in seconds."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("one.txt", "1\n")
    wait_for(lambda: b.read("one.txt") == "1\n", what="a's first edit at b")
    atk = Pusher(cluster)
    first = atk.out("rev-list", "--max-parents=0", "HEAD")  # (none of the clones' work)
    squat = atk.out("commit-tree", f"{first}^{{tree}}", "-p", first, "-m", "squat")
    atk.push(*(f"{squat}:refs/autosync/main/!-squat-{i:03d}" for i in range(300)))
    b.stop()  # two saves at once: b's made while it is away, a's pushed meanwhile
    a.write("two.txt", "2\n")
    wait_for(lambda: git(cluster.server, "rev-parse", own_ref(cluster, a), env=cluster.env)
             == a.head() and "two.txt" in a.files(), what="a's save on the server")
    b.write("three.txt", "3\n")
    b.start()
    wait_or_dump([a, b], lambda: b.read("two.txt") == "2\n" and a.read("three.txt") == "3\n",
                 timeout=30, what="two saves crossing beside 300 squatting names")
    wait_converged([a, b])

def test_turns_to_fold_in_the_stead_are_bounded(make_repo, tmp_path, tenv):
    """The same with 300 names each at a commit of its own (one pusher can make as many):
    a clone's turn, LEAD_MAX seconds each, is at most MAX_TURNS, with a say or without."""
    from autosync.git import Repo
    from autosync.sync import MAX_TURNS, Engine
    work = make_repo("work")
    base, tree = git(work, "rev-parse", "HEAD"), git(work, "rev-parse", "HEAD^{tree}")
    junk = [git(work, "commit-tree", tree, "-p", base, "-m", f"squat {i}") for i in range(300)]
    git(work, "update-ref", "--stdin", input="".join(
        f"update refs/autosync/remotes/origin/main/!-squat-{i:03d} {c}\n"
        for i, c in enumerate(junk)).encode())
    git(work, "commit", "-q", "--allow-empty", "-m", "a save")
    git(work, "remote", "add", "origin", str(tmp_path / "nowhere.git"))
    remote = Engine(Repo(str(work))).remote
    assert remote is not None
    assert remote.rank(junk, True) <= MAX_TURNS  # (with a say: a save of its own)
    assert remote.rank(junk[:1], False) <= MAX_TURNS  # (without)


def test_a_non_commit_at_a_clones_own_ref_does_not_silence_it(cluster):  # noqa: F811
    """Anyone with push access can put a blob at a clone's own ref (the names are listed on
    the server). git refuses to move a ref from a non-commit without force: each push of
    the clone's ref failed ('needs force'), for good, and its saves reached nobody. Only
    this clone writes that ref: its saves must keep reaching the others."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("one.txt", "1\n")
    wait_for(lambda: b.read("one.txt") == "1\n", what="a's first edit at b")
    mine = own_ref(cluster, a)
    atk = Pusher(cluster)
    atk.push(f"+{atk.blob('not a commit')}:{mine}")
    b.stop()  # two saves at once: b's made while it is away, a's pushed meanwhile
    a.write("two.txt", "2\n")
    b.write("three.txt", "3\n")
    b.start()
    wait_or_dump([a, b], lambda: b.read("two.txt") == "2\n" and a.read("three.txt") == "3\n",
                 timeout=30, what="two saves crossing with a blob at a's own ref")
    wait_converged([a, b])
    assert git(cluster.server, "cat-file", "-t", mine, env=cluster.env) == "commit"



@pytest.mark.parametrize("interval", ["0", "99999999999"])
def test_a_poll_interval_at_its_limits_is_refused_in_one_line(tmp_path, tenv, toolkit, interval):
    """autosync.pollInterval 0 in this clone's own config had the daemon ask the remote in
    a loop (a core's worth of git ls-remote, connected or not); one past threading's
    TIMEOUT_MAX (292 years) killed its network thread with a traceback in the log: it ran
    on, said it was running, and synced no more. Either is refused when the daemon starts,
    in one line with its fix."""
    cl = Cluster(tmp_path, tenv, toolkit)
    a = cl.clone("a", start=False)
    a.config(pollInterval=interval)
    try:
        res = a.autosync("start", check=False)
        assert res.returncode != 0 and not a.running(), (res.stdout, res.stderr, a.log())
        assert res.stderr.splitlines() == [
            f"git-autosync: config value '{interval}' for 'autosync.pollInterval' is not in "
            "1..31622400 seconds", "hint: git config autosync.pollInterval 60"], res.stderr
    finally:
        cl.stop()


def test_a_hanging_server_leaves_no_process_behind(make_repo, tmp_path, env, monkeypatch):
    """A server that hangs mid-fetch (here an upload-pack that sleeps; a stalled ssh does the
    same): git is killed after NETWORK_TIMEOUT, and what it started was left running, one
    more at every retry for as long as the server hangs. Nothing may be left."""
    from autosync import sync
    from autosync.git import Repo
    from autosync.sync import Engine
    from autosync.util import Retry
    seed = make_repo("seed")
    server, work = tmp_path / "srv.git", tmp_path / "work"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    git(tmp_path, "clone", "-q", str(server), str(work))
    wrapper = tmp_path / f"hanging-upload-pack-{os.getpid()}"
    wrapper.write_text("#!/bin/sh\nsleep 1000\n")
    wrapper.chmod(0o755)
    git(work, "config", "remote.origin.uploadpack", str(wrapper))
    monkeypatch.setattr(sync, "NETWORK_TIMEOUT", 1)
    remote = Engine(Repo(str(work))).remote
    assert remote is not None
    for _ in range(3):
        with pytest.raises(Retry, match="took longer than 1s"):
            remote.fetch()

    def running():
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(wrapper).encode() in f.read():
                        found.append(pid)
            except OSError:
                pass
        return found
    wait_for(lambda: not running(), timeout=5, what="no process of the hung fetches left")


def test_a_push_that_moved_b_but_lost_the_clones_ref_is_still_its_outcome(make_repo,
                                                                            tmp_path):
    """A push moves B and this clone's own ref together. A peer with push access had put
    another commit at that ref (or a `sync` of this clone pushed meanwhile): git refuses
    the ref ('fetch first') and takes B. The push raised Rejected: B's move, this clone's
    save, went unannounced (late, until a later push announced something holding it). The
    push's outcome is B moved to the save."""
    from autosync.git import Repo
    from autosync.sync import Remote
    server = make_repo("server.git", bare=True)
    r = make_repo("r")
    git(r, "remote", "add", "origin", str(server))
    git(r, "push", "-q", "origin", "main")
    remote = Remote(Repo(r), "origin", "main", "me")
    remote.fetch()
    (r / "a.txt").write_text("1\n")
    git(r, "add", "a.txt")
    git(r, "commit", "-qm", "one")
    first = remote.push(branch="any")
    assert first.commit == git(r, "rev-parse", "HEAD") and first.branch, first
    peer = tmp_path / "peer"
    git(tmp_path, "clone", "-q", str(server), str(peer))
    (peer / "p.txt").write_text("peer\n")
    git(peer, "add", "p.txt")
    git(peer, "commit", "-qm", "peer")
    git(peer, "push", "-q", "-f", "origin", "HEAD:refs/autosync/main/me")
    (r / "a.txt").write_text("2\n")
    git(r, "commit", "-qam", "two")
    second = remote.push(branch="any")  # (raised Rejected)
    save = git(r, "rev-parse", "HEAD")
    assert git(server, "rev-parse", "main") == save
    assert second.commit == save and second.branch and not second.lost_race, second
