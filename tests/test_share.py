"""Shared settings (`.autosync`), `git autosync share` and `git autosync clone`, against
real git, the real installer, real daemons and a real mosquitto."""

import json
import os
import subprocess

import pytest

from autosync import config as config_module
from autosync.config import SHARED_KEYS, Config
from autosync.git import Repo
from brokers import mosquitto  # noqa: F401  (a fixture)
from cluster import Clone, Cluster, install, wait_converged
from conftest import git, wait_for

SHARED = """\
[autosync]
\tdebounce = 250
\tchannel = team-notes
\tignore = *.tmp
\tignore = build/
\tcommitMessage = sync %(summary)
"""


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """.autosync warnings are given once per process: each test starts with none given."""
    monkeypatch.setattr(config_module, "_warned_shared", set())


def commit_shared(repo, text, env=None, name=".autosync"):
    (repo / name).write_text(text)
    git(repo, "add", name, env=env)
    git(repo, "commit", "-q", "-m", "shared settings", env=env)


def warnings(err):
    return [line for line in err.splitlines() if line.startswith("warning: .autosync:")]


@pytest.fixture
def said(capsys, caplog):
    """said() -> the .autosync warnings given so far: on stderr, or in the log when a log
    file is set up (as in the daemon; pytest sets one up too)."""
    def lines():
        return warnings(capsys.readouterr().err + "\n" + "\n".join(caplog.messages))
    return lines


def run(env, *args, cwd):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


# -- reading .autosync ---------------------------------------------------------------------
def test_the_files_keys_apply(make_repo, said):
    r = make_repo()
    commit_shared(r, SHARED)
    c = Config(Repo(r))
    assert (c["debounce"], c.channel, c.shared_ignore, c["commitMessage"]) == \
        (250, "team-notes", ["*.tmp", "build/"], "sync %(summary)")
    assert c["ignore"] == []  # (this machine's own patterns: the file's are for new files)
    assert c["maxDelay"] == 10000  # not in the file: the built-in default
    assert set(c.shared) == {"autosync.debounce", "autosync.channel", "autosync.ignore",
                             "autosync.commitMessage"}
    assert said() == []


def test_local_config_wins_over_the_file(make_repo, tmp_path, env):
    r = make_repo()
    commit_shared(r, SHARED)
    git(r, "config", "autosync.debounce", "400")
    git(r, "config", "--global", "autosync.channel", "mine")
    git(r, "config", "autosync.ignore", "*.log")
    c = Config(Repo(r))
    assert (c["debounce"], c.channel, c["ignore"]) == (400, "mine", ["*.log"])
    assert c["commitMessage"] == "sync %(summary)"  # the rest still comes from the file
    assert "autosync.debounce" not in c.shared


def test_refused_keys_are_ignored_with_one_warning(make_repo, said):
    r = make_repo()
    commit_shared(r, SHARED + """\
\tremote = evil
\tpush = false
[autosync "mqtt"]
\tpasswordFile = /etc/shadow
\tusername = victim
[autosync "xmpp"]
\tjid = x@example.org
\tallowPlaintext = true
[core]
\thooksPath = /tmp/evil-hooks
[include]
\tpath = /etc/evil.gitconfig
""")
    for _ in range(3):  # one process, several Config objects: one warning
        c = Config(Repo(r))
        assert (c["remote"], c["push"], c["mqtt.passwordFile"], c["xmpp.jid"]) == \
            ("origin", True, "", "")
    assert c["debounce"] == 250  # the allowed keys still apply
    lines = said()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: .autosync: ignoring autosync.remote, autosync.push, "
                               "autosync.mqtt.passwordFile, autosync.mqtt.username, "
                               "autosync.xmpp.jid, autosync.xmpp.allowPlaintext, "
                               "core.hookspath, include.path (only channel, mqtt.url, ")
    assert lines[0].endswith(" are shared)")


def test_an_include_in_the_file_is_never_followed(make_repo, tmp_path):
    (tmp_path / "included").write_text("[autosync]\n\tdebounce = 333\n")
    r = make_repo()
    commit_shared(r, f"[include]\n\tpath = {tmp_path / 'included'}\n")
    assert Config(Repo(r))["debounce"] == 1000


