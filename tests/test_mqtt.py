"""The MQTT transport, publish_once and autosync-publish against a real mosquitto."""

import logging
import re
import socket
import subprocess
import time

import paho.mqtt.client as paho
import pytest

from autosync.config import Config
from autosync.git import Repo
from autosync.message import encode
from autosync.mqtt import MqttTransport, parse_url, publish_once
from autosync.util import Error
from brokers import make_ca, mosquitto, mosquitto_auth, mosquitto_tls, raw_client  # noqa: F401
from conftest import free_port, git, wait_for
from test_message import C, HOSTILE, note


def test_parse_url():
    assert parse_url("mqtt://127.0.0.1:1884") == (False, "127.0.0.1", 1884)
    assert parse_url("mqtts://broker.example.org") == (True, "broker.example.org", 8883)
    assert parse_url("mqtt://[::1]") == (False, "::1", 1883)
    assert parse_url(" mqtts://[::1]:8884/ ") == (True, "::1", 8884)
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h:0", "mqtt://u:p@h",
                "mqtt://:p@h", "mqtt://h/path", "mqtt://h?q=1", "mqtt://h#x", "h:1883",
                "mqtt://[::1", "", None):
        with pytest.raises(Error):
            parse_url(bad)


# -- the transport against a real broker ------------------------------------------------------
@pytest.fixture
def config_for(make_repo):
    counter = iter(range(100))

    def make(url, **keys):
        path = make_repo(f"r{next(counter)}")
        git(path, "config", "autosync.channel", keys.pop("channel", "notes"))
        git(path, "config", "autosync.mqtt.url", url)
        for k, v in keys.items():
            git(path, "config", f"autosync.mqtt.{k}", str(v))
        return Config(Repo(path))
    return make


class Peer:
    def __init__(self, config, sender):
        self.received, self.connects = [], 0
        self.t = MqttTransport(config, sender, self.received.append, self.connected)
        self.t.start()

    def connected(self):
        self.connects += 1

    def stop(self):
        self.t.stop()


@pytest.fixture
def peers():
    made = []

    def make(config, sender):
        p = Peer(config, sender)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def test_peers_hear_each_other_but_not_themselves(mosquitto, config_for, peers):
    a = peers(config_for(mosquitto.url), "a:00000001")
    b = peers(config_for(mosquitto.url), "b:00000002")
    wait_for(lambda: a.t.connected and b.t.connected, what="both connected")
    assert a.t.publish(note(sender="a:00000001"))
    wait_for(lambda: b.received, what="b to hear a")
    assert b.received[0].commit == C and b.received[0].sender == "a:00000001"
    assert a.received == []


def test_retained_head_reaches_a_late_subscriber(mosquitto, config_for, peers):
    assert publish_once(config_for(mosquitto.url), [note(sender="server:server")])
    late = peers(config_for(mosquitto.url), "late:00000003")
    wait_for(lambda: late.received, what="the retained notification")
    assert late.received[0].sender == "server:server"


def test_other_channels_are_not_heard(mosquitto, config_for, peers):
    a = peers(config_for(mosquitto.url, channel="notes"), "a:00000001")
    wait_for(lambda: a.t.connected, what="connect")
    assert publish_once(config_for(mosquitto.url, channel="photos"),
                        [note(channel="photos", sender="p:1")])
    assert publish_once(config_for(mosquitto.url), [note(sender="n:1")])
    wait_for(lambda: a.received, what="the notes notification")
    assert [n.channel for n in a.received] == ["notes"]


def test_reconnects_after_broker_restart_and_calls_on_connect_again(mosquitto, config_for,
                                                                    peers):
    a = peers(config_for(mosquitto.url), "a:00000001")
    wait_for(lambda: a.connects == 1, what="first connect")
    mosquitto.stop()
    wait_for(lambda: not a.t.connected, what="the disconnect to be noticed")
    assert "broker" in a.t.last_error
    mosquitto.restart()
    wait_for(lambda: a.connects == 2, timeout=30, what="reconnect")
    assert a.t.last_error is None


