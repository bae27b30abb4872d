"""End to end: real daemons, a real bare server with its hook, a real mosquitto broker."""

import json
import os
import subprocess

import paho.mqtt.client as paho

from brokers import Mosquitto, cluster, mosquitto, mosquitto_auth  # noqa: F401  (fixtures)
from cluster import Cluster, wait_converged
from conftest import git, wait_for


def test_edit_on_one_clone_appears_on_the_others(cluster):
    a, b, c = (cluster.clone(n) for n in ("a", "b", "c"))
    a.write("notes.md", "hello from a\n")
    for other in (b, c):
        wait_for(lambda: other.read("notes.md") == "hello from a\n", what=f"{other.name} to get it")
    wait_converged([a, b, c], cluster.server)
    assert git(a.path, "log", "-1", "--format=%s") == "autosync: add notes.md (host a)"
    assert "announced" in b.log()  # it came by notification, not by polling


def test_server_hook_notifies_clients_that_never_talk_to_each_other(cluster, tmp_path, tenv):
    b = cluster.clone("b")
    # a plain clone without autosync: its push reaches b only through the server's hook
    plain = tmp_path / "plain"
    git(tmp_path, "clone", "-q", str(cluster.server), str(plain), env=tenv)
    (plain / "from-plain.txt").write_text("pushed by hand\n")
    git(plain, "add", "from-plain.txt", env=tenv)
    git(plain, "commit", "-q", "-m", "manual", env=tenv)
    git(plain, "push", "-q", "origin", "main", env=tenv)
    wait_for(lambda: b.read("from-plain.txt") == "pushed by hand\n", what="b to get the push")
    assert "server" not in b.name and "announced" in b.log()


def test_concurrent_conflicting_edits_on_two_clones_keep_both(cluster):
    a, b = cluster.clone("a"), cluster.clone("b")
    a.stop(), b.stop()
    a.write("doc.md", "version a\n")
    b.write("doc.md", "version b\n")
    a.start(), b.start()
    wait_converged([a, b], cluster.server)
    files = a.files()
    assert files == b.files()
    values = sorted(v for k, v in files.items() if k.startswith("doc"))
    assert values == ["version a", "version b"]
    assert any(".conflict-" in k for k in files)
    assert not any("<<<<<<<" in v for v in files.values())


def test_three_clones_conflicting_converge_with_every_version(cluster):
    clones = [cluster.clone(n) for n in ("a", "b", "c")]
    for c in clones:
        c.stop()
    for c in clones:
        c.write("same.txt", f"written by {c.name}\n")
        c.write(f"own-{c.name}.txt", c.name)
    for c in clones:
        c.start()
    wait_converged(clones, cluster.server, timeout=90)
    files = clones[0].files()
    assert all(c.files() == files for c in clones)
    contents = [v for k, v in files.items() if k.startswith("same")]
    assert sorted(contents) == ["written by a", "written by b", "written by c"]
    assert all(files[f"own-{c.name}.txt"] == c.name for c in clones)


def test_manual_commit_is_synced_too(cluster):
    a, b = cluster.clone("a"), cluster.clone("b")
    (a.path / "manual.txt").write_text("by hand\n")
    git(a.path, "add", "manual.txt", env=a.env)
    git(a.path, "commit", "-q", "-m", "my own commit", env=a.env)
    wait_for(lambda: b.read("manual.txt") == "by hand\n", what="b to get the manual commit")
    wait_converged([a, b], cluster.server)  # files land a moment before the branch moves
    assert git(b.path, "log", "--format=%s", env=b.env).count("my own commit") == 1


def test_manual_commit_without_daemon_is_pushed_by_the_hook(cluster):
    a = cluster.clone("a", start=False)
    b = cluster.clone("b")
    (a.path / "x.txt").write_text("no daemon here\n")
    git(a.path, "add", "x.txt", env=a.env)
    git(a.path, "commit", "-q", "-m", "offline commit", env=a.env)
    wait_for(lambda: b.read("x.txt") == "no daemon here\n", what="hook-driven push to arrive")


def test_broker_killed_and_restarted(cluster, mosquitto):
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("one.txt", "1")
    wait_for(lambda: b.read("one.txt") == "1", what="first edit")
    mosquitto.stop()
    a.write("two.txt", "2")  # pushed, but nobody can be told
    wait_for(lambda: cluster.server_head() == a.head(), what="a to push while broker is down")
    mosquitto.restart()
    # b reconnects and fetches once on reconnect (catch-up), or the retained message tells it
    wait_for(lambda: b.read("two.txt") == "2", timeout=90, what="catch-up after reconnect")
    wait_converged([a, b], cluster.server)


def test_no_broker_falls_back_to_polling(tmp_path, tenv, toolkit):
    cl = Cluster(tmp_path, tenv, toolkit, pollInterval=1)
    try:
        a, b = cl.clone("a"), cl.clone("b")
        a.write("polled.txt", "p")
        wait_for(lambda: b.read("polled.txt") == "p", what="polling to pick it up")
        status = json.loads(b.autosync("status", "--json").stdout)
        assert status["transport"] is None and status["running"]
    finally:
        cl.stop()


def test_remote_unreachable_then_back(cluster):
    a, b = cluster.clone("a"), cluster.clone("b")
    away = cluster.server.with_name("notes.git.away")
    os.rename(cluster.server, away)
    try:
        a.write("offline.txt", "written while the server was away\n")
        wait_for(lambda: json.loads(a.autosync("status", "--json", check=False).stdout)
                 .get("push_error"), what="status to show the failing push")
        status = json.loads(a.autosync("status", "--json", check=False).stdout)
        assert status["unpushed"] >= 1
        assert "cannot push to 'origin'" in status["push_error"]
    finally:
        os.rename(away, cluster.server)
    wait_for(lambda: b.read("offline.txt") == "written while the server was away\n", timeout=90,
             what="the retried push to arrive")
    wait_converged([a, b], cluster.server)


