"""Second round of attacks on the issue-12 sync engine: disk full, kill -9 at points of the
new flow, autosync.pull/push=false, users pushing by hand, one file saved by three clones,
the leader going away, branch_only under contention, the echo wait. Real daemons, a real
bare server with its hook, a real mosquitto. Each test states what should happen."""

import json
import os
import signal
import subprocess
import time

import pytest
from test_attacks12 import PRE_RECEIVE  # a server that takes branches and tags only
from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import converged, deadline_loop, git_processes, wait_converged
from conftest import git, mount_tmpfs, wait_for


def dump(clones):
    return "\n".join(f"==== {c.name}\n{c.log()[-3000:]}" for c in clones)


def wait_or_dump(clones, condition, what, timeout=30):
    try:
        return wait_for(condition, timeout=timeout, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{dump(clones)}") from None


def cpu_seconds(pid):
    """utime+stime of pid and its waited-for children (its git processes), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def state(clone):
    try:
        return json.loads((clone.path / ".git" / "autosync" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def traced(clone, name):
    """Restart-free: give clone's next daemon a GIT_TRACE2 file; returns its path."""
    trace = clone.path.parent / f"{clone.name}-{name}.trace"
    clone.env = dict(clone.env, GIT_TRACE2=str(trace))
    return trace


# -- autosync.pull=false with a running daemon ---------------------------------------------------
def test_pull_false_daemon_does_not_spin_once_the_branch_moved_on(cluster):
    """A clone with autosync.pull=false (a publish-only backup of a laptop, say) never
    fetches, so its tracking ref of B goes stale as others push. Its commits go to its own
    ref; the branch cannot be moved by it. It must then stay idle between commits, not
    ls-remote the server in a loop (Network.follow keeps behind_since, so branch_due =
    behind_since + LEADER_GRACE is in the past for good)."""
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    b.config(pull="false")
    trace = traced(b, "pullfalse")
    b.start()
    a.write("from-a.txt", "a\n")
    wait_for(lambda: git(cluster.server, "rev-parse", "main") != git(
        b.path, "rev-parse", "refs/remotes/origin/main"), what="B to move on at the server")
    wait_converged([a], None)
    b.write("from-b.txt", "b\n")
    wait_or_dump([a, b], lambda: a.read("from-b.txt") == "b\n", what="b's edit at a")
    before = git_processes(trace).get("ls-remote", 0)
    cpu0 = cpu_seconds(b.pid)
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 > 6, timeout=10, what="6 idle seconds")
    calls = git_processes(trace).get("ls-remote", 0) - before
    cpu = cpu_seconds(b.pid) - cpu0
    assert calls <= 2 and cpu < 0.5, (
        f"an idle clone with pull=false ran ls-remote {calls} times and used {cpu:.2f} s "
        f"CPU in 6 s\n{b.log()[-2000:]}")


# -- three clones saving one file 10 times a second ----------------------------------------------
COPY_MARK = ".conflict-"


def test_three_clones_saving_one_file_converge_without_copies_of_copies(cluster):
    """The fairness case: three clones write ONE file 10 times a second each for 20 s.
    Afterwards: the same commit and tree everywhere (the server's B too), the file holds one
    clone's final contents, every other version is a conflict copy of that file (never a
    copy of a copy), and CPU stays bounded."""
    clones = [cluster.clone(n) for n in ("a", "b", "c")]
    cpu0 = {c.name: cpu_seconds(c.pid) for c in clones}
    last = {}
    n = 0
    for _ in deadline_loop(20):
        n += 1
        for c in clones:
            last[c.name] = f"{c.name} {n}"
            c.write("shared.txt", last[c.name] + "\n")
        time.sleep(0.1)  # the load's pace (10 saves/s), not a wait for an outcome
    t_end = time.monotonic()
    wait_converged(clones, cluster.server, timeout=60)
    settle = time.monotonic() - t_end
    cpu = {c.name: round(cpu_seconds(c.pid) - cpu0[c.name], 1) for c in clones}
    files = clones[0].files()
    for c in clones[1:]:
        assert c.files() == files
    copies = [p for p in files if COPY_MARK in p]
    nested = [p for p in copies if p.count(COPY_MARK) > 1]
    assert files["shared.txt"] in last.values(), files["shared.txt"]
    finals = set(last.values()) - {files["shared.txt"]}
    kept = {files[p] for p in copies}
    print(f"saves per clone {n}, copies {len(copies)}, settle {settle:.1f}s, cpu {cpu}, "
          f"commits {git(cluster.server, 'rev-list', '--count', 'main')}, merges "
          f"{git(cluster.server, 'rev-list', '--count', '--merges', 'main')}")
    assert not nested, f"{len(nested)} of {len(copies)} conflict copies are copies of copies: {nested[:3]}"
    assert finals <= kept, f"a final save is lost: {finals - kept}"
    assert settle < 15, f"took {settle:.1f}s to converge after the storm"
    assert max(cpu.values()) < 20, f"CPU seconds per clone over 20 s: {cpu}"


