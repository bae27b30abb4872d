"""The XMPP client, transport and bridge against a real prosody (and mosquitto for the bridge)."""

import base64
import socket
import threading

import pytest

from autosync.bridge import Bridge
from autosync.config import Config
from autosync.git import Repo
from autosync.message import Notification
from autosync.mqtt import MqttTransport
from autosync.xmpp import (MAX_STANZA, StreamError, StreamParser, XmppClient, XmppError,
                           XmppTransport, publish_once, scram_client)
from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster, wait_converged
from conftest import git, wait_for
from prosody import ROOMS, prosody, prosody_plain  # noqa: F401  (fixtures)

C = "ab" * 20


def note(sender, commit=C):
    return Notification("notes", "main", commit, sender, 1764032400.0)


def client(server, jid, password="secret", **kw):
    kw.setdefault("ca_file", server.ca_file)
    return XmppClient(jid, password, server="127.0.0.1", port=server.port, **kw)


# -- the protocol pieces ------------------------------------------------------------------------
def test_scram_sha1_matches_the_rfc_5802_example():
    conv = scram_client("user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert next(conv) == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = conv.send(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,"
                      b"i=4096")
    assert final == (b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                     b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert conv.send(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") is None


def test_scram_rejects_a_server_that_does_not_know_the_password():
    conv = scram_client("user", "pencil", nonce="abc")
    next(conv)
    conv.send(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
    with pytest.raises(XmppError, match="failed to prove"):
        conv.send(b"v=" + base64.b64encode(b"x" * 20))


def test_scram_rejects_a_foreign_nonce_and_absurd_iterations():
    for challenge in (b"r=zzz,s=QSXCR+Q6sek8bf92,i=4096", b"r=abcd,s=QSXCR+Q6sek8bf92,i=999999999"):
        conv = scram_client("user", "pencil", nonce="abc")
        next(conv)
        with pytest.raises(XmppError):
            conv.send(challenge)


HEAD = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
       b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"


@pytest.mark.parametrize("hostile", [
    b"<message><body>" + b"A" * (MAX_STANZA + 10) + b"</body></message>",
    b"<message><body>unclosed</message>",
    b"<!DOCTYPE lol [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]><message/>",
    b"<?evil instruction?><message/>",
    b"<a>" * 100,
    b"</stream:stream>",
], ids=["oversized", "malformed", "entities", "pi", "deep", "closed"])
def test_hostile_streams_end_cleanly(hostile):
    parser = StreamParser()
    parser.feed(HEAD)
    with pytest.raises(StreamError):
        for i in range(0, len(hostile), 1000):  # arrives in pieces, as from a socket
            parser.feed(hostile[i:i + 1000])


def test_parser_memory_stays_bounded():
    parser = StreamParser()
    parser.feed(HEAD)
    for i in range(5000):
        got = parser.feed(b"<message><body>x</body></message>")
        assert len(got) == 1
    assert len(parser.root) == 0


# -- against prosody ------------------------------------------------------------------------------
def test_login_with_scram_over_starttls(prosody):
    jid = prosody.register("alice", "secret")
    c = client(prosody, jid).connect()
    try:
        assert c.tls and c.jid.startswith("alice@localhost/")
    finally:
        c.close()


def test_wrong_password_is_one_clear_error(prosody):
    jid = prosody.register("alice", "secret")
    with pytest.raises(XmppError) as e:
        client(prosody, jid, "wrong").connect()
    assert e.value.message == "the xmpp server refused the login for 'alice@localhost' " \
                              "(not-authorized)"


def test_wrong_ca_is_refused(prosody, tmp_path):
    from brokers import make_ca
    (tmp_path / "other").mkdir()
    wrong = make_ca(tmp_path / "other", names=("localhost",))[0]
    jid = prosody.register("alice", "secret")
    with pytest.raises(XmppError, match="cannot verify the certificate"):
        client(prosody, jid, ca_file=wrong).connect()


def test_plaintext_only_when_allowed(prosody_plain):
    jid = prosody_plain.register("bob", "secret")
    with pytest.raises(XmppError, match="does not offer STARTTLS"):
        client(prosody_plain, jid).connect()
    c = client(prosody_plain, jid, allow_plaintext=True).connect()
    assert not c.tls
    c.close()


def test_connection_refused_is_one_line(tmp_path):
    from conftest import free_port
    with pytest.raises(XmppError, match="cannot connect to the xmpp server 127.0.0.1:"):
        XmppClient("a@localhost", "x", server="127.0.0.1", port=free_port()).connect()


def test_a_hostile_server_cannot_crash_the_client():
    """A real socket peer that answers with an entity bomb: the client ends the stream."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def evil():
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(HEAD + b"<!DOCTYPE x [<!ENTITY a 'b'>]><stream:features/>")
        conn.recv(4096)
        conn.close()
    t = threading.Thread(target=evil)
    t.start()
    try:
        with pytest.raises(XmppError, match="DTD"):
            XmppClient("a@localhost", "x", server="127.0.0.1", port=srv.getsockname()[1],
                       timeout=5).connect()
    finally:
        t.join(10)
        srv.close()


# -- the transport ------------------------------------------------------------------------------
@pytest.fixture
def xmpp_config(make_repo, tmp_path):
    counter = iter(range(100))

    def make(server, jid, room=None, mqtt_url=None):
        path = make_repo(f"x{next(counter)}")
        pw = tmp_path / f"pw{next(counter)}"
        pw.write_text("secret\n")
        settings = {"autosync.channel": "notes", "autosync.xmpp.jid": jid,
                    "autosync.xmpp.passwordFile": str(pw), "autosync.xmpp.server": "127.0.0.1",
                    "autosync.xmpp.port": str(server.port),
                    "autosync.xmpp.caFile": server.ca_file}
        if room:
            settings["autosync.xmpp.room"] = room
        if mqtt_url:
            settings["autosync.mqtt.url"] = mqtt_url
        for k, v in settings.items():
            git(path, "config", k, v)
        return Config(Repo(path))
    return make


class Peer:
    def __init__(self, transport_class, config, sender):
        self.received, self.connects = [], 0
        self.t = transport_class(config, sender, self.received.append, self.on_connect)
        self.t.start()

    def on_connect(self):
        self.connects += 1


@pytest.fixture
def peers():
    made = []

    def make(*args):
        p = Peer(*args)
        made.append(p)
        return p
    yield make
    for p in made:
        p.t.stop()


@pytest.mark.parametrize("use_room", [False, True], ids=["own-jid", "muc-room"])
def test_transport_round_trip(prosody, xmpp_config, peers, use_room):
    jid = prosody.register("alice", "secret")
    room = f"sync@{ROOMS}" if use_room else None
    a = peers(XmppTransport, xmpp_config(prosody, jid, room), "a:1")
    b = peers(XmppTransport, xmpp_config(prosody, jid, room), "b:2")
    wait_for(lambda: a.t.connected and b.t.connected, what="both logged in")
    wait_for(lambda: a.t.publish(note("a:1")) and b.received, what="b to hear a")
    assert b.received[0].sender == "a:1" and b.received[0].commit == C
    assert all(n.sender != "a:1" for n in a.received)  # never its own


def test_transport_reconnects_after_server_restart(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    a = peers(XmppTransport, xmpp_config(prosody, jid), "a:1")
    wait_for(lambda: a.connects == 1, what="first login")
    prosody.restart()
    wait_for(lambda: a.connects == 2, timeout=30, what="login after the restart")
    assert a.t.last_error is None


def test_publish_once(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    listener = peers(XmppTransport, xmpp_config(prosody, jid), "l:1")
    wait_for(lambda: listener.t.connected, what="login")
    assert publish_once(xmpp_config(prosody, jid), [note("server:server")])
    wait_for(lambda: listener.received, what="the notification")


# -- the bridge ---------------------------------------------------------------------------------
def test_bridge_relays_both_ways_without_loops(prosody, mosquitto, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    room = f"sync@{ROOMS}"
    bridge = Bridge(xmpp_config(prosody, jid, room, mosquitto.url))
    bridge.start()
    try:
        wait_for(lambda: bridge.connected, what="the bridge to connect both sides")
        mq = peers(MqttTransport, xmpp_config(prosody, jid, room, mosquitto.url), "mq:1")
        xm = peers(XmppTransport, xmpp_config(prosody, jid, room), "xm:2")
        wait_for(lambda: mq.t.connected and xm.t.connected, what="both peers")
        mq.t.publish(note("mq:1", "1" * 40))
        wait_for(lambda: any(n.commit == "1" * 40 for n in xm.received), what="MQTT -> XMPP")
        xm.t.publish(note("xm:2", "2" * 40))
        wait_for(lambda: any(n.commit == "2" * 40 for n in mq.received), what="XMPP -> MQTT")
        # settle, then check that nothing bounced around
        wait_for(lambda: bridge.relayed >= 2, what="relays")
        relayed = bridge.relayed
        xm.t.publish(note("xm:2", "3" * 40))
        wait_for(lambda: any(n.commit == "3" * 40 for n in mq.received), what="third")
        assert bridge.relayed == relayed + 1
        assert [n.commit for n in mq.received].count("2" * 40) == 1
    finally:
        bridge.stop()


def test_edit_reaches_the_other_clone_through_the_bridge(prosody, mosquitto, tmp_path, tenv,
                                                         toolkit):
    """A speaks MQTT, B only XMPP: A -> broker -> bridge -> prosody -> B, and back."""
    jid = prosody.register("alice", "secret")
    pw = tmp_path / "xmpp-pw"
    pw.write_text("secret\n")
    xmpp = {"xmpp_jid": jid, "xmpp_passwordFile": pw, "xmpp_server": "127.0.0.1",
            "xmpp_port": prosody.port, "xmpp_caFile": prosody.ca_file,
            "xmpp_room": f"sync@{ROOMS}"}
    cluster = Cluster(tmp_path, tenv, toolkit)
    try:
        a = cluster.clone("a", start=False)
        a.config(mqtt_url=mosquitto.url, xmpp_bridge="true", **xmpp)  # A runs the bridge
        b = cluster.clone("b", start=False)
        b.config(**xmpp)
        a.start(), b.start()
        wait_for(lambda: "connected to xmpp" in b.log() and "subscribing" in a.log(),
                 what="both transports")
        a.write("via-bridge.txt", "from a over mqtt and xmpp\n")
        wait_for(lambda: b.read("via-bridge.txt") == "from a over mqtt and xmpp\n",
                 what="A's edit at B")
        b.write("back.txt", "from b over xmpp and mqtt\n")
        wait_for(lambda: a.read("back.txt") == "from b over xmpp and mqtt\n",
                 what="B's edit at A")
        wait_converged([a, b], cluster.server)
        assert "announced" in b.log() and "announced" in a.log()
    finally:
        cluster.stop()
