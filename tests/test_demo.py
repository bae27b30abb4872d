"""`make demo`, run end to end exactly as a newcomer would, then stopped with its own script."""

import re
import subprocess

from conftest import ROOT


def test_make_demo_runs_on_its_own(env):
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "demo"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    out = res.stdout
    stop = re.search(r"^\s+(\S+/stop)$", out, re.M)
    try:
        assert res.returncode == 0, out
        arrivals = re.findall(r"-> in desktop after\s+(\d+) ms", out)
        assert len(arrivals) == 3, out
        assert "NOT in desktop" not in out
        assert "both versions kept, on both clones" in out, out
        assert "Traceback" not in out
    finally:
        if stop:
            subprocess.run([stop.group(1)], env=env, timeout=60)
    assert stop, out