# -- the leader goes away ------------------------------------------------------------------------
def contains(repo, commit, ref="main"):
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, ref], cwd=repo,
                          stderr=subprocess.DEVNULL).returncode == 0


@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL])
def test_the_branch_reaches_the_fold_when_the_leader_stops_right_after_pushing(cluster, how):
    """a (first by name, so it leads the fold of a's and b's commits) is stopped as soon as
    both clones' own refs are on the server: b (and c) must move B to the fold themselves
    within LEADER_GRACE and a little, and agree with the server."""
    a, b, c = (cluster.clone(n) for n in ("a", "b", "c"))
    a.write("a.txt", "a\n")
    b.write("b.txt", "b\n")

    def own_refs_have_both():
        out = git(cluster.server, "for-each-ref", "--format=%(objectname)",
                  "refs/autosync/main/", env=cluster.env).split()
        return out and any(git(cluster.server, "ls-tree", "--name-only", o, env=cluster.env)
                           .count("a.txt") for o in out) and any(
            "b.txt" in git(cluster.server, "ls-tree", "--name-only", o, env=cluster.env)
            for o in out)
    wait_or_dump([a, b], own_refs_have_both, what="both own refs on the server")
    # ... and a's announcement out (stopped between its push and its announcement, a is
    # heard of only at the others' next look at the remote, five pollIntervals on:
    # test_engine's test_a_push_nobody_announced_still_arrives)
    wait_or_dump([b, c], lambda: any(" a:" in line and " announced " in line
                                     for line in (b.log() + c.log()).splitlines()),
                 what="a's announcement at b or c")
    pid = a.pid
    os.kill(pid, how)
    try:
        t0 = time.monotonic()
        wait_or_dump([b, c], lambda: b.read("a.txt") == "a\n" and c.read("b.txt") == "b\n",
                     what="both edits at b and c")

        def branch_has_both():
            tree = git(cluster.server, "ls-tree", "--name-only", "main", env=cluster.env)
            return "a.txt" in tree.split() and "b.txt" in tree.split()
        wait_or_dump([b, c], branch_has_both, timeout=12,
                     what="B on the server to reach the fold without its leader")
        took = time.monotonic() - t0
        wait_or_dump([b, c], lambda: converged([b, c], cluster.server), timeout=15,
                     what="b, c and the server on one commit")
        # typically 2.2 s (b takes over after LEAD_MAX); 10.3 s was seen once in a CI run
        # under load: the logs say why next time
        assert took < 12, (f"B reached the fold {took:.1f}s after the leader stopped\n"
                           + "\n".join(f"==== {c.name}\n{c.log()[-2500:]}" for c in (b, c)))
    finally:
        if how == signal.SIGSTOP:
            os.kill(pid, signal.SIGCONT)


