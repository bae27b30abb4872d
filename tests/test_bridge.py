"""The MQTT/XMPP bridge against a real mosquitto and a real prosody."""

import os
import signal
import subprocess
import sys

import pytest

from autosync.bridge import Bridge
from autosync.message import encode
from autosync.mqtt import MqttTransport
from autosync.mqtt import publish_once as mqtt_publish_once
from autosync.xmpp import XmppClient, XmppTransport, q
from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster, wait_converged
from conftest import LIBEXEC, wait_for
from prosody import ROOMS, prosody  # noqa: F401  (fixture)
from test_xmpp import note, peers, xmpp_config  # noqa: F401  (fixtures)

ROOM = f"sync@{ROOMS}"


@pytest.fixture
def bridge(prosody, mosquitto, xmpp_config):
    jid = prosody.register("alice", "secret")
    b = Bridge(xmpp_config(prosody, jid, ROOM, mosquitto.url))
    b.start()
    wait_for(lambda: b.connected, what="the bridge to connect both sides")
    b.jid = jid
    yield b
    b.stop()


def room_client(prosody, jid, nick):
    c = XmppClient(jid, "secret", server="127.0.0.1", port=prosody.port,
                   ca_file=prosody.ca_file).connect(nick)
    c.join(ROOM, nick)
    return c


def bodies(client, count, timeout=10.0):
    """The bodies of the next count groupchat messages a raw client sees."""
    got = []
    for _ in range(200):
        stanza = client.next_stanza(timeout)
        assert stanza is not None, f"only {got} arrived"
        client.handle(stanza)
        body = stanza.find(q("body"))
        if stanza.tag == q("message") and body is not None:
            got.append(body.text)
            if len(got) == count:
                return got
    raise AssertionError("too many stanzas")


def test_bridge_relays_both_ways_without_loops(bridge, prosody, mosquitto, xmpp_config, peers):
    mq = peers(MqttTransport, xmpp_config(prosody, bridge.jid, ROOM, mosquitto.url), "mq:1")
    xm = peers(XmppTransport, xmpp_config(prosody, bridge.jid, ROOM), "xm:2")
    wait_for(lambda: mq.t.connected and xm.t.connected, what="both peers")
    assert mq.t.publish(note("mq:1", "1" * 40))
    wait_for(lambda: any(n.commit == "1" * 40 for n in xm.received), what="MQTT -> XMPP")
    assert xm.t.publish(note("xm:2", "2" * 40))
    wait_for(lambda: any(n.commit == "2" * 40 for n in mq.received), what="XMPP -> MQTT")
    wait_for(lambda: bridge.relayed == 2, what="two relays")
    assert xm.t.publish(note("xm:2", "3" * 40))
    wait_for(lambda: any(n.commit == "3" * 40 for n in mq.received), what="third")
    # a marker through the same path proves that anything bouncing would have arrived by now
    assert mq.t.publish(note("mq:1", "4" * 40))
    wait_for(lambda: any(n.commit == "4" * 40 for n in xm.received), what="marker")
    # relayed counts after the target side confirms, which may be just after delivery
    wait_for(lambda: bridge.relayed >= 4, what="the marker's relay to be counted")
    assert bridge.relayed == 4
    assert [n.commit for n in mq.received] == ["2" * 40, "3" * 40]
    assert [n.commit for n in xm.received] == ["1" * 40, "4" * 40]


def test_payload_crosses_verbatim(bridge, prosody, mosquitto, xmpp_config):
    """The XMPP body is exactly message.encode's JSON, sender and time included."""
    watcher = room_client(prosody, bridge.jid, "watcher")
    try:
        sent = note("origin:9", "9" * 40)
        config = xmpp_config(prosody, bridge.jid, ROOM, mosquitto.url)
        assert mqtt_publish_once(config, [sent])
        assert bodies(watcher, 1) == [encode(sent).decode()]
    finally:
        watcher.close()


def test_invalid_payloads_are_not_relayed(bridge, prosody, mosquitto, xmpp_config, peers):
    mq = peers(MqttTransport, xmpp_config(prosody, bridge.jid, ROOM, mosquitto.url), "mq:1")
    wait_for(lambda: mq.t.connected, what="the MQTT peer")
    junk = room_client(prosody, bridge.jid, "junk")
    try:
        for body in ("not json", '{"v":1}', encode(note("j:1")).decode().replace("main", "+")):
            junk.message(ROOM, body, "groupchat")
        junk.message(ROOM, encode(note("j:1", "7" * 40)).decode(), "groupchat", ack=True)
        wait_for(lambda: mq.received, what="the valid notification")
        wait_for(lambda: bridge.relayed >= 1, what="the relay to be counted")
        assert [n.commit for n in mq.received] == ["7" * 40] and bridge.relayed == 1
    finally:
        junk.close()


def test_bridge_command_runs_until_sigterm(prosody, mosquitto, xmpp_config, env):
    jid = prosody.register("alice", "secret")
    config = xmpp_config(prosody, jid, ROOM, mosquitto.url)
    cmd = [sys.executable, str(LIBEXEC / "autosync-bridge"), "-C", config.repo.cwd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watcher = None
    try:
        watcher = room_client(prosody, jid, "watcher")
        # retained on the broker and kept by the bridge until it is in the room: arrives
        # however far the bridge process has got with starting
        sent = note("origin:1", "1" * 40)
        assert mqtt_publish_once(config, [sent])
        assert bodies(watcher, 1, timeout=30) == [encode(sent).decode()]
    finally:
        if watcher is not None:
            watcher.close()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "relaying: origin:1" in err


def test_bridge_command_without_xmpp_config_is_one_clear_error(make_repo, env, mosquitto):
    repo = make_repo("plain")
    subprocess.run(["git", "-C", str(repo), "config", "autosync.mqtt.url", mosquitto.url],
                   check=True)
    res = subprocess.run([sys.executable, str(LIBEXEC / "autosync-bridge"), "-C", str(repo)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert res.stderr.startswith("git-autosync: the bridge needs both autosync.mqtt.url "
                                 "and autosync.xmpp.jid\nhint: ")
    assert "Traceback" not in res.stderr


def test_edit_reaches_the_other_clone_through_the_bridge(prosody, mosquitto, tmp_path, tenv,
                                                         toolkit):
    """A speaks MQTT, B only XMPP: A -> broker -> bridge -> prosody -> B, and back."""
    jid = prosody.register("alice", "secret")
    pw = tmp_path / "xmpp-pw"
    pw.write_text("secret\n")
    xmpp = {"xmpp_jid": jid, "xmpp_passwordFile": pw, "xmpp_server": "127.0.0.1",
            "xmpp_port": prosody.port, "xmpp_caFile": prosody.ca_file, "xmpp_room": ROOM}
    cluster = Cluster(tmp_path, tenv, toolkit)
    try:
        a = cluster.clone("a", start=False)
        a.config(mqtt_url=mosquitto.url, xmpp_bridge="true", **xmpp)  # A runs the bridge
        b = cluster.clone("b", start=False)
        b.config(**xmpp)
        a.start(), b.start()
        wait_for(lambda: "connected to xmpp" in b.log() and "connected to xmpp" in a.log()
                 and "subscribing to" in a.log(), what="both transports and the bridge")
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
