"""A real mosquitto for the tests: anonymous, with passwords and ACLs, or with TLS.

Listens on 127.0.0.1 and a free port only, lives in a temp directory, and is stopped by
PID. `make test` installs mosquitto (apt-get, as root) when it is missing.
"""

import os
import subprocess

import pytest

from conftest import free_port
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