def test_publish_while_disconnected_is_sent_on_reconnect(mosquitto, config_for, peers):
    a = peers(config_for(mosquitto.url), "a:00000001")
    wait_for(lambda: a.t.connected, what="connect")
    mosquitto.stop()
    wait_for(lambda: not a.t.connected, what="disconnect")
    assert a.t.publish(note(sender="a:00000001")) is False
    mosquitto.restart()
    b = peers(config_for(mosquitto.url), "b:00000002")
    wait_for(lambda: b.received, timeout=30, what="the kept notification after reconnect")


def test_publish_once_with_broker_down_returns_false_in_bounded_time(config_for, caplog):
    config = config_for(f"mqtt://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="autosync"):
        assert publish_once(config, [note()], timeout=2.0) is False
    assert time.monotonic() - start < 3.0
    assert len(caplog.records) == 1 and "connection refused" in caplog.text


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_publish_once_to_a_silent_server_is_bounded(config_for, silent_port, scheme, caplog):
    config = config_for(f"{scheme}://127.0.0.1:{silent_port}")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="autosync"):
        assert publish_once(config, [note()], timeout=1.5) is False
    assert time.monotonic() - start < 2.5
    # one line saying the broker did not answer in time; which timeout fires first (the
    # TLS handshake's or ours) depends on the machine's load, not on the behaviour
    assert len(caplog.records) == 1
    assert re.search(r"no answer from the broker|timed out", caplog.text), caplog.text


def test_publish_once_with_nothing_to_say_does_not_connect(config_for):
    assert publish_once(config_for(f"mqtt://127.0.0.1:{free_port()}"), []) is True


def test_stop_is_prompt_while_the_broker_is_down(config_for, peers):
    a = peers(config_for(f"mqtt://127.0.0.1:{free_port()}"), "a:1")
    wait_for(lambda: a.t.last_error, what="the connection failure")
    assert "connection refused" in a.t.last_error and not a.t.connected
    start = time.monotonic()
    a.stop()
    assert time.monotonic() - start < 1.0 and not a.t.thread.is_alive()


def test_stop_without_start(config_for):
    MqttTransport(config_for(f"mqtt://127.0.0.1:{free_port()}"), "a:1", print, print).stop()


def test_a_branch_mqtt_cannot_carry_is_a_clear_error(mosquitto, config_for):
    config = config_for(mosquitto.url)
    git(config.repo.cwd, "config", "autosync.branch", "a+b")
    with pytest.raises(Error, match="cannot announce over mqtt: branch 'a\\+b'"):
        MqttTransport(Config(Repo(config.repo.cwd)), "x:1", lambda n: None, lambda: None)


def test_hostile_payloads_on_the_wire_are_dropped(mosquitto, config_for, peers, caplog):
    a = peers(config_for(mosquitto.url), "a:00000001")
    wait_for(lambda: a.t.connected, what="connect")
    hostile = [p for p in HOSTILE if len(p) < 4096]  # a bigger one ends the session (below)
    with raw_client(mosquitto.port) as client, \
            caplog.at_level(logging.WARNING, logger="autosync"):
        for data in hostile:
            client.publish("autosync/notes/main", data, qos=1).wait_for_publish(10)
        client.publish("autosync/notes/main", encode(note(sender="good:1")),
                       qos=1).wait_for_publish(10)
        wait_for(lambda: a.received, what="the one good notification")
    assert [n.sender for n in a.received] == ["good:1"]
    assert a.t.connected
    dropped = [r for r in caplog.records if "dropped an invalid notification" in r.getMessage()]
    assert 1 <= len(dropped) <= 2, "a flood is logged once per period, not once per message"


