"""What the tests' real servers (mosquitto, prosody) share: finding the binary, a test CA,
and a process started from a temp directory, waited for on its loopback port and stopped by PID.

And what makes a killed test run leave nothing behind (conftest.py wires it up):
- every process a run starts carries RUN_VAR in its environment (the run's id, appended to
  the ids of any run that started this one), and `sweep(run)` ends every process whose
  environment names the run: daemons started with `git autosync start` (their own session,
  reparented to init), brokers, helpers detached by hooks, whatever they started;
- a reaper (this file run as a program, in its own session, deaf to Ctrl-C) sweeps the run
  as soon as pytest is gone, however it went: a normal end, Ctrl-C, SIGTERM, the time limit,
  SIGKILL;
- servers also get the kernel's parent-death signal (prctl(PR_SET_PDEATHSIG)), so that they
  end with pytest at once even before the reaper has looked.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

RUN_VAR = "AUTOSYNC_TEST_RUN"
PR_SET_PDEATHSIG = 1


def marked(run: str, exclude: tuple[int, ...] = (), var: str = RUN_VAR) -> list[int]:
    """The live processes (not zombies) whose environment names the test run `run` (in
    var, among the words of its value)."""
    key = f"{var}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state in (b"Z", b"X"):
            continue
        for var in environ:
            if var.startswith(key) and run.encode() in var[len(key):].split():
                found.append(int(entry))
                break
    return found


def terminate(living, grace: float) -> None:
    """SIGTERM the processes living() names, wait up to grace seconds for them to go, then
    SIGKILL whatever living() still names."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in living():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and living():
            time.sleep(0.05)


def sweep(run: str, grace: float = 3.0, exclude: tuple[int, ...] = ()) -> list[int]:
    """End every process of the test run: SIGTERM, then SIGKILL after grace seconds, until
    none is left (a process may start another while it goes). Returns the pids it found."""
    seen: list[int] = []
    for _ in range(20):
        pids = marked(run, exclude)
        if not pids:
            break
        seen += [p for p in pids if p not in seen]
        terminate(lambda: marked(run, exclude), grace)
        time.sleep(0.05)
    return seen


def start_reaper(run: str) -> subprocess.Popen:
    """A process that sweeps the run once the write end of its stdin closes (pytest ended,
    however). Started without RUN_VAR and in its own session: no sweep or Ctrl-C hits it."""
    env = {k: v for k, v in os.environ.items() if k != RUN_VAR}
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "reap", run,
                             str(os.getpid())], stdin=subprocess.PIPE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn giving the child SIGTERM when its parent (this process) dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


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
                                     start_new_session=True, preexec_fn=die_with_parent())
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


if __name__ == "__main__" and sys.argv[1:2] == ["reap"]:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # pytest never writes: this returns at EOF, when it is gone
    sweep(sys.argv[2], exclude=(int(sys.argv[3]),))