def test_the_branch_reaches_the_fold_when_the_leader_stopped_before_the_others_edited(cluster):
    """a pushes its own ref and is stopped (SIGSTOP) before moving B; then b edits. b's fold
    holds a's commit, so a leads it: b must take over after LEADER_GRACE."""
    a, b, c = (cluster.clone(n) for n in ("a", "b", "c"))
    main0 = cluster.server_head()
    a.write("a.txt", "a\n")

    def a_ref_has_it():
        out = git(cluster.server, "for-each-ref", "--format=%(objectname)",
                  "refs/autosync/main/", env=cluster.env).split()
        return any("a.txt" in git(cluster.server, "ls-tree", "--name-only", o,
                                  env=cluster.env).split() for o in out)
    wait_or_dump([a], a_ref_has_it, what="a's own ref on the server", timeout=10)
    pid = a.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        moved = cluster.server_head() != main0
        b.write("b.txt", "b\n")
        t0 = time.monotonic()

        def branch_has_both():
            tree = git(cluster.server, "ls-tree", "--name-only", "main", env=cluster.env)
            return "a.txt" in tree.split() and "b.txt" in tree.split()
        wait_or_dump([b, c], branch_has_both, timeout=15,
                     what=f"B to reach the fold without its leader (moved before: {moved})")
        took = time.monotonic() - t0
        wait_or_dump([b, c], lambda: converged([b, c], cluster.server), timeout=15,
                     what="b, c and the server on one commit")
        assert took < 10, f"B reached the fold {took:.1f}s after b's edit"
    finally:
        os.kill(pid, signal.SIGCONT)


# -- branch_only under contention ----------------------------------------------------------------


def test_branch_only_three_clones_editing_concurrently_converge(cluster):
    """A server that refuses refs/autosync/*: the clones take turns on B. Three clones
    editing their own files 3 times a second for 10 s must converge with every edit, and
    without a storm of rejected pushes or CPU."""
    hook = cluster.server / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)
    clones = [cluster.clone(n) for n in ("a", "b", "c")]
    cpu0 = {c.name: cpu_seconds(c.pid) for c in clones}
    n = 0
    for _ in deadline_loop(10):
        n += 1
        for c in clones:
            c.write(f"{c.name}.txt", f"{c.name} {n}\n")
        time.sleep(0.33)  # the load's pace
    t_end = time.monotonic()
    try:
        wait_converged(clones, cluster.server, timeout=60)
    finally:
        cpu = {c.name: round(cpu_seconds(c.pid) - cpu0[c.name], 1) for c in clones}
        rejected = {c.name: c.log().count("push rejected") for c in clones}
        print(f"edits {n} per clone, settle {time.monotonic() - t_end:.1f}s cpu {cpu} "
              f"rejected {rejected}")
    for c in clones:
        assert clones[0].read(f"{c.name}.txt") == f"{c.name} {n}\n"
    assert max(cpu.values()) < 15, cpu
    assert sum(rejected.values()) < 3 * n, rejected


ROUNDS = 10


# -- users pushing by hand while daemons run -------------------------------------------------------
@pytest.mark.xfail(reason="known, left for later: the daemon's update (checkout.advance) "
                   "does not take git's index.lock, so a `git pull --rebase` started by hand "
                   "in the same instant can fail its final ref update and stop half way",
                   strict=False)
