"""The systemd user units, `git autosync systemd enable|disable` and autosync-systemd (instance
names, the files written and removed, with and without a user manager)."""

import configparser
import os
import shutil
import subprocess
import sys

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


# -- git autosync systemd enable | disable: the files written, and removed ----------------------
FAKE_SYSTEMCTL = r'''#!PYTHON
"""A systemd user manager's systemctl, as far as the unit files go: it logs each call and
makes or removes the link `enable` and `disable` make (WantedBy= read from the unit)."""
import os, re, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SYSTEMCTL_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
assert args[0] == "--user", args
verb, rest = args[1], [a for a in args[2:] if not a.startswith("-")]
units = os.path.join(os.environ["XDG_CONFIG_HOME"], "systemd", "user")
if verb in ("show-environment", "daemon-reload"):
    sys.exit(0)
if verb == "is-active":
    sys.exit(3)  # inactive
unit = rest[0]
template = os.path.join(units, re.sub(r"@[^.]*\.", "@.", unit))
wanted_by = re.search(r"^WantedBy=(\S+)", open(template).read(), re.M).group(1)
link = os.path.join(units, wanted_by + ".wants", unit)
if verb == "enable":
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.islink(link):
        os.symlink(template, link)
elif verb == "disable":
    if os.path.islink(link):
        os.unlink(link)
        print(f"Removed \"{link}\".", file=sys.stderr)
else:
    sys.exit(f"fake systemctl: {verb} is not faked")
'''


