"""Nothing keeps running by accident: `make demo` run end to end exactly as a newcomer
would (its daemons and broker stop by themselves), and a test run that is killed."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, wait_for
from servers import RUN_VAR, marked, sweep


def test_make_demo_runs_on_its_own_then_stops_by_itself(env):
    """A newcomer who walks away: after DEMO_MINUTES the daemons and the broker end."""
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "demo", "DEMO_MINUTES=0.05"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=180)
    out = res.stdout
    stop = re.search(r"^\s+(\S+/stop)$", out, re.M)
    try:
        assert res.returncode == 0, out
        arrivals = re.findall(r"-> in desktop after\s+(\d+) ms", out)
        assert len(arrivals) == 3, out
        assert "NOT in desktop" not in out
        assert "both versions kept, on both clones" in out, out
        assert "Traceback" not in out
        assert "It stops by itself in 0.05 minutes" in out, out
        keep = re.search(r"^\s+touch (\S+/keep)\s", out, re.M)
        assert keep and "DEMO_MINUTES=0" in out, out
        sandbox = os.path.dirname(keep.group(1))
        broker = re.search(r"\(pid (\d+)\)", out)
        clones = [os.path.join(sandbox, name) for name in ("laptop", "desktop")]

        def stopped():
            daemons = [subprocess.run(["git", "-C", c, "autosync", "status"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                                      ).returncode for c in clones]
            return daemons == [3, 3] and not (broker and alive(int(broker.group(1))))
        wait_for(stopped, timeout=60, what="the demo's daemons and broker to stop")
        assert os.path.isdir(clones[0])  # the files stay until the stop script
    finally:
        if stop:
            subprocess.run([stop.group(1)], env=env, timeout=60)
    assert stop, out
    assert not os.path.exists(os.path.dirname(stop.group(1)))


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "share" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_timer_halts_unless_kept_or_gone(tmp_path):
    demo = load_demo()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    halt = sandbox / "halt"
    halt.write_text(f"#!/bin/sh\necho halted >> {tmp_path / 'halted'}\n")
    halt.chmod(0o755)
    assert demo.expire(str(sandbox), 0.1, poll=0.02) is True
    assert (tmp_path / "halted").read_text() == "halted\n"
    (sandbox / "keep").touch()
    assert demo.expire(str(sandbox), 0.1, poll=0.02) is False
    assert demo.expire(str(tmp_path / "removed"), 0.1, poll=0.02) is False
    assert (tmp_path / "halted").read_text() == "halted\n"


INNER = '''
import os, subprocess, sys, time
from brokers import Mosquitto
from conftest import LIBEXEC, git

def test_leaves_things_running(tmp_path, env, server_and_clones):
    server, clone = server_and_clones
    work = clone("work")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    git(work, "config", "autosync.mqtt.url", broker.url)
    subprocess.run([sys.executable, str(LIBEXEC / "git-autosync"), "-C", str(work), "start"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    daemon = int((work / ".git" / "autosync" / "daemon.pid").read_text())
    helper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open({ready!r} + ".tmp", "w") as f:
        f.write(" ".join([os.environ["{var}"].split()[-1], str(broker.proc.pid), str(daemon),
                          str(helper.pid)]))
    os.rename({ready!r} + ".tmp", {ready!r})
    time.sleep(600)
'''


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C", "SIGKILL", "timeout"])
def test_a_killed_test_run_leaves_no_process_behind(env, tmp_path, how):
    """A pytest run that started a broker, a daemon (`git autosync start`: its own session)
    and a detached helper is killed: none of them survives it."""
    ready = tmp_path / "ready"
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(textwrap.dedent(INNER).format(ready=str(ready),
                                                                       var=RUN_VAR))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
            "--rootdir", str(inner), str(inner / "test_inner.py")]
    args += ["--timeout=15"] if how == "timeout" else ["--timeout=0"]
    # (the default SIGINT: a run started with & by a shell passes it on ignored)
    proc = subprocess.Popen(args, cwd=inner, env=dict(env, PYTHONPATH=str(ROOT / "tests")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = None
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=120,
                 what="the inner run to start its processes")
        assert ready.exists(), proc.communicate()[0].decode(errors="replace")
        run, *pids = ready.read_text().split()
        assert all(alive(int(p)) for p in pids)
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        elif how == "Ctrl-C":  # the terminal signals the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "SIGKILL":
            proc.kill()
        out = proc.communicate(timeout=120)[0].decode(errors="replace")
        wait_for(lambda: not marked(run) and not any(alive(int(p)) for p in pids),
                 timeout=30, what=f"every process of the killed run to end ({pids})")
        if how == "timeout":
            assert "Timeout" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if run:
            sweep(run)
