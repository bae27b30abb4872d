"""The last push made by anyone (issue 13.3): pushlog.record/last, and what status shows.

The daemon keeps its own last_push in state.json; `git autosync sync` and the hook's push
helper record theirs in $GIT_DIR/autosync/last-push.json (every push does, from
sync.Remote.push). status shows the newer of the two, whether a daemon runs or not.
"""

import errno
import json
import logging
import os
import subprocess
import time

import pytest

from autosync import pushlog
from autosync.git import Repo
from conftest import git

A, B = "a" * 40, "b" * 40


def status(env, repo, *args):
    return subprocess.run(["git", "autosync", "status", *args], cwd=repo, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def test_record_then_last(env, make_repo):
    repo = Repo(str(make_repo("r")))
    assert pushlog.last(repo) is None
    before = time.time()
    pushlog.record(repo, A)
    got = pushlog.last(repo)
    assert got is not None and got["commit"] == A and before <= got["time"] <= time.time()
    pushlog.record(repo, B)
    assert pushlog.last(repo)["commit"] == B
    leftovers = sorted(os.listdir(repo.state_dir))
    assert leftovers == ["last-push.json", "last-push.json.lock"], leftovers


@pytest.mark.parametrize("content", [
    b"", b"{", b"null", b"[]", b'"x"', b'{"commit": "a"}',
    b'{"commit": "' + b"z" * 40 + b'", "time": 1}',
    b'{"commit": "' + A.encode() + b'", "time": "yesterday"}',
    b'{"commit": "' + A.encode() + b'", "time": NaN}',
    b'{"commit": "' + A.encode() + b'", "time": true}',
    b'{"commit": "' + A.encode() + b'", "time": 1, "pad": "' + b"x" * 5000 + b'"}',
    b"\xff\xfe garbage",
])
def test_last_takes_garbage_for_no_record(env, make_repo, content):
    repo = Repo(str(make_repo("r")))
    os.makedirs(repo.state_dir, exist_ok=True)
    with open(pushlog.path(repo), "wb") as f:
        f.write(content)
    assert pushlog.last(repo) is None


def test_last_does_not_follow_a_symbolic_link(env, make_repo, tmp_path):
    repo = Repo(str(make_repo("r")))
    os.makedirs(repo.state_dir, exist_ok=True)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"commit": A, "time": 1.0}))
    os.symlink(elsewhere, pushlog.path(repo))
    assert pushlog.last(repo) is None


def test_a_full_disk_changes_nothing_and_logs_nothing(env, make_repo, monkeypatch, caplog):
    repo = Repo(str(make_repo("r")))
    pushlog.record(repo, A)
    with open(pushlog.path(repo), "rb") as f:
        kept = f.read()
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", full)
    with caplog.at_level(logging.DEBUG):
        pushlog.record(repo, B)  # must not raise
    monkeypatch.undo()
    assert caplog.records == []
    with open(pushlog.path(repo), "rb") as f:
        assert f.read() == kept
    assert not [n for n in os.listdir(repo.state_dir) if n.endswith(".tmp")]
    assert pushlog.last(repo)["commit"] == A


def test_newest():
    old, new = {"commit": A, "time": 100.0}, {"commit": B, "time": 200}
    assert pushlog.newest(old, new) == new and pushlog.newest(new, old) == new
    assert pushlog.newest(None, old) == old and pushlog.newest(None, None) is None
    assert pushlog.newest({"commit": "x", "time": 300}, old) == old
    assert pushlog.newest("garbage", [1], old) == old


def write_state(repo, last_push):
    os.makedirs(repo.state_dir, exist_ok=True)
    with open(os.path.join(repo.state_dir, "state.json"), "w") as f:
        json.dump({"pid": None, "last_push": last_push}, f)


def write_pushlog(repo, commit, when):
    with open(pushlog.path(repo), "w") as f:
        json.dump({"commit": commit, "time": when}, f)


def test_status_shows_the_newer_of_the_daemons_push_and_the_others(tenv, make_repo):
    path = make_repo("r")
    repo = Repo(str(path))
    now = time.time()
    write_state(repo, {"commit": A, "time": now - 3600})
    write_pushlog(repo, B, now - 60)  # a `sync` after the daemon stopped
    res = status(tenv, path)
    assert res.returncode == 3, res.stderr  # not running: shown all the same
    assert f"last push:     1 min ago  {B[:10]}" in res.stdout, res.stdout
    assert json.loads(status(tenv, path, "--json").stdout)["last_push"]["commit"] == B
    write_state(repo, {"commit": A, "time": now - 5})  # the daemon pushed since
    assert f"{A[:10]}" in status(tenv, path).stdout
    write_pushlog(repo, "not an id", now)  # garbage: the daemon's stays
    assert f"{A[:10]}" in status(tenv, path).stdout
    write_state(repo, "garbage")
    assert "last push:     never" in status(tenv, path).stdout


def test_status_shows_a_push_made_by_sync(tenv, server_and_clones):
    _, clone = server_and_clones
    path = clone("c")
    (path / "new.txt").write_text("x\n")
    res = subprocess.run(["git", "autosync", "sync"], cwd=path, env=tenv,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    head = git(path, "rev-parse", "HEAD", env=tenv)
    assert f"pushed {head[:10]}" in res.stdout
    out = status(tenv, path).stdout
    assert f"{head[:10]}" in out.split("last push:", 1)[1].splitlines()[0], out