def tree(path):
    """{relative path: 'link -> target' or the file's text} under path (but the record of
    what autosync wrote, .git-autosync.sha256)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            if name == ".git-autosync.sha256":
                continue
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, path)
            if os.path.islink(p):
                found[rel] = "link -> " + os.readlink(p)
            elif os.path.isfile(p):
                found[rel] = open(p).read()
            else:
                found[rel + "/"] = "dir"
    return found


@pytest.fixture
def no_manager(tenv, home):
    return dict(tenv, DBUS_SESSION_BUS_ADDRESS="", XDG_RUNTIME_DIR=str(home / "no-runtime"))


@pytest.fixture
def fake_manager(tenv, home, tmp_path):
    shim = tmp_path / "fake-bin"
    shim.mkdir()
    (shim / "systemctl").write_text(FAKE_SYSTEMCTL.replace("PYTHON", sys.executable, 1))
    (shim / "systemctl").chmod(0o755)
    calls = tmp_path / "systemctl.log"
    calls.write_text("")
    env = dict(tenv, PATH=f"{shim}{os.pathsep}{tenv['PATH']}", FAKE_SYSTEMCTL_LOG=str(calls))
    return env, calls


def autosync(env, *args, cwd):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def instance_name(toolkit, env, repo):
    return subprocess.run([toolkit.tool("autosync-systemd"), "name", str(repo)], env=env,
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def test_subcommand_enable_then_disable_without_a_manager(toolkit, no_manager, make_repo,
                                                         home):
    """The README's own cleanup step: enable writes the unit and its login link (as
    `systemctl enable` would), disable removes exactly those and lists them."""
    repo = make_repo("notes")
    unit_dir = home / ".config" / "systemd" / "user"
    before = tree(home)
    res = autosync(no_manager, "systemd", "enable", cwd=repo)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    name = instance_name(toolkit, no_manager, repo)
    unit = f"git-autosync@{name}.service"
    link = unit_dir / "default.target.wants" / unit
    assert (unit_dir / "git-autosync@.service").read_text() == \
        (units(toolkit) / "git-autosync@.service").read_text()
    assert os.readlink(link) == str(unit_dir / "git-autosync@.service")
    assert f"systemctl --user enable --now '{unit}'" in res.stdout
    assert set(tree(home)) - set(before) >= {".config/systemd/user/git-autosync@.service",
                                            f".config/systemd/user/default.target.wants/{unit}"}
    again = autosync(no_manager, "systemd", "enable", cwd=repo)  # idempotent
    assert again.returncode == 0 and "wrote" not in again.stdout
    res = autosync(no_manager, "systemd", "disable", cwd=repo)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert f"disabled {unit}" in res.stdout
    assert f"removed {link}" in res.stdout
    assert f"removed {unit_dir / 'git-autosync@.service'}" in res.stdout
    after = tree(home)
    # what is left is what was there, plus the (empty) unit directory enable made
    assert set(after) - set(before) <= {".config/", ".config/systemd/",
                                        ".config/systemd/user/"}, after
    assert {k: after.get(k) for k in before} == before
    assert not any(os.scandir(unit_dir))
    res = autosync(no_manager, "systemd", "disable", cwd=repo)
    assert res.returncode == 0 and "nothing to remove" in res.stdout


def test_disable_keeps_what_another_repository_uses(toolkit, no_manager, make_repo, home):
    a, b = make_repo("a"), make_repo("b")
    unit_dir = home / ".config" / "systemd" / "user"
    for args in (("enable",), ("enable", "--timer")):
        assert autosync(no_manager, "systemd", *args, cwd=a).returncode == 0
    assert autosync(no_manager, "systemd", "enable", cwd=b).returncode == 0
    na, nb = instance_name(toolkit, no_manager, a), instance_name(toolkit, no_manager, b)
    timer_link = unit_dir / "timers.target.wants" / f"git-autosync-sync@{na}.timer"
    assert os.readlink(timer_link) == str(unit_dir / "git-autosync-sync@.timer")
    assert (unit_dir / "git-autosync-sync@.service").is_file()
    res = autosync(no_manager, "systemd", "disable", cwd=a)
    assert res.returncode == 0, res.stderr
    # a's service and timer go, the timer's units with them; b's service stays, and the
    # template it uses
    assert tree(unit_dir) == {
        "git-autosync@.service": (units(toolkit) / "git-autosync@.service").read_text(),
        "default.target.wants/": "dir",
        f"default.target.wants/git-autosync@{nb}.service":
            f"link -> {unit_dir / 'git-autosync@.service'}"}
    for gone in (timer_link, unit_dir / "git-autosync-sync@.timer",
                 unit_dir / "git-autosync-sync@.service",
                 unit_dir / "default.target.wants" / f"git-autosync@{na}.service"):
        assert f"removed {gone}" in res.stdout
    assert f"removed {unit_dir / 'git-autosync@.service'}\n" not in res.stdout + "\n"
    res = autosync(no_manager, "systemd", "disable", "--timer", cwd=b)  # b has no timer
    assert res.returncode == 0 and "nothing to remove" in res.stdout
    res = autosync(no_manager, "systemd", "disable", cwd=b)
    assert res.returncode == 0 and tree(unit_dir) == {}


def test_with_a_user_manager_systemctl_enables_starts_and_disables(toolkit, fake_manager,
                                                                  make_repo, home):
    env, calls = fake_manager
    repo = make_repo("notes")
    unit_dir = home / ".config" / "systemd" / "user"
    name = instance_name(toolkit, env, repo)
    res = autosync(env, "systemd", "enable", "--timer", cwd=repo)
    assert res.returncode == 0, res.stderr
    timer = f"git-autosync-sync@{name}.timer"
    assert f"enabled {timer}: started now" in res.stdout
    assert calls.read_text().splitlines() == [
        "--user show-environment", "--user daemon-reload", f"--user enable --now {timer}"]
    assert os.readlink(unit_dir / "timers.target.wants" / timer) == \
        str(unit_dir / "git-autosync-sync@.timer")
    assert sorted(tree(unit_dir)) == ["git-autosync-sync@.service", "git-autosync-sync@.timer",
                                      "timers.target.wants/", f"timers.target.wants/{timer}"]
    calls.write_text("")
    res = autosync(env, "systemd", "disable", "--timer", cwd=repo)
    assert res.returncode == 0, res.stderr
    assert calls.read_text().splitlines() == [
        "--user show-environment", f"--user disable --now {timer}", "--user daemon-reload"]
    assert tree(unit_dir) == {}
    assert f"disabled {timer}" in res.stdout
    assert f"removed {unit_dir / 'git-autosync-sync@.timer'}" in res.stdout


def test_a_unit_file_that_is_not_ours_is_left_alone(no_manager, make_repo, home):
    repo = make_repo("notes")
    unit_dir = home / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    mine = unit_dir / "git-autosync@.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    res = autosync(no_manager, "systemd", "enable", cwd=repo)
    assert res.returncode == 1 and "not git-autosync's" in res.stderr
    assert len(res.stderr.splitlines()) == 2 and "Traceback" not in res.stderr
    res = autosync(no_manager, "systemd", "disable", cwd=repo)
    assert res.returncode == 0 and "nothing to remove" in res.stdout
    assert mine.read_text() == "[Service]\nExecStart=/bin/true\n"


def test_disable_by_path_after_the_repository_is_gone(no_manager, make_repo, home, tmp_path):
    repo = make_repo("notes")
    assert autosync(no_manager, "systemd", "enable", cwd=repo).returncode == 0
    shutil.rmtree(repo)
    res = autosync(no_manager, "systemd", "disable", "-C", str(repo), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert tree(home / ".config" / "systemd" / "user") == {}
    res = autosync(no_manager, "systemd", "enable", "-C", str(repo), cwd=tmp_path)
    assert res.returncode == 1 and "not a directory" in res.stderr


def test_uninstall_also_disables_what_enable_wrote(toolkit, no_manager, make_repo, home):
    """`make uninstall REPO=DIR` removes the units `git autosync systemd enable` wrote for
    DIR, so none is left pointing at a toolkit that may be removed next."""
    repo = make_repo("notes")
    unit_dir = home / ".config" / "systemd" / "user"
    for args in (("enable",), ("enable", "--timer")):
        assert autosync(no_manager, "systemd", *args, cwd=repo).returncode == 0
    assert any(os.scandir(unit_dir))
    res = subprocess.run([toolkit.tool("autosync-install"), "uninstall", str(repo)],
                         env=no_manager, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "disabled git-autosync@" in res.stdout and "git-autosync-sync@" in res.stdout
    assert not [e.name for e in os.scandir(unit_dir)], tree(unit_dir)
