"""Notification messages (strict decoding) and the MQTT transport against a real mosquitto."""

import json
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autosync.config import Config
from autosync.git import Repo
from autosync.message import BadMessage, Notification, decode, encode, topic
from autosync.mqtt import MqttTransport, parse_url, publish_once
from autosync.util import Error
from brokers import mosquitto, mosquitto_auth, mosquitto_tls  # noqa: F401  (fixtures)
from conftest import git, wait_for

C = "c0ffee" * 6 + "c0ff"


def note(commit=C, sender="laptop:12345678", branch="main", channel="notes"):
    return Notification(channel, branch, commit, sender, 1764032400.5)


# -- messages ------------------------------------------------------------------------------
def test_round_trip_and_topic():
    n = note(branch="feature/x")
    assert decode(encode(n), "autosync/notes/feature/x") == n
    assert topic("notes", "main") == "autosync/notes/main"
    assert len(encode(n)) <= 1024


HOSTILE = [
    b"not json", b"", b"[]", b"null", b'"string"', b"{}",
    json.dumps({"v": 2, "channel": "notes", "branch": "main", "commit": C, "sender": "x",
                "time": 1}).encode(),
    json.dumps({"v": True, "channel": "notes", "branch": "main", "commit": C, "sender": "x",
                "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "../x", "commit": C, "sender": "x",
                "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "--upload-pack=touch /tmp/pwn",
                "commit": C, "sender": "x", "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "main", "commit": "g" * 40,
                "sender": "x", "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "main", "commit": C.upper(),
                "sender": "x", "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "../..", "branch": "main", "commit": C, "sender": "x",
                "time": 1}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "main", "commit": C, "sender": "x",
                "time": 1, "url": "file:///etc"}).encode(),
    json.dumps({"v": 1, "channel": "notes", "branch": "main", "commit": C,
                "sender": {"nested": [1, 2]}, "time": 1}).encode(),
    b'{"v":1,"channel":"notes","branch":"main","commit":"' + C.encode()
    + b'","sender":"x","time":NaN}',
    b'{"v":1,"channel":"notes","branch":"main","commit":"' + C.encode()
    + b'","sender":"x","time":1e999}',
    b"[" * 1000,
    b"x" * (10 * 1024 * 1024),
]


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payloads_are_rejected(payload):
    with pytest.raises(BadMessage):
        decode(payload, "autosync/notes/main")


def test_topic_must_match_payload():
    with pytest.raises(BadMessage):
        decode(encode(note()), "autosync/notes/other")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_never_raises_anything_but_bad_message(data):
    try:
        decode(data)
    except BadMessage:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "channel", "branch", "commit", "sender", "time",
                                        "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=60), st.lists(st.integers(), max_size=3))))
def test_decoded_fields_are_always_safe(data):
    """Whatever a payload holds, an accepted one names a plain branch and a hex commit."""
    try:
        n = decode(json.dumps(data).encode())
    except BadMessage:
        return
    assert not n.branch.startswith("-") and ".." not in n.branch
    assert all(c in "0123456789abcdef" for c in n.commit)


def test_parse_url():
    assert parse_url("mqtt://127.0.0.1:1884") == (False, "127.0.0.1", 1884)
    assert parse_url("mqtts://broker.example.org") == (True, "broker.example.org", 8883)
    assert parse_url("mqtt://[::1]") == (False, "::1", 1883)
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://u:p@h", "mqtt://h/path"):
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


def test_publish_once_with_broker_down_returns_false_in_bounded_time(config_for):
    from conftest import free_port
    config = config_for(f"mqtt://127.0.0.1:{free_port()}")
    start = time.monotonic()
    assert publish_once(config, [note()], timeout=2.0) is False
    assert time.monotonic() - start < 3.0


def test_hostile_payloads_on_the_wire_are_dropped(mosquitto, config_for, peers, caplog):
    a = peers(config_for(mosquitto.url), "a:00000001")
    wait_for(lambda: a.t.connected, what="connect")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        for payload in HOSTILE[:-1] + [b"y" * (2 * 1024 * 1024)]:
            client.publish("autosync/notes/main", payload, qos=1).wait_for_publish(10)
        client.publish("autosync/notes/main", encode(note(sender="good:1")),
                       qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    wait_for(lambda: a.received, what="the one good notification")
    assert [n.sender for n in a.received] == ["good:1"]
    assert a.t.connected


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
    # 'other' may log in but the ACL keeps it out of the notes channel
    assert publish_once(cfg("other", "other-secret", channel="notes"), [note(sender="o:1")])
    assert publish_once(cfg("desktop", "desktop-secret"), [note(sender="d:2")])
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
    from brokers import make_ca
    other = tmp_path / "other-ca"
    other.mkdir()
    wrong_ca = make_ca(other)[0]
    a = peers(config_for(mosquitto_tls.url, caFile=wrong_ca), "a:1")
    wait_for(lambda: a.t.last_error, what="the certificate error")
    assert "cannot verify the certificate" in a.t.last_error
    assert not a.t.connected


def test_publish_cli_reads_post_receive_lines(mosquitto, config_for, peers, toolkit, env,
                                              make_repo):
    listener = peers(config_for(mosquitto.url), "l:1")
    wait_for(lambda: listener.t.connected, what="connect")
    server = make_repo("notes.git", bare=True)
    git(server, "config", "autosync.mqtt.url", mosquitto.url)
    lines = (f"{'0' * 40} {C} refs/heads/main\n{C} {'0' * 40} refs/heads/gone\n"
             f"{'0' * 40} {C} refs/tags/v1\n")
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "--stdin"], input=lines, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: listener.received, what="the server's notification")
    assert [(n.branch, n.commit, n.sender.endswith(":server")) for n in listener.received] \
        == [("main", C, True)]


def test_publish_cli_with_broker_down_exits_0_quickly(toolkit, env, make_repo):
    from conftest import free_port
    server = make_repo("down.git", bare=True)
    git(server, "config", "autosync.mqtt.url", f"mqtt://127.0.0.1:{free_port()}")
    start = time.monotonic()
    res = subprocess.run([toolkit.tool("autosync-publish"), "--git-dir", str(server),
                          "--timeout", "2", "main", C], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 0
    assert time.monotonic() - start < 5
    assert "connection refused" in res.stderr and "Traceback" not in res.stderr
