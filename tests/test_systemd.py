"""The systemd user units and autosync-systemd (instance names, writing units, no manager)."""

import configparser
import os
import shutil
import subprocess

import pytest

from autosync.systemd import escape_path
from conftest import ROOT


def units(toolkit):
    return toolkit.prefix / "share" / "git-autosync" / "systemd"


def parse(path):
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(path)
    return cp


def test_daemon_unit_is_type_notify_and_restarts_only_when_retrying_helps(toolkit):
    cp = parse(units(toolkit) / "git-autosync@.service")
    service = cp["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{toolkit.bin}/git-autosync -C /%I run"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["1", "2"]
    assert cp["Install"]["WantedBy"] == "default.target"


def test_periodic_sync_units(toolkit):
    timer = parse(units(toolkit) / "git-autosync-sync@.timer")
    assert timer["Timer"]["Persistent"] == "true" and timer["Timer"]["OnCalendar"]
    service = parse(units(toolkit) / "git-autosync-sync@.service")["Service"]
    assert service["Type"] == "oneshot" and service["ExecStart"].endswith(" sync")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_units(toolkit, tmp_path):
    for name in os.listdir(units(toolkit)):
        shutil.copy(units(toolkit) / name, tmp_path / name.replace("@.", "@home-u-notes."))
    names = sorted(str(p) for p in tmp_path.iterdir())
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *names],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout
    # and the check can fail: a broken copy is rejected
    broken = tmp_path / "git-autosync@home-u-broken.service"
    broken.write_text((tmp_path / "git-autosync@home-u-notes.service").read_text()
                      .replace("Type=notify", "Type=bogus"))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert "bogus" in res.stdout


@pytest.mark.parametrize("path", ["/", "/home/u/notes", "/home/u/my notes", "/srv/a-b/.x/ü",
                                  "//x//y/", "/tmp/semi;colon"])
def test_escaping_matches_systemd_escape(path):
    tool = shutil.which("systemd-escape")
    if not tool:
        pytest.skip("systemd-escape not installed")
    expected = subprocess.run([tool, "--path", path], stdout=subprocess.PIPE,
                              text=True).stdout.strip()
    assert escape_path(path) == expected


def test_enable_without_a_user_manager_writes_units_and_says_what_to_run(toolkit, tenv,
                                                                          make_repo, home):
    repo = make_repo("notes")
    env = dict(tenv, XDG_CONFIG_HOME=str(home / ".config"), DBUS_SESSION_BUS_ADDRESS="",
               XDG_RUNTIME_DIR=str(home / "no-runtime"))
    res = subprocess.run([toolkit.tool("autosync-systemd"), "enable", str(repo)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 0, res.stderr
    unit_dir = home / ".config" / "systemd" / "user"
    assert (unit_dir / "git-autosync@.service").read_text() == \
        (units(toolkit) / "git-autosync@.service").read_text()
    name = subprocess.run([toolkit.tool("autosync-systemd"), "name", str(repo)], env=env,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    assert f"systemctl --user enable --now 'git-autosync@{name}.service'" in res.stdout


def test_make_install_systemd_needs_repo(env):
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install-systemd", "PREFIX=/nonexistent"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode != 0


def test_bare_repository_needs_no_unit(toolkit, tenv, make_repo):
    bare = make_repo("srv.git", bare=True)
    res = subprocess.run([toolkit.tool("autosync-systemd"), "enable", str(bare)], env=tenv,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 1 and "bare repository" in res.stderr


def test_make_install_systemd_reads_as_success(toolkit, env, make_repo, home):
    """Run twice: the second time the repository has autosync already, said positively."""
    repo = make_repo("notes")
    env = dict(env, DBUS_SESSION_BUS_ADDRESS="", XDG_RUNTIME_DIR=str(home / "no-runtime"))
    for _ in range(2):
        res = subprocess.run(["make", "-s", "-C", str(ROOT), "install-systemd",
                              f"PREFIX={toolkit.prefix}", f"REPO={repo}"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert res.returncode == 0 and res.stderr == "", res.stderr
    assert f"git-autosync is already installed in '{repo}', up to date" in res.stdout
    assert "nothing to" not in res.stdout
    assert "systemctl --user enable --now 'git-autosync@" in res.stdout
