"""Convergence soak: three clones editing at random, with one fault injected per case.

Each case runs a bare server (with its post-receive hook), mosquitto, and three clones with
`git autosync start`, generates random edits, creates, deletes, renames and same-file
conflicts from all three for --soak-seconds (short in `make test`, longer in `make soak`),
injects its fault in the middle, then stops editing and asserts the guarantees:
- every clone and the server on one commit, byte-identical trees;
- every clone's own files hold exactly what the clone last did to them;
- every version a clone last wrote to a shared file is in history, and no file in the tree
  is lost (at its path or in a conflict copy); no conflict markers; no temp files committed.
"""

import os
import random
import subprocess
import threading
import time

import pytest

from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster, wait_converged
from conftest import git, wait_for

SHARED = [f"shared-{i}.md" for i in range(3)]
TEMP_NAMES = (".swp", ".tmp.", "~", "4913", ".#", "#")


class Editor(threading.Thread):
    """Random work on one clone, recording what the clone last did to each path."""

    def __init__(self, clone, seconds, seed, pause):
        super().__init__(name=f"editor-{clone.name}", daemon=True)
        self.clone, self.seconds, self.pause = clone, seconds, pause
        self.rng = random.Random(seed)
        self.own = {}            # own path -> content (None: deleted)
        self.shared_last = {}    # shared path -> last content written by this clone
        self.writes = 0
        self.error = None
        self.gate = threading.Event()  # cleared while a fault needs the clones quiet
        self.gate.set()

    def content(self):
        self.writes += 1
        return f"{self.clone.name} write {self.writes} {self.rng.random()}\n"

    def step(self):
        c, rng = self.clone, self.rng
        live = [p for p, v in self.own.items() if v is not None]
        op = rng.choices(["create", "edit", "delete", "rename", "shared"],
                         weights=[3, 4, 1, 1, 2])[0]
        if op == "create" or not live:
            path = f"{c.name}/dir{rng.randrange(4)}/f{self.writes}.txt"
            text = self.content()
            c.write(path, text)
            self.own[path] = text
        elif op == "edit":
            path = rng.choice(live)
            text = self.content()
            c.write(path, text)
            self.own[path] = text
        elif op == "delete":
            path = rng.choice(live)
            os.unlink(c.path / path)
            self.own[path] = None
        elif op == "rename":
            path = rng.choice(live)
            new = f"{c.name}/moved/r{self.writes}-{os.path.basename(path)}"
            (c.path / new).parent.mkdir(parents=True, exist_ok=True)
            os.rename(c.path / path, c.path / new)
            self.own[new], self.own[path] = self.own[path], None
            self.writes += 1
        else:
            path = rng.choice(SHARED)
            text = self.content()
            c.write(path, text)
            self.shared_last[path] = text

    def run(self):
        try:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                if not self.gate.wait(timeout=120):
                    raise RuntimeError("paused for more than 120 s")
                self.step()
                time.sleep(self.rng.uniform(0, self.pause))  # pacing the load, not waiting
        except Exception as e:  # reported by the test, not lost in a thread
            self.error = e


def committed_blobs(clone):
    """Every blob content reachable from HEAD, as text (the whole history)."""
    objs = git(clone.path, "rev-list", "--objects", "HEAD", env=clone.env).splitlines()
    ids = "\n".join(o.split()[0] for o in objs) + "\n"
    res = subprocess.run(["git", "cat-file", "--batch"], cwd=clone.path, env=clone.env,
                         input=ids.encode(), stdout=subprocess.PIPE, check=True)
    return res.stdout.decode(errors="replace")


def check_guarantees(clones, editors, server):
    wait_converged(clones, server, timeout=180)
    files = clones[0].files()
    for c in clones[1:]:
        assert c.files() == files, f"{c.name} differs from {clones[0].name}"
    for path, text in files.items():
        assert "<<<<<<<" not in text and ">>>>>>>" not in text, f"conflict markers in {path}"
    history_paths = git(clones[0].path, "log", "--format=", "--name-only", "HEAD",
                        env=clones[0].env).splitlines()
    stray = [p for p in history_paths if any(t in os.path.basename(p) for t in TEMP_NAMES)]
    assert not stray, f"temp files committed: {stray[:5]}"
    history = committed_blobs(clones[0])
    for e in editors:
        for path, text in e.own.items():
            if text is None:
                assert path not in files, f"{path} was deleted by {e.clone.name} but is back"
            else:
                assert files.get(path) == text.rstrip("\n"), \
                    f"{e.clone.name}'s {path} lost its last write"
        for path, text in e.shared_last.items():
            assert text in history, f"{e.clone.name}'s last write to {path} is not in history"
    for path in SHARED:
        versions = [v for k, v in files.items()
                    if k == path or k.startswith(path.rsplit(".", 1)[0] + ".conflict-")]
        if any(path in e.shared_last for e in editors):
            assert versions, f"{path} vanished"


@pytest.fixture
def soak_seconds(request):
    return request.config.getoption("--soak-seconds")


@pytest.fixture
def soak(tmp_path, tenv, toolkit, mosquitto):
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    clones = [cluster.clone(n) for n in ("a", "b", "c")]
    yield cluster, clones
    cluster.stop()