def test_plain_git_users_beside_running_daemons(cluster):
    """A plain clone (no autosync) commits and pushes main by hand while two daemons edit;
    on clone a the user commits by hand, `git pull --rebase`s and `git push origin main`s.
    Everything converges, every file once, nothing lost."""
    a, b = cluster.clone("a"), cluster.clone("b")
    plain = cluster.tmp / "plain"
    git(cluster.tmp, "clone", "-q", str(cluster.server), str(plain), env=cluster.env)
    for i in range(ROUNDS):
        a.write(f"a{i}.txt", f"a {i}\n")
        b.write(f"b{i}.txt", f"b {i}\n")
        (plain / f"p{i}.txt").write_text(f"p {i}\n")
        git(plain, "add", f"p{i}.txt", env=cluster.env)
        git(plain, "commit", "-qm", f"plain {i}", env=cluster.env)
        wait_for(lambda: subprocess.run(
            ["git", "pull", "-q", "--rebase", "origin", "main"], cwd=plain, env=cluster.env,
            capture_output=True).returncode == 0 and subprocess.run(
            ["git", "push", "-q", "origin", "main"], cwd=plain, env=cluster.env,
            capture_output=True).returncode == 0, timeout=30, what="the plain push")
        # the user of clone a, by hand, beside its daemon
        (a.path / f"h{i}.txt").write_text(f"h {i}\n")
        subprocess.run(["git", "add", f"h{i}.txt"], cwd=a.path, env=a.env)
        subprocess.run(["git", "commit", "-qm", f"by hand {i}"], cwd=a.path, env=a.env,
                       capture_output=True)
        subprocess.run(["git", "pull", "-q", "--rebase", "origin", "main"], cwd=a.path,
                       env=a.env, capture_output=True)
        subprocess.run(["git", "push", "-q", "origin", "main"], cwd=a.path, env=a.env,
                       capture_output=True)
    want = {f"{p}{i}.txt": f"{p} {i}" for p in "abph" for i in range(ROUNDS)}
    want["README"] = "shared notes"

    def done():
        return converged([a, b], cluster.server) and all(
            {k: v for k, v in c.files().items() if k in want} == want for c in (a, b))
    wait_or_dump([a, b], done, timeout=60, what="both daemons and the server to converge; a: "
                 + git(a.path, "status", env=a.env, check=False))
    extra = set(a.files()) - set(want)
    assert not extra, f"unexpected files: {extra}"
    for c in (a, b):
        assert not git(c.path, "status", "--porcelain", env=c.env)
        st = c.autosync("status")
        assert "Traceback" not in st.stderr


# -- a full disk -----------------------------------------------------------------------------------
def fill(mnt, leave=0):
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    with open(filler, "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
            while not leave:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.fixture
def mounts(cluster):  # noqa: F811
    made = []

    def mount(path, size="32m"):
        made.append(mount_tmpfs(path, size))
        return path
    yield mount
    cluster.stop()  # first: a daemon whose clone was on a mount went on, unstoppable
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)])


def server_objects_on(cluster, mounts, size):
    """Put the bare server's object store on a small tmpfs of its own (a full volume)."""
    objects = cluster.server / "objects"
    keep = cluster.tmp / "objects-copy"
    subprocess.run(["cp", "-a", str(objects), str(keep)], check=True)
    mounts(objects, size)
    subprocess.run(["cp", "-a", f"{keep}/.", str(objects)], check=True)
    return objects


def test_a_full_disk_on_the_server_is_not_taken_for_a_server_refusing_refs_autosync(
        cluster, mounts):
    """The server's disk fills: git answers a push with 'remote rejected (unpacker error)'.
    That is a transient failure of this push, not a server that takes branches only:
    Remote.push must not switch to branch_only for the rest of the daemon's life."""
    mnt = server_objects_on(cluster, mounts, "8m")
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("first.txt", "1\n")
    wait_or_dump([a, b], lambda: b.read("first.txt") == "1\n", what="the first edit at b")
    filler = fill(mnt)
    (a.path / "big.bin").write_bytes(os.urandom(512 * 1024))
    wait_or_dump([a], lambda: "cannot push" in a.log() or "refuses" in a.log(),
                 what="a's push to fail on the full server disk")
    st = a.autosync("status")
    print(st.stdout)
    filler.unlink()
    wait_or_dump([a, b], lambda: (b.path / "big.bin").exists(), timeout=90,
                 what="a's file at b once the disk has room")
    assert "refuses refs/autosync" not in a.log(), (
        "a full server disk was taken for a server refusing refs/autosync/*:\n"
        + a.log()[-2500:])