def test_a_packet_larger_than_max_packet_ends_the_session_before_it_is_read(
        mosquitto, config_for, peers, caplog):
    """paho would read a packet of any announced length (up to 256 MB) into memory: a
    PUBLISH longer than MAX_PACKET ends the connection instead, with one line; the
    transport connects again and hears the next good notification."""
    from autosync.mqtt import MAX_PACKET
    a = peers(config_for(mosquitto.url), "a:00000001")
    wait_for(lambda: a.connects == 1, what="connect")
    with raw_client(mosquitto.port) as client, \
            caplog.at_level(logging.WARNING, logger="autosync"):
        client.publish("autosync/notes/main", b"y" * (2 * 1024 * 1024),
                       qos=1).wait_for_publish(10)
        wait_for(lambda: a.t.last_error, what="the session to end")
        assert a.t.last_error.startswith(f"the broker at {mosquitto.url} sent a packet of "
                                         f"{2 * 1024 * 1024 + 2 + 19 + 2} bytes")  # topic, id
        assert f"less than {MAX_PACKET}" in a.t.last_error
        wait_for(lambda: a.connects == 2, timeout=30, what="the reconnect")
        client.publish("autosync/notes/main", encode(note(sender="good:1")),
                       qos=1).wait_for_publish(10)
        wait_for(lambda: a.received, what="the good notification")
    assert [n.sender for n in a.received] == ["good:1"]


# -- authentication and TLS -------------------------------------------------------------------
def test_login_with_password_file_and_acl(mosquitto_auth, config_for, peers, tmp_path):
    def cfg(user, password, channel="notes"):
        pw = tmp_path / f"{user}-{password}.pw"
        pw.write_text(password + "\n")
        return config_for(mosquitto_auth.url, username=user, passwordFile=pw, channel=channel)
    laptop = peers(cfg("laptop", "laptop-secret"), "laptop:1")
    wait_for(lambda: laptop.t.connected, what="laptop to log in")
    bad = peers(cfg("desktop", "wrong"), "desktop:2")
    wait_for(lambda: bad.t.last_error, what="the refusal")
    assert "refused the login for user 'desktop'" in bad.t.last_error
    assert not bad.t.connected
    # 'other' may log in but the ACL keeps it out of the notes channel: it cannot write ...
    assert publish_once(cfg("other", "other-secret", channel="notes"), [note(sender="o:1")])
    # ... nor read: it hears its own channel's notification but not the earlier one of notes
    heard = []
    spy = paho.Client(paho.CallbackAPIVersion.VERSION2)
    spy.username_pw_set("other", "other-secret")
    spy.on_message = lambda c, u, msg: heard.append(msg.topic)
    spy.on_connect = lambda c, u, f, rc, p: c.subscribe([("autosync/notes/main", 1),
                                                          ("autosync/other/main", 1)])
    spy.on_subscribe = lambda c, u, mid, rcs, p: heard.append("subscribed")
    spy.connect("127.0.0.1", mosquitto_auth.port)
    spy.loop_start()
    try:
        wait_for(lambda: "subscribed" in heard, what="the spy to subscribe")
        assert publish_once(cfg("desktop", "desktop-secret"), [note(sender="d:2")])
        assert publish_once(cfg("other", "other-secret", channel="other"),
                            [note(channel="other", sender="o:1")])
        wait_for(lambda: "autosync/other/main" in heard, what="the spy's own channel")
    finally:
        spy.loop_stop()
        spy.disconnect()
    assert "autosync/notes/main" not in heard
    wait_for(lambda: laptop.received, what="desktop's notification")
    assert [n.sender for n in laptop.received] == ["d:2"]


def test_missing_password_file_is_a_clear_error(mosquitto_auth, config_for, tmp_path):
    config = config_for(mosquitto_auth.url, username="laptop",
                        passwordFile=tmp_path / "missing")
    with pytest.raises(Error, match="cannot read the broker password file"):
        MqttTransport(config, "x:1", lambda n: None, lambda: None)


