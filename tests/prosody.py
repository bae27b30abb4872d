"""A real prosody for the XMPP tests: loopback only, its own config, data and certificate.

Started in the foreground (-F) from a temp directory and stopped by PID. `make test`
installs prosody (apt-get, as root) when it is missing. Accounts are created with
prosodyctl; a MUC component serves rooms.localhost.
"""

import os
import subprocess

import pytest

from conftest import free_port
from servers import LoopbackServer, find, make_ca

DOMAIN = "localhost"
ROOMS = "rooms.localhost"


class Prosody(LoopbackServer):
    name = "prosody"

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
        self.ca_file = None
        ssl = ""
        if tls:
            self.ca_file, cert, key = make_ca(self.dir, names=(DOMAIN,))
            ssl = f'ssl = {{ certificate = "{cert}"; key = "{key}"; }}\n'
        self.conf = os.path.join(self.dir, "prosody.cfg.lua")
        self.command = (self.binary, "--config", self.conf, "-F")
        self.logfile = os.path.join(self.dir, "prosody.log")
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