def test_a_full_disk_on_a_clone_during_fetch_and_fold_recovers(cluster, mounts):
    """b's disk is full while others push many refs with big files: b's fetch and fold fail.
    Meanwhile: one clear line in status, bounded CPU, b's own saves waiting, no traceback.
    Once there is room: everything converges, no file lost or duplicated."""
    mnt = mounts(cluster.tmp / "b", "48m")
    a = cluster.clone("a")
    b = cluster.clone("b")
    b.write("b-before.txt", "before\n")
    wait_or_dump([a, b], lambda: a.read("b-before.txt") == "before\n", what="b's first edit")
    filler = fill(mnt)
    pid = b.pid
    cpu0 = cpu_seconds(pid)
    plain = cluster.tmp / "plain"
    git(cluster.tmp, "clone", "-q", str(cluster.server), str(plain), env=cluster.env)
    base = git(plain, "rev-parse", "HEAD", env=cluster.env)
    refspecs = []
    for i in range(40):  # 40 other "clones", each with a commit of its own
        (plain / f"r{i}.bin").write_bytes(os.urandom(64 * 1024))
        git(plain, "add", f"r{i}.bin", env=cluster.env)
        git(plain, "commit", "-qm", f"r{i} (host r{i})", env=cluster.env)
        refspecs.append(f"HEAD:refs/autosync/main/r{i}-00000000")
        git(plain, "reset", "-q", "--soft", base, env=cluster.env)
        git(plain, "stash", "-q", env=cluster.env)
    git(plain, "push", "-q", "origin", *refspecs, env=cluster.env)
    a.write("a-during.txt", "during\n")
    wait_or_dump([b], lambda: "No space" in b.log() or "no space" in b.log().lower(),
                 what="b to notice the full disk", timeout=30)
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() - t0 > 8, timeout=12, what="8 s on a full disk")
    cpu = cpu_seconds(pid) - cpu0
    status = b.autosync("status", check=False)
    js = b.autosync("status", "--json", check=False)
    sync = b.autosync("sync", check=False)
    print(status.stdout, status.stderr, sync.returncode, sync.stderr, b.log()[-4000:])
    filler.unlink()
    wait_converged([a, b], cluster.server, timeout=120)
    files = b.files()
    assert files == a.files()
    assert {"a-during.txt", "b-before.txt"} <= set(files)
    assert cpu < 5, f"{cpu:.1f} s CPU in 8 s on a full disk"
    for res in (status, js, sync):
        assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert "space" in status.stdout.lower() or "cannot" in status.stdout.lower(), (
        "status says nothing while every fetch fails on a full disk (state.json cannot be "
        "written, so it shows the state of before):\n" + status.stdout)
    assert sync.returncode == 75, f"a full disk is 'retry later', not 'needs a human': " \
        f"{sync.stderr}"


# -- the echo wait -----------------------------------------------------------------------------
def delay_server_publisher(cluster, seconds):
    hook = cluster.server / "hooks" / "post-receive"
    text = hook.read_text()
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.rstrip().endswith("3<&- &"))
    helper = lines[i].split()[0]
    lines[i] = (f"(sleep {seconds}; {helper} post-receive \"$@\" <&3 >/dev/null 2>&1) "
                "3<&0 >/dev/null 2>&1 &")
    hook.write_text("\n".join(lines) + "\n")


def test_a_server_announcing_late_is_not_silence(cluster):
    """The server's hook announces 8 s after each push (a slow broker, a busy host): the
    pusher announces after ECHO_WAIT itself; b hears of every push within ~6 s, twice at
    worst, and a burst of pushes (each replacing the echo awaited) is not silenced."""
    delay_server_publisher(cluster, 8)
    a, b = cluster.clone("a"), cluster.clone("b")
    t0 = time.monotonic()
    a.write("one.txt", "1\n")
    wait_or_dump([a, b], lambda: b.read("one.txt") == "1\n", timeout=7.5,
                 what="a's edit at b before the late announcement")
    assert time.monotonic() - t0 < 7.5
    for i in range(6):  # pushes 0.5 s apart: each replaces the echo a waits for
        a.write(f"burst{i}.txt", f"{i}\n")
        t = time.monotonic()
        wait_for(lambda: time.monotonic() - t > 0.5, what="pace")
    t0 = time.monotonic()
    wait_or_dump([a, b], lambda: b.read("burst5.txt") == "5\n", timeout=7.5,
                 what="the burst at b before the late announcement")


