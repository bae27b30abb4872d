"""A real prosody for the XMPP tests: loopback only, its own config, data and certificate.

Started in the foreground (-F) from a temp directory and stopped by PID. `make test`
installs prosody (apt-get, as root) when it is missing. Accounts are created with
prosodyctl; a MUC component serves rooms.localhost.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

from brokers import find, make_ca
from conftest import free_port

DOMAIN = "localhost"
ROOMS = "rooms.localhost"


class Prosody:
    def __init__(self, directory, tls=True):
        self.dir = str(directory)
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.binary = find("prosody")
        self.ctl = find("prosodyctl")
        if not self.binary or not self.ctl:
            if os.geteuid() == 0:
                pytest.fail("prosody is missing; 'make test' installs it (apt-get)")
            pytest.skip("prosody is not installed (sudo apt-get install prosody)")
        self.port = free_port()
        self.proc = None
        self.ca_file = None
        ssl = ""
        if tls:
            self.ca_file, cert, key = make_ca(self.dir, names=(DOMAIN,))
            ssl = f'ssl = {{ certificate = "{cert}"; key = "{key}"; }}\n'
        self.conf = os.path.join(self.dir, "prosody.cfg.lua")
        with open(self.conf, "w") as f:
            f.write(f"""\
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
certificates = "{self.dir}"
run_as_root = true
c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", {'"tls", ' if tls else ''}"disco", "ping", "posix" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
c2s_require_encryption = {'true' if tls else 'false'}
muc_room_locking = false
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{self.dir}/prosody.log" }} }}
{ssl}
VirtualHost "{DOMAIN}"
Component "{ROOMS}" "muc"
""")

    def register(self, user, password):
        subprocess.run([self.ctl, "--config", self.conf, "register", user, DOMAIN, password],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        return f"{user}@{DOMAIN}"

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--config", self.conf, "-F"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("prosody did not start listening within 20 s")

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
            with open(os.path.join(self.dir, "prosody.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture
def prosody(tmp_path):
    server = Prosody(tmp_path / "prosody")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prosody_plain(tmp_path):
    server = Prosody(tmp_path / "prosody-plain", tls=False)
    server.start()
    yield server
    server.stop()
