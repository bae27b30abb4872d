"""A real mosquitto for the tests: anonymous, with passwords and ACLs, or with TLS.

Listens on 127.0.0.1 and a free port only, lives in a temp directory, and is stopped by
PID. `make test` installs mosquitto (apt-get, as root) when it is missing.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port


def find(binary):
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin")


def need(binary):
    path = find(binary)
    if path is None:
        if os.geteuid() == 0:
            pytest.fail(f"{binary} is missing; 'make test' installs it (apt-get)")
        pytest.skip(f"{binary} is not installed (sudo apt-get install mosquitto openssl)")
    return path


def make_ca(directory, names=("127.0.0.1", "localhost")):
    """A test CA and a server certificate for names; returns (ca.crt, server.crt, server.key)."""
    openssl = need("openssl")
    d = str(directory)
    run = lambda *a: subprocess.run([openssl, *a], cwd=d, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=git-autosync test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
        "-keyout", "server.key", "-out", "server.csr")
    sans = ",".join(("IP:" if n[0].isdigit() or ":" in n else "DNS:") + n for n in names)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
    return (os.path.join(d, "ca.crt"), os.path.join(d, "server.crt"),
            os.path.join(d, "server.key"))


class Mosquitto:
    """mosquitto in directory; users={name: password} and acl (text) turn on authentication."""

    def __init__(self, directory, users=None, acl=None, tls=False):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.binary = need("mosquitto")
        self.port = free_port()
        self.proc = None
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

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 15 s")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            with open(os.path.join(self.dir, "mosquitto.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


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