def test_sigkill_mid_work_then_restart_loses_nothing(cluster):
    a, b = cluster.clone("a"), cluster.clone("b")
    a.kill()
    a.write("while-dead.txt", "made while the daemon was dead\n")
    a.start()  # catch-up: commits what changed while it was not running
    wait_for(lambda: b.read("while-dead.txt") == "made while the daemon was dead\n",
             what="catch-up commit to arrive")
    wait_converged([a, b], cluster.server)


def test_hostile_payloads_are_dropped_and_sync_goes_on(cluster, mosquitto):
    a, b = cluster.clone("a"), cluster.clone("b")
    topic = "autosync/notes/main"
    hostile = [b"not json", b"{}", json.dumps({"v": 2}).encode(), b"x" * (10 * 1024 * 1024),
               json.dumps({"v": 1, "channel": "notes", "branch": "--upload-pack=touch /tmp/pwn",
                           "commit": "0" * 40, "sender": "evil", "time": 1}).encode(),
               json.dumps({"v": 1, "channel": "notes", "branch": "../x", "commit": "g" * 40,
                           "sender": "evil", "time": 1}).encode()]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        for payload in hostile:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    a.write("after.txt", "still syncing\n")
    wait_for(lambda: b.read("after.txt") == "still syncing\n", what="sync after hostile input")
    assert b.running()
    log = b.log()
    assert "Traceback" not in log
    assert log.count("dropped") + log.count("invalid") >= 1
    assert not os.path.exists("/tmp/pwn")


def test_status_and_stop(cluster):
    a = cluster.clone("a")
    status = a.autosync("status")
    assert "running (pid" in status.stdout and "notifications: mqtt://" in status.stdout
    again = a.autosync("start", check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    a.write("before-stop.txt", "x")
    assert a.autosync("stop").returncode == 0
    assert "before-stop.txt" in a.files()  # pending change committed before exiting
    res = a.autosync("status", check=False)
    assert res.returncode == 3 and "not running" in res.stdout


def test_sync_command_one_shot(cluster):
    a = cluster.clone("a", start=False)
    b = cluster.clone("b", start=False)
    a.write("s.txt", "one shot\n")
    res = a.autosync("sync")
    assert "pushed" in res.stdout
    res = b.autosync("sync")
    assert b.read("s.txt") == "one shot\n"
    assert "up to date" in res.stdout


def test_edits_sync_through_an_authenticated_tls_broker(tmp_path, tenv, toolkit):
    """Passwords, an ACL and TLS with a test CA, end to end through the daemons and the hook."""
    from brokers import ACL, USERS, Mosquitto
    broker = Mosquitto(tmp_path / "broker", users=USERS, acl=ACL, tls=True).start()
    try:
        pw = tmp_path / "laptop.pw"
        pw.write_text(USERS["laptop"] + "\n")
        cl = Cluster(tmp_path, tenv, toolkit, broker_url=broker.url, mqtt_username="laptop",
                     mqtt_passwordFile=pw, mqtt_caFile=broker.ca_file)
        try:
            a, b = cl.clone("a"), cl.clone("b")
            wait_for(lambda: "(connected)" in b.autosync("status").stdout, what="b logged in")
            a.write("secure.txt", "over TLS\n")
            wait_for(lambda: b.read("secure.txt") == "over TLS\n", what="the edit over TLS")
            assert "announced" in b.log()
        finally:
            cl.stop()
    finally:
        broker.stop()


def test_wrong_broker_password_keeps_the_daemon_committing(tmp_path, tenv, toolkit,
                                                           mosquitto_auth):
    pw = tmp_path / "wrong.pw"
    pw.write_text("not the password\n")
    cl = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto_auth.url, pollInterval=1,
                 mqtt_username="laptop", mqtt_passwordFile=pw)
    try:
        a, b = cl.clone("a"), cl.clone("b")
        wait_for(lambda: "refused the login for user 'laptop'" in a.autosync("status").stdout,
                 what="the refusal in status")
        a.write("still.txt", "committed and pushed anyway\n")
        wait_for(lambda: b.read("still.txt") == "committed and pushed anyway\n",
                 what="polling to carry the edit")
    finally:
        cl.stop()


def test_merge_waits_for_a_rebase_by_hand_then_happens_by_itself(cluster):
    a, b = cluster.clone("a"), cluster.clone("b")
    b.write("mine.txt", "b's own commit\n")
    wait_for(lambda: a.read("mine.txt") == "b's own commit\n", what="b's commit at a")
    wait_converged([a, b], cluster.server)
    res = subprocess.run(["git", "rebase", "-i", "HEAD~1"], cwd=b.path, text=True,
                         env=dict(b.env, GIT_SEQUENCE_EDITOR="sed -i 1s/^pick/edit/"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert res.returncode == 0 and (b.path / ".git" / "rebase-merge").exists(), res.stdout
    a.write("while-rebasing.txt", "sent while b rebases\n")
    wait_for(lambda: "not merging" in b.log(), what="b to fetch a's edit and hold it back")
    assert b.read("while-rebasing.txt") is None
    res = subprocess.run(["git", "rebase", "--abort"], cwd=b.path, text=True, env=b.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert res.returncode == 0, res.stdout  # nothing committed: no hook, no new notification
    wait_for(lambda: b.read("while-rebasing.txt") == "sent while b rebases\n", timeout=60,
             what="the held-back merge, with no new notification")
    wait_converged([a, b], cluster.server)
