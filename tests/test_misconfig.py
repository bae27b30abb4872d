"""Silent misconfiguration is said (issue 13.7): a repository without the remote
autosync.remote names, a broker URL that is not one. `git autosync start` prints a warning
and its fix in git's style, the daemon's log has them, `git autosync status` shows them; a
bad broker URL does not stop syncing (the remote is polled)."""

import json
import subprocess

import pytest

from autosync.checks import problems
from autosync.config import Config
from autosync.git import Repo
from cluster import Cluster
from conftest import git, wait_for


def autosync(env, repo, *args):
    return subprocess.run(["git", "autosync", *args], cwd=repo, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def log_of(repo):
    return (repo / ".git" / "autosync" / "log").read_text(errors="replace")


def test_no_remote_is_said_by_start_the_log_and_status(tenv, make_repo):
    repo = make_repo("solo")
    res = autosync(tenv, repo, "start")
    try:
        assert res.returncode == 0, res.stderr
        assert "started git-autosync" in res.stdout
        assert res.stderr.splitlines() == [
            "warning: no remote 'origin': nothing is pushed or fetched, commits stay in this "
            "repository",
            "hint: git remote add origin URL   (the shared bare repository)"]
        wait_for(lambda: "watching" in log_of(repo), what="the daemon's first lines")
        assert "WARNING no remote 'origin': nothing is pushed or fetched" in log_of(repo)
        assert "hint: git remote add origin URL" in log_of(repo)
        out = autosync(tenv, repo, "status").stdout
        assert "  branch:        main, local only (no remote 'origin')" in out, out
        assert "  warning:       no remote 'origin': nothing is pushed or fetched" in out
        assert "  hint:          git remote add origin URL" in out
        assert "<-> origin" not in out and "  notifications: none (local only)" in out
        info = json.loads(autosync(tenv, repo, "status", "--json").stdout)
        assert info["has_remote"] is False and len(info["config_warnings"]) == 1
    finally:
        autosync(tenv, repo, "stop")


def test_autosync_remote_naming_a_remote_that_is_not_there(tenv, server_and_clones):
    _, clone = server_and_clones
    repo = clone("c")
    git(repo, "config", "autosync.remote", "upstream", env=tenv)
    res = autosync(tenv, repo, "status")
    assert res.returncode == 3
    assert ("  warning:       autosync.remote is 'upstream', but there is no remote of that "
            "name (there is 'origin')") in res.stdout, res.stdout
    assert "  hint:          git config autosync.remote origin" in res.stdout
    git(repo, "config", "autosync.remote", "origin", env=tenv)
    res = autosync(tenv, repo, "status")
    assert "warning" not in res.stdout and "<-> origin" in res.stdout, res.stdout


@pytest.mark.parametrize("url, problem, fix", [
    ("mqtt//broker.lan:1883", "it does not start with mqtt:// or mqtts://",
     "git config autosync.mqtt.url mqtt://broker.lan:1883"),
    ("mqtt://broker.lan:notaport", "the port 'notaport' is not a number from 1 to 65535",
     "git config autosync.mqtt.url mqtt://broker.lan:1883"),
    ("http://broker.lan:1883", "unknown scheme 'http' (mqtt:// or mqtts://)",
     "git config autosync.mqtt.url mqtt://broker.lan:1883"),
    ("mqtt://laptop:s3cret@broker.lan", "a user name goes in autosync.mqtt.username",
     "git config autosync.mqtt.url mqtt://HOST:1883"),
])
def test_bad_broker_urls_say_what_is_wrong_and_the_fix(env, server_and_clones, url, problem,
                                                        fix):
    _, clone = server_and_clones
    repo = clone("c")
    git(repo, "config", "autosync.mqtt.url", url, env=env)
    found = problems(Config(Repo(str(repo))))
    assert len(found) == 1, found
    assert problem in found[0].message and found[0].hint.startswith(fix)
    assert "s3cret" not in found[0].message
    assert "polled every 60s instead" in found[0].message


def test_a_bad_broker_url_is_said_and_syncing_goes_on_by_polling(tmp_path, tenv, toolkit):
    cl = Cluster(tmp_path, tenv, toolkit, pollInterval=1)
    try:
        a = cl.clone("a", start=False)
        a.config(mqtt_url="mqtt//broker.lan:1883")
        res = a.start()
        assert res.stderr.splitlines() == [
            "warning: bad broker URL 'mqtt//broker.lan:1883' in autosync.mqtt.url: it does "
            "not start with mqtt:// or mqtts://; no notifications: the remote is polled every "
            "1s instead",
            "hint: git config autosync.mqtt.url mqtt://broker.lan:1883"], res.stderr
        wait_for(lambda: "watching" in a.log(), what="the daemon's first lines")
        assert "bad broker URL 'mqtt//broker.lan:1883'" in a.log()
        assert "hint: git config autosync.mqtt.url mqtt://broker.lan:1883" in a.log()
        out = a.autosync("status").stdout
        assert out.count("bad broker URL") == 1, out  # said once, with its fix
        assert "  hint:          git config autosync.mqtt.url mqtt://broker.lan:1883" in out
        # and it syncs: its own edit reaches the server, another's is polled in
        a.write("mine.txt", "from a\n")
        wait_for(lambda: "mine.txt" in git(cl.server, "ls-tree", "-r", "--name-only",
                                           "refs/heads/main", env=tenv),
                 timeout=30, what="a's edit on the server")
        b = tmp_path / "b"  # a plain git user
        git(tmp_path, "clone", "-q", str(cl.server), str(b), env=tenv)
        (b / "theirs.txt").write_text("from b\n")
        git(b, "add", "theirs.txt", env=tenv)
        git(b, "commit", "-qm", "plain commit", env=tenv)
        git(b, "pull", "-q", "--no-rebase", "origin", "main", env=tenv)
        git(b, "push", "-q", "origin", "HEAD:main", env=tenv)
        wait_for(lambda: a.read("theirs.txt") == "from b\n", timeout=30,
                 what="polling to bring b's push in")
    finally:
        cl.stop()


def test_an_xmpp_account_without_a_password_file_is_said_with_the_fix(tenv, server_and_clones):
    _, clone = server_and_clones
    repo = clone("x")
    git(repo, "config", "autosync.xmpp.jid", "laptop@localhost", env=tenv)
    res = autosync(tenv, repo, "status")
    assert ("  warning:       no xmpp password: autosync.xmpp.passwordFile is not set; "
            "no notifications: the remote is polled every 60s instead") in res.stdout, res.stdout
    assert ("  hint:          git config autosync.xmpp.passwordFile "
            "~/.config/git-autosync/xmpp-password") in res.stdout
    assert "directory" not in res.stdout and "''" not in res.stdout
    try:  # the running daemon's transport error is the same: said once
        assert autosync(tenv, repo, "start").returncode == 0
        wait_for(lambda: "polling every" in log_of(repo), what="the daemon's transport error")
        out = autosync(tenv, repo, "status").stdout
        assert out.count("no xmpp password") == 1, out
    finally:
        autosync(tenv, repo, "stop")