def test_tls_with_the_test_ca(mosquitto_tls, config_for, peers):
    a = peers(config_for(mosquitto_tls.url, caFile=mosquitto_tls.ca_file), "a:1")
    b = peers(config_for(mosquitto_tls.url, caFile=mosquitto_tls.ca_file), "b:2")
    wait_for(lambda: a.t.connected and b.t.connected, what="TLS connections")
    assert a.t.publish(note(sender="a:1"))
    wait_for(lambda: b.received, what="b to hear a over TLS")


def test_tls_with_the_wrong_ca_says_so(mosquitto_tls, config_for, peers, tmp_path):
    other = tmp_path / "other-ca"
    other.mkdir()
    wrong_ca = make_ca(other)[0]
    a = peers(config_for(mosquitto_tls.url, caFile=wrong_ca), "a:1")
    wait_for(lambda: a.t.last_error, what="the certificate error")
    assert "cannot verify the certificate" in a.t.last_error
    assert not a.t.connected
    assert publish_once(config_for(mosquitto_tls.url, caFile=wrong_ca), [note()], 3) is False


def test_plain_mqtt_to_a_tls_port_says_so(mosquitto_tls, config_for, peers):
    a = peers(config_for(mosquitto_tls.url.replace("mqtts:", "mqtt:")), "a:1")
    wait_for(lambda: a.t.last_error, what="the failure")
    assert "closed the connection without answering" in a.t.last_error
    assert "mqtts://" in a.t.last_error


def test_tls_to_a_plain_port_says_so(mosquitto, config_for, peers):
    a = peers(config_for(mosquitto.url.replace("mqtt:", "mqtts:")), "a:1")
    wait_for(lambda: a.t.last_error, what="the failure")
    assert "TLS with the broker" in a.t.last_error and "speak TLS" in a.t.last_error


def test_publish_cli_reads_post_receive_lines(mosquitto, config_for, peers, toolkit, env,
                                              make_repo):
    listener = peers(config_for(mosquitto.url), "l:1")
    wait_for(lambda: listener.t.connected, what="connect")
    server = make_repo("notes.git", bare=True)
    git(server, "config", "autosync.mqtt.url", mosquitto.url)
    lines = (f"{'0' * 40} {C} refs/heads/main\n{C} {'0' * 40} refs/heads/gone\n"
             f"{'0' * 64} {'0' * 64} refs/heads/gone256\n"
             f"{'0' * 40} {C} refs/tags/v1\n{'0' * 40} {C} refs/notes/commits\n").encode()
    lines += f"{'0' * 40} {C} refs/heads/caf".encode() + b"\xe9\n"  # not UTF-8
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "--stdin"], input=lines, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    assert b"not announcing branch 'caf" in res.stderr and b"Traceback" not in res.stderr
    wait_for(lambda: listener.received, what="the server's notification")
    assert [(n.branch, n.commit, n.sender.endswith(":server")) for n in listener.received] \
        == [("main", C, True)]


def test_publish_cli_with_broker_down_exits_0_quickly(toolkit, env, make_repo):
    server = make_repo("down.git", bare=True)
    git(server, "config", "autosync.mqtt.url", f"mqtt://127.0.0.1:{free_port()}")
    start = time.monotonic()
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "--timeout", "2", "main", C], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0
    assert time.monotonic() - start < 5
    assert "connection refused" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr


def test_publish_cli_without_a_broker_is_silent(toolkit, env, make_repo):
    server = make_repo("quiet.git", bare=True)
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "main", C], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_publish_cli_arguments(mosquitto, config_for, peers, toolkit, env, make_repo):
    listener = peers(config_for(mosquitto.url), "l:1")
    wait_for(lambda: listener.t.connected, what="connect")
    server = make_repo("notes.git", bare=True)
    git(server, "config", "autosync.mqtt.url", mosquitto.url)
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "main", C, "bad+branch", C], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    assert "not announcing branch 'bad+branch'" in res.stderr
    wait_for(lambda: listener.received, what="the notification")
    assert [(n.channel, n.branch, n.commit) for n in listener.received] == [("notes", "main", C)]
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server), "main"],
                         env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 2 and "BRANCH COMMIT" in res.stderr
