"""A real mosquitto for the tests: anonymous, with passwords and ACLs, or with TLS.

Listens on 127.0.0.1 and a free port only, lives in a temp directory, and is stopped by
PID. `make test` installs mosquitto (apt-get, as root) when it is missing.
"""

import contextlib
import json
import os
import subprocess

import paho.mqtt.client as paho
import pytest

from conftest import free_port, wait_for
from servers import LoopbackServer, find, make_ca, need  # noqa: F401  (re-exported)


class Mosquitto(LoopbackServer):
    name = "mosquitto"

    """mosquitto in directory; users={name: password} and acl (text) turn on authentication."""

    def __init__(self, directory, users=None, acl=None, tls=False):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.binary = need("mosquitto")
        self.port = free_port()
        self.ca_file = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false",
                 f"log_dest file {self.dir}/mosquitto.log", "log_type all"]
        if os.geteuid() == 0:  # as root mosquitto would switch to user mosquitto, who
            lines.append("user root")  # cannot read the test's private temp directory
        if users:
            pw = os.path.join(self.dir, "passwd")
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([need("mosquitto_passwd"), "-b"] + (["-c"] if i == 0 else [])
                               + [pw, user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            path = os.path.join(self.dir, "acl")
            with open(path, "w") as f:
                f.write(acl)
            lines.append(f"acl_file {path}")
        if tls:
            self.ca_file, cert, key = make_ca(self.dir)
            lines += [f"certfile {cert}", f"keyfile {key}"]
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        self.command = (self.binary, "-c", self.conf)
        self.logfile = os.path.join(self.dir, "mosquitto.log")


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


USERS = {"laptop": "laptop-secret", "desktop": "desktop-secret", "server": "server-secret",
         "other": "other-secret"}
ACL = """\
user laptop
topic readwrite autosync/notes/#
user desktop
topic readwrite autosync/notes/#
user server
topic readwrite autosync/notes/#
user other
topic readwrite autosync/other/#
"""


@pytest.fixture
def cluster(tmp_path, tenv, toolkit, mosquitto):
    """A bare server and clones with real daemons, notified through `mosquitto`."""
    from cluster import Cluster
    c = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    yield c
    c.stop()


@pytest.fixture
def mosquitto_auth(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto-auth", users=USERS, acl=ACL).start()
    broker.users = USERS
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto-tls", tls=True).start()
    yield broker
    broker.stop()


SENTINEL = "autosync/notes/test-sentinel"  # inside every ACL that lets one read notes


class Subscriber:
    """A plain paho client on `topic` (default: every announcement) recording what arrives."""

    def __init__(self, port, username=None, password=None, topic="autosync/#"):
        self.received = []
        self.subscribed = False
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, msg: self.received.append(
            (msg.topic, bytes(msg.payload)))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: setattr(self, "subscribed", True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(lambda: self.subscribed, what="the subscriber to subscribe")

    def notes(self, commit=None):
        """The notifications received (decoded JSON), those naming commit only if given."""
        found = [json.loads(p) for t, p in self.received if t != SENTINEL]
        return [n for n in found if commit is None or n["commit"] == commit]

    def topics(self):
        return [t for t, _ in self.received]

    def drain(self):
        """Everything that arrived before now: a message of our own, sent after whatever
        the server published, comes back after it (one broker, QoS 1, in order)."""
        self.client.publish(SENTINEL, b"end", qos=1).wait_for_publish(10)
        wait_for(lambda: SENTINEL in self.topics(), what="the sentinel")
        return [(t, p) for t, p in self.received if t != SENTINEL]

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def raw_client(port):
    """A plain paho client on the broker at 127.0.0.1:port, to publish anything at all."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()