@pytest.mark.parametrize("line,key", [
    ("debounce = x", "autosync.debounce"),
    ("pollInterval = 1", "autosync.pollInterval"),  # out of range: polling every second
    ("maxFileSize = 0", "autosync.maxFileSize"),    # would commit no file at all
    ("channel = a/#", "autosync.channel"),
    ("commitMessage = \"a\\tb\"", "autosync.commitMessage"),
])
def test_a_bad_value_is_ignored_with_a_warning(make_repo, said, line, key):
    r = make_repo()
    commit_shared(r, f"[autosync]\n\tmaxDelay = 2000\n\t{line}\n")
    c = Config(Repo(r))  # never an error: a peer must not be able to stop every clone
    assert c[key[len("autosync."):]] == config_module.KEYS[key][0]
    assert c["maxDelay"] == 2000
    lines = said()
    assert len(lines) == 1 and lines[0].startswith(f"warning: .autosync: ignoring {key}: ")


def test_a_bad_broker_url_is_ignored_with_a_warning(make_repo, said):
    r = make_repo()
    commit_shared(r, "[autosync \"mqtt\"]\n\turl = http://user:pw@example.org/x\n")
    assert Config(Repo(r))["mqtt.url"] == ""
    assert said()[0].startswith(
        "warning: .autosync: ignoring autosync.mqtt.url: bad broker URL")


def test_a_file_git_cannot_parse_is_a_warning(make_repo, said):
    r = make_repo()
    commit_shared(r, "[autosync\n\tdebounce = 250\n")
    assert Config(Repo(r))["debounce"] == 1000
    lines = said()
    assert len(lines) == 1 and lines[0].startswith("warning: .autosync: not read: ")


def test_only_the_committed_version_is_read(make_repo, said):
    r = make_repo()
    (r / ".autosync").write_text(SHARED)  # never committed
    assert Config(Repo(r))["debounce"] == 1000
    commit_shared(r, SHARED)
    (r / ".autosync").write_text(SHARED.replace("250", "500"))  # a half-done edit
    assert Config(Repo(r))["debounce"] == 250
    assert said() == []


def test_a_symlinked_file_is_not_read(make_repo, tmp_path, said):
    target = tmp_path / "elsewhere"
    target.write_text(SHARED)
    r = make_repo()
    os.symlink(target, r / ".autosync")
    git(r, "add", ".autosync")
    git(r, "commit", "-q", "-m", "a link")
    assert Config(Repo(r))["debounce"] == 1000
    lines = said()
    assert lines == ["warning: .autosync: not read: it is not a regular file"]


