"""What the tests' real servers (mosquitto, prosody) share: finding the binary, a test CA,
and a process started from a temp directory, waited for on its loopback port and stopped by PID.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest


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


class LoopbackServer:
    """A server process listening on 127.0.0.1:self.port; subclasses set command and logfile."""

    name = "server"
    command = ()
    logfile = ""
    proc = None

    def start(self):
        self.proc = subprocess.Popen(list(self.command), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()  # never leave a half-started server behind
        raise RuntimeError(f"{self.name} did not start listening within 20 s")

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
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