def run_soak(cluster, clones, seconds, fault=None):
    editors = [Editor(c, seconds, seed=i, pause=0.15) for i, c in enumerate(clones)]
    for e in editors:
        e.start()
    if fault is not None:
        time.sleep(seconds / 3)  # the fault lands in the middle of the load, by design
        fault(editors) if fault.__code__.co_argcount else fault()
    for e in editors:
        e.join(seconds + 60)
        assert not e.is_alive(), f"{e.name} did not finish"
        assert e.error is None, f"{e.name}: {e.error!r}"
    check_guarantees(clones, editors, cluster.server)
    for c in clones:
        assert "Traceback" not in c.log()
    return editors


def test_soak_no_fault(soak, soak_seconds):
    cluster, clones = soak
    editors = run_soak(cluster, clones, soak_seconds)
    assert sum(e.writes for e in editors) > 3 * soak_seconds  # the load was real


def test_soak_broker_killed_and_restarted(soak, soak_seconds, mosquitto):
    cluster, clones = soak

    def fault():
        mosquitto.stop()
        time.sleep(soak_seconds / 4)  # down for a while, on purpose
        mosquitto.restart()
    run_soak(cluster, clones, soak_seconds, fault)


def test_soak_server_unreachable_for_a_while(soak, soak_seconds):
    cluster, clones = soak
    away = cluster.server.with_name("notes.git.away")

    def fault():
        os.rename(cluster.server, away)
        try:
            time.sleep(soak_seconds / 4)  # unreachable for a while, on purpose
        finally:
            os.rename(away, cluster.server)
    run_soak(cluster, clones, soak_seconds, fault)


def test_soak_daemon_sigkilled_and_restarted(soak, soak_seconds):
    cluster, clones = soak
    victim = clones[1]

    def fault():
        victim.kill()
        victim.start()
    run_soak(cluster, clones, soak_seconds, fault)


def test_soak_user_runs_git_by_hand(soak, soak_seconds):
    """git commit, git pull and git rebase -i typed by the user while the daemons run."""
    cluster, clones = soak
    user = clones[2]

    def by_hand(*args, **env):
        """The user retries when the daemon holds index.lock, as a person would."""
        for _ in range(50):
            res = subprocess.run(["git", *args], cwd=user.path, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 env=dict(user.env, **env))
            if res.returncode == 0 or "index.lock" not in res.stdout:
                return res
            time.sleep(0.1)
        return res

    def fault(editors):
        for e in editors:  # everyone pauses while the user types git commands
            e.gate.clear()
        try:
            wait_converged(clones, cluster.server, timeout=120)
            user.write("by-hand.txt", "typed by the user\n")
            by_hand("add", "by-hand.txt")
            by_hand("commit", "-q", "-m", "my own commit")
            by_hand("pull", "--no-rebase", "--no-edit", "-q")
            # an interactive rebase that stops to edit: the daemon must stay out of its way
            res = by_hand("rebase", "-i", "HEAD~1", GIT_SEQUENCE_EDITOR="sed -i 1s/^pick/edit/")
            assert res.returncode == 0 and (user.path / ".git" / "rebase-merge").exists(), \
                res.stdout
            head = user.head()
            user.write("during-rebase.txt", "written while the rebase stopped\n")
            # the daemon gets every chance to misbehave here (it must not commit)
            wait_for(lambda: "rebase started by hand" in user.log(), timeout=30,
                     what="the daemon to try, notice the rebase and hold back")
            assert user.head() == head, "the daemon committed in the middle of a rebase"
            res = by_hand("rebase", "--continue", GIT_EDITOR="true")
            assert res.returncode == 0, res.stdout
        finally:
            for e in editors:
                e.gate.set()
    run_soak(cluster, clones, soak_seconds, fault)
    assert "by-hand.txt" in clones[0].files()
    assert "during-rebase.txt" in clones[0].files()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (root only); skipped where it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
            stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_then_freed_loses_nothing(tmp_path, tenv, toolkit, mosquitto, small_disk):
    """Clone b lives on a 16 MB tmpfs that fills up between a save and its commit."""
    from cluster import Clone, install
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    try:
        a = cluster.clone("a")
        b_path = small_disk / "b"
        git(tmp_path, "clone", "-q", str(cluster.server), str(b_path), env=tenv)
        b = Clone(b_path, tenv, toolkit)
        b.config(host="b", **dict(cluster.config, debounce=1500), mqtt_url=mosquitto.url)
        install(toolkit, b_path, tenv)
        cluster.clones.append(b)
        b.start()
        b.write("while-full.txt", "saved just before the disk filled up\n")
        filler = small_disk / "filler"
        with open(filler, "wb") as f:  # fill the disk up to the last block
            try:
                for _ in range(64):
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        a.write("from-a.txt", "arrives while b is full\n")
        wait_for(lambda: cluster.server_head() == a.head(), what="a's push")
        # b must live through its failing commit (debounce 1.5 s) and fetch on a full disk;
        # this window is what is being tested, so it is a deliberate observation period
        end = time.monotonic() + 3
        while time.monotonic() < end:
            assert b.pid and os.path.exists(f"/proc/{b.pid}"), "b died on a full disk"
            time.sleep(0.2)
        os.unlink(filler)
        wait_for(lambda: "while-full.txt" in a.files(), timeout=120,
                 what="b's save to arrive once space is back")
        wait_converged([a, b], cluster.server, timeout=120)
        assert b.read("from-a.txt") == "arrives while b is full\n"
    finally:
        cluster.stop()