def test_no_process_without_the_file(make_repo, monkeypatch):
    r = make_repo()
    repo = Repo(r)
    calls = []
    real, limited = repo.run, repo.run_limited
    monkeypatch.setattr(repo, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(repo, "run_limited",
                        lambda *a, **k: calls.append(a) or limited(*a, **k))
    Config(repo)
    assert calls == [("config", "-z", "--list")]
    commit_shared(r, SHARED)
    calls.clear()
    Config(repo)
    assert len(calls) == 2 and calls[1][:3] == ("config", "--blob", "HEAD:.autosync")
    calls.clear()
    Config(repo, shared=False)  # the post-commit hook's (push, remote, branch only)
    assert len(calls) == 1


def test_credentials_never_go_to_a_server_the_file_chose(make_repo, tmp_path, said):
    r = make_repo()
    commit_shared(r, "[autosync \"mqtt\"]\n\turl = mqtt://evil.example:1883\n"
                     "[autosync \"xmpp\"]\n\tserver = evil.example\n\tport = 5999\n"
                     "\troom = sync@rooms.example.org\n")
    c = Config(Repo(r))
    assert (c["mqtt.url"], c["xmpp.server"], c["xmpp.port"]) == \
        ("mqtt://evil.example:1883", "evil.example", 5999)  # no credential here: used
    git(r, "config", "autosync.mqtt.username", "me")
    git(r, "config", "autosync.xmpp.passwordFile", str(tmp_path / "xmpp-password"))
    c = Config(Repo(r))
    assert (c["mqtt.url"], c["xmpp.server"], c["xmpp.port"]) == ("", "", 5222)
    assert c["xmpp.room"] == "sync@rooms.example.org"  # no credential goes to a room
    lines = said()
    assert any(line.startswith("warning: .autosync: ignoring autosync.mqtt.url: "
                               "autosync.mqtt.username is set here") for line in lines)
    assert any("ignoring autosync.xmpp.server: autosync.xmpp.passwordFile is set here"
               in line for line in lines)
    git(r, "config", "autosync.mqtt.url", "mqtt://mine.example:1883")  # named here: used
    assert Config(Repo(r))["mqtt.url"] == "mqtt://mine.example:1883"


def test_a_bare_server_reads_its_heads_file(make_repo, tmp_path, toolkit, env):
    seed = make_repo("seed")
    commit_shared(seed, SHARED)
    server = tmp_path / "notes.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    install(toolkit, server, env)  # sets autosync.channel=notes, as a default
    assert git(server, "config", "autosync.channel") == "notes"
    assert Config(Repo(server)).channel == "team-notes"  # the same as its clones'
    git(server, "config", "autosync.channel", "chosen")  # a value the user set wins
    assert Config(Repo(server)).channel == "chosen"


def test_the_channel_install_wrote_yields_to_the_file(server_and_clones, toolkit, env):
    _, clone = server_and_clones
    a = clone("a")
    install(toolkit, a, env)
    assert Config(Repo(a)).channel == "notes"
    commit_shared(a, SHARED)
    assert Config(Repo(a)).channel == "team-notes"


def test_status_warns_once(make_repo, tenv):
    r = make_repo()
    commit_shared(r, "[autosync]\n\tremote = evil\n\tdebounce = x\n", env=tenv)
    res = run(tenv, "status", cwd=r)
    assert res.returncode == 3  # not running; the file stopped nothing
    assert warnings(res.stderr) == [
        "warning: .autosync: ignoring autosync.remote (only "
        + ", ".join(k[len("autosync."):] for k in SHARED_KEYS) + " are shared)",
        "warning: .autosync: ignoring autosync.debounce: bad numeric config value 'x' for "
        "'autosync.debounce'"]
    assert "Traceback" not in res.stderr


# -- git autosync share --------------------------------------------------------------------
def test_share_writes_shows_and_commits(server_and_clones, toolkit, tenv):
    _, clone = server_and_clones
    a = clone("a")
    install(toolkit, a, tenv)
    git(a, "config", "autosync.debounce", "300")
    git(a, "config", "autosync.mqtt.url", "mqtt://broker.example:1883")
    git(a, "config", "autosync.mqtt.passwordFile", "/home/a/secret")  # not shared
    git(a, "config", "--add", "autosync.ignore", "*.bak")
    git(a, "config", "--add", "autosync.ignore", "has space #1")
    git(a, "config", "autosync.pollInterval", "5")  # others would refuse it: left out
    res = run(tenv, "share", "--dry-run", cwd=a)
    assert res.returncode == 0, res.stderr
    assert not (a / ".autosync").exists()
    assert "not sharing autosync.pollInterval" in res.stderr
    head = git(a, "rev-parse", "HEAD")
    res = run(tenv, "share", cwd=a)
    assert res.returncode == 0, res.stderr
    text = (a / ".autosync").read_text()
    assert text.startswith("# git-autosync shared settings") and text in res.stdout
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["[autosync]", "\tchannel = notes", "\tdebounce = 300",
                    "\tignore = *.bak", '\tignore = "has space #1"',
                    '[autosync "mqtt"]', "\turl = mqtt://broker.example:1883"]
    assert git(a, "rev-parse", "HEAD~1") == head  # one commit, through the commit path
    assert git(a, "cat-file", "blob", "HEAD:.autosync") + "\n" == text
    assert git(a, "status", "--porcelain") == ""
    again = run(tenv, "share", cwd=a)
    assert again.returncode == 0 and "nothing to commit" in again.stdout
    # what it wrote reads back as what it shared
    shared = config_module.read_shared_file(Repo(a))
    assert shared["autosync.ignore"] == ["*.bak", "has space #1"]


def test_share_refuses_uncommitted_changes(make_repo, tenv):
    r = make_repo()
    commit_shared(r, SHARED, env=tenv)
    (r / ".autosync").write_text(SHARED + "\tmaxDelay = 5000\n")
    res = run(tenv, "share", cwd=r)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0] == "git-autosync: '.autosync' has uncommitted changes"
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert (r / ".autosync").read_text().endswith("maxDelay = 5000\n")  # left alone


def test_shared_settings_reach_another_clone(tmp_path, tenv, toolkit, mosquitto):  # noqa: F811
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    try:
        a, b = cluster.clone("a"), cluster.clone("b")
        a.config(commitMessage="shared %(summary)")
        res = a.autosync("share")
        assert "commitMessage = shared %(summary)" in res.stdout
        wait_for(lambda: b.read(".autosync") == a.read(".autosync"), timeout=30,
                 what="b to get .autosync")
        wait_converged([a, b], cluster.server)
        git(b.path, "config", "--unset", "autosync.host")
        assert Config(Repo(b.path))["commitMessage"] == "shared %(summary)"
    finally:
        cluster.stop()


