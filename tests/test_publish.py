"""The bare server's announcements, end to end: a real `git push` into a bare repository with
the installed post-receive hook, a real mosquitto and a subscriber on every topic.

A branch name is data, never an option: whatever branch is pushed beside `main`, `main` is
announced exactly as it would be alone, and nothing else happens.
"""

import os
import subprocess

import pytest

from autosync.message import decode
from brokers import Subscriber, mosquitto, mosquitto_auth  # noqa: F401 (fixtures)
from cluster import install
from conftest import git, wait_for

@pytest.fixture
def subscriber(mosquitto):
    s = Subscriber(mosquitto.port)
    yield s
    s.stop()


@pytest.fixture
def hooked_server(server_and_clones, toolkit, tenv, mosquitto):
    """notes.git with the installed post-receive hook, announcing to the test broker."""
    server, make_clone = server_and_clones
    git(server, "config", "autosync.mqtt.url", mosquitto.url)
    install(toolkit, server, tenv)
    return server, make_clone


def publish_log(server):
    path = server / "autosync" / "publish.log"
    return path.read_text(errors="replace") if path.exists() else ""


def new_commit(clone, env, name="f.txt"):
    (clone / name).write_text(f"{name} {os.urandom(4).hex()}\n")
    git(clone, "add", name, env=env)
    git(clone, "commit", "-q", "-m", name, env=env)
    return git(clone, "rev-parse", "HEAD")


def hostile_names(tmp):
    return {
        "git-dir-nowhere": f"--git-dir={tmp}/nowhere",
        "git-dir-hijack": f"--git-dir={tmp}/evil.git",
        "-h": "-h",
        "--help": "--help",
        "--stdin": "--stdin",
        "--timeout": "--timeout=nan",
        "--": "--",
        "--end-of-options": "--end-of-options",
        "-x": "-x",
        "not-utf8": os.fsdecode(b"caf\xe9"),
    }


@pytest.mark.parametrize("case", list(hostile_names("/t")))
def test_a_hostile_branch_beside_main_changes_nothing(case, hooked_server, subscriber, tenv,
                                                      tmp_path, mosquitto):
    server, make_clone = hooked_server
    hostile = hostile_names(tmp_path)[case]
    # a repository the hostile name points at, announcing to the same broker under
    # another channel: taking its configuration would redirect the announcement
    evil = tmp_path / "evil.git"
    git(tmp_path, "init", "-q", "--bare", str(evil), env=tenv)
    git(evil, "config", "autosync.channel", "evil")
    git(evil, "config", "autosync.mqtt.url", mosquitto.url)
    evil_before = sorted(p.relative_to(evil) for p in evil.rglob("*"))

    plain = make_clone("plain")
    head = new_commit(plain, tenv)
    git(plain, "push", "-q", "origin", "main", f"HEAD:refs/heads/{hostile}", env=tenv)
    assert git(server, "rev-parse", f"refs/heads/{hostile}") == head  # git took it

    wait_for(lambda: "autosync/notes/main" in subscriber.topics(), what="main's announcement")
    wait_for(lambda: "announced" in publish_log(server), what="the publisher to finish")
    got = subscriber.drain()
    assert [t for t, _ in got] == ["autosync/notes/main"], got
    note = decode(got[0][1], "autosync/notes/main")
    assert (note.channel, note.branch, note.commit) == ("notes", "main", head)
    assert note.sender.endswith(":server")

    lines = publish_log(server).splitlines()
    dropped = [line for line in lines if "not announcing branch" in line]
    assert len(dropped) == 1, lines
    assert "Traceback" not in publish_log(server) and "usage:" not in publish_log(server)
    assert [line for line in lines if "announced" in line] == \
        [f"git-autosync: announced main {head[:10]}"]
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.relative_to(evil) for p in evil.rglob("*")) == evil_before


def test_a_push_of_only_hostile_branches_announces_nothing(hooked_server, subscriber, tenv,
                                                           tmp_path):
    server, make_clone = hooked_server
    plain = make_clone("plain")
    new_commit(plain, tenv)
    git(plain, "push", "-q", "origin", "HEAD:refs/heads/-h",
        f"HEAD:refs/heads/--git-dir={tmp_path}/nowhere", env=tenv)
    wait_for(lambda: publish_log(server).count("not announcing branch") == 2,
             what="both drops logged")
    assert subscriber.drain() == []
    assert "announced" not in publish_log(server)
    assert not (tmp_path / "nowhere").exists()


def test_publish_cli_takes_branches_after_double_dash(hooked_server, subscriber, toolkit, tenv):
    server, make_clone = hooked_server
    head = git(server, "rev-parse", "refs/heads/main")
    res = subprocess.run([toolkit.tool("autosync-publish"), f"--git-dir={server}", "--",
                          "-h", head, "main", head], env=tenv, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert res.stderr.count("not announcing branch '-h'") == 1, res.stderr
    assert [t for t, _ in subscriber.drain()] == ["autosync/notes/main"]


# -- password files: used whatever their mode, with a warning when others can read them -------
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o644, 0o640, 0o604], ids=oct)
def test_publish_with_a_password_file_warns_when_others_can_read_it(
        mode, mosquitto_auth, make_repo, toolkit, tenv, tmp_path):
    server = make_repo("notes.git", bare=True)
    pw = tmp_path / "server-password"
    pw.write_text(mosquitto_auth.users["server"] + "\n")
    pw.chmod(mode)
    for key, value in (("mqtt.url", mosquitto_auth.url), ("mqtt.username", "server"),
                       ("mqtt.passwordFile", str(pw))):
        git(server, "config", f"autosync.{key}", value)
    head = "c" * 40
    sub = Subscriber(mosquitto_auth.port, "laptop", mosquitto_auth.users["laptop"],
                     topic="autosync/notes/#")
    try:
        res = subprocess.run([toolkit.tool("autosync-publish"), f"--git-dir={server}", "--",
                              "main", head], env=tenv, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert res.returncode == 0, res.stderr
        got = sub.drain()
    finally:
        sub.stop()
    assert [(t, decode(p).commit) for t, p in got] == [("autosync/notes/main", head)]
    warning = f"git-autosync: warning: '{pw}' is readable by others; hint: chmod 600 '{pw}'"
    assert res.stderr.splitlines() == [warning] * bool(mode & 0o044) + \
        [f"git-autosync: announced main {head[:10]}"]