def test_a_broker_restart_right_after_a_push_is_caught_up(cluster, mosquitto):  # noqa: F811
    """The broker goes away right after a's push (before anyone announced it) and comes
    back: b must still get a's edit (the transport's reconnect asks for a fetch)."""
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("x0.txt", "0\n")
    wait_or_dump([a, b], lambda: b.read("x0.txt") == "0\n", what="a first edit")
    head = cluster.server_head()
    a.write("x1.txt", "1\n")
    wait_for(lambda: git(cluster.server, "for-each-ref", "--contains", a.head(),
                         "refs/autosync/main/", env=cluster.env, check=False) != "" and a.clean(),
             what="a's push")
    mosquitto.stop()
    mosquitto.start()
    wait_or_dump([a, b], lambda: b.read("x1.txt") == "1\n", timeout=20,
                 what="a's edit at b across the broker restart")
    assert head


# -- kill -9 at random points of the flow --------------------------------------------------------
def test_kill_9_again_and_again_while_others_edit_loses_nothing(cluster):
    """b is SIGKILLed 8 times at staggered moments (after a fetch, in a fold, between its
    own ref and B) while a and c edit one shared file and files of their own, and b edits
    too; restarted each time. Then: one commit everywhere, every file of everyone there
    once, the shared file one of the final saves."""
    import random
    rnd = random.Random(12)
    a, b, c = (cluster.clone(n) for n in ("a", "b", "c"))
    for k in range(8):
        for cl in (a, b, c):
            cl.write(f"{cl.name}{k}.txt", f"{cl.name} {k}\n")
            cl.write("shared.txt", f"{cl.name} {k}\n")
        t = time.monotonic()
        pause = rnd.uniform(0.05, 0.6)
        wait_for(lambda: time.monotonic() - t > pause, what="a random moment")
        b.kill()
        b.start()
    wait_converged([a, b, c], cluster.server, timeout=60)
    files = a.files()
    for cl in (a, b, c):
        for k in range(8):
            assert files.get(f"{cl.name}{k}.txt") == f"{cl.name} {k}", (cl.name, k)
    assert files["shared.txt"] in {f"{n} 7" for n in "abc"}
    assert not [p for p in files if p.count(".conflict-") > 1]
    assert not (b.path / ".git" / "autosync" / "update").exists()


# -- autosync.push=false / pull=false with sync ----------------------------------------------------
def test_push_false_and_pull_false_sync_and_status(cluster):
    """push=false: the daemon commits, pushes nothing, status counts the unpushed commits;
    `sync` pushes nothing. pull=false: `sync` pushes the clone's own ref and, with B moved
    on, says so in one line, no traceback; turning push back on, everything converges."""
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    b.config(push="false")
    b.start()
    b.write("b1.txt", "1\n")
    wait_for(lambda: "b1.txt" in b.files(), what="b's commit")
    wait_for(lambda: "unpushed:      1 commits" in b.autosync("status").stdout,
             what="status to count the unpushed commit")
    b.stop()
    res = b.autosync("sync", check=False)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "b1.txt" not in git(cluster.server, "ls-tree", "-r", "--name-only", "--all" if False
                               else "main", env=cluster.env)
    a.write("a1.txt", "1\n")
    wait_for(lambda: "a1.txt" in git(cluster.server, "ls-tree", "--name-only", "main",
                                     env=cluster.env), what="a's edit on B")
    b.config(push="true", pull="false")
    b.write("b2.txt", "2\n")
    res = b.autosync("sync", check=False)
    print(res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    on_server = git(cluster.server, "for-each-ref", "--contains", b.head(),
                    "refs/autosync/main/", env=cluster.env, check=False)
    assert "bringing it in" not in res.stderr, "pull=false: sync must not promise to fetch"
    assert not (on_server and "cannot push" in res.stderr), (
        f"b's commit is on the server ({on_server}), yet sync says it cannot push:\n"
        f"{res.stderr}")
    b.config(pull="true")
    b.start()
    wait_converged([a, b], cluster.server, timeout=30)
    assert {"a1.txt", "b1.txt", "b2.txt"} <= set(a.files())