# -- git autosync clone --------------------------------------------------------------------
def test_clone_start_makes_a_syncing_second_device_on_the_shared_channel(
        tmp_path, tenv, toolkit, mosquitto):  # noqa: F811
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url,
                      pollInterval=3600)  # (what is not announced waits an hour)
    try:
        a = cluster.clone("a", start=False)
        a.config(channel="team-notes")
        a.start()
        a.autosync("share")
        wait_for(lambda: "team-notes" in git(cluster.server, "show", "main:.autosync",
                                             check=False),
                 timeout=30, what="the server to get .autosync")
        res = subprocess.run(["git", "autosync", "clone", str(cluster.server), "laptop",
                              "--start"], cwd=tmp_path, env=tenv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        d = Clone(tmp_path / "laptop", tenv, toolkit)
        cluster.clones.append(d)
        assert "installed the post-commit hook" in res.stdout
        assert "autosync.mqtt.url=" + mosquitto.url in res.stdout
        assert git(d.path, "config", "--local", "autosync.mqtt.url", check=False) == ""
        status = json.loads(d.autosync("status", "--json").stdout)
        assert status["running"] and status["channel"] == "team-notes"
        wait_for(lambda: json.loads(d.autosync("status", "--json").stdout)
                 ["transport_connected"], what="the new device to reach the broker")
        a.write("from-a.txt", "hello from a\n")
        wait_for(lambda: d.read("from-a.txt") == "hello from a\n", timeout=30,
                 what="a's edit to reach the new device")
        d.write("from-laptop.txt", "hello from the laptop\n")
        wait_for(lambda: a.read("from-laptop.txt") == "hello from the laptop\n", timeout=30,
                 what="the new device's edit to reach a")
        wait_converged([a, d], cluster.server)
    finally:
        cluster.stop()


def test_clone_errors_leave_nothing_behind(tmp_path, tenv, server_and_clones):
    server, _ = server_and_clones
    work = tmp_path / "work"
    work.mkdir()

    def clone(*args):
        res = run(tenv, "clone", *args, cwd=work)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
        lines = res.stderr.splitlines()
        assert lines[0].startswith("git-autosync: ") and len(lines) == 2
        assert lines[1].startswith("hint: ")
        return lines[0]

    # a URL that is not a repository: nothing made, even several levels deep
    line = clone(str(tmp_path / "no-such.git"), "deep/er/copy")
    assert line.startswith(f"git-autosync: cannot clone '{tmp_path / 'no-such.git'}': ")
    assert os.listdir(work) == []
    # DIR exists and is not empty: untouched
    (work / "full").mkdir()
    (work / "full" / "mine.txt").write_text("mine\n")
    line = clone(str(server), "full")
    assert line == (f"git-autosync: destination path '{work / 'full'}' already exists and "
                    "is not an empty directory")
    assert os.listdir(work / "full") == ["mine.txt"]
    # DIR exists and is empty: it stays, empty again
    (work / "empty").mkdir()
    clone(str(tmp_path / "no-such.git"), "empty")
    assert os.listdir(work / "empty") == []
    # the install fails (a hook it cannot chain): the clone is removed again
    hooks = tmp_path / "global-hooks"
    hooks.mkdir()
    (hooks / "post-commit").write_text("#!/bin/sh\n")
    (hooks / "post-commit.pre-autosync").write_text("#!/bin/sh\n")
    git(work, "config", "--global", "core.hooksPath", str(hooks), env=tenv)
    line = clone(str(server), "copy")
    assert line.startswith("git-autosync: cannot chain ")
    assert sorted(os.listdir(work)) == ["empty", "full"]
    # a name git clone could not tell either
    assert clone("/").startswith("git-autosync: cannot tell a directory name")


def test_clone_without_dir_takes_the_repository_name(tmp_path, tenv, server_and_clones):
    server, _ = server_and_clones
    work = tmp_path / "work"
    work.mkdir()
    res = run(tenv, "clone", str(server) + "/", cwd=work)
    assert res.returncode == 0, res.stderr
    assert (work / "notes" / "README").exists()
    assert "git -C " in res.stdout and "autosync start" in res.stdout
    assert git(work / "notes", "config", "alias.autosync").startswith("!")
    entries = json.loads((tmp_path / "home" / ".local" / "share" / "git-autosync" /
                          "repositories.json").read_text())["repositories"]
    assert str(work / "notes") in [e["dir"] for e in entries]


@pytest.mark.parametrize("command", ["share", "clone"])
def test_each_new_command_has_help(tenv, tmp_path, command):
    res = run(tenv, command, "-h", cwd=tmp_path)
    assert res.returncode == 0 and f"git autosync {command}" in res.stdout
