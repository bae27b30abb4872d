"""The front end: help, exit codes, one-line errors, status output; the man page."""

import json
import re
import shutil
import subprocess

import pytest

from autosync.config import KEYS
from conftest import ROOT


def run(tenv, *args, cwd=None):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=tenv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def test_help_lists_commands_and_exit_codes(tenv, tmp_path):
    res = run(tenv, "-h", cwd=tmp_path)
    assert res.returncode == 0
    for word in ("run", "start", "stop", "status", "sync", "log", "systemd", "exit codes",
                 "75 retry later"):
        assert word in res.stdout


@pytest.mark.skipif(not shutil.which("man"), reason="man not installed")
def test_dash_dash_help_opens_the_installed_man_page(tenv, tmp_path):
    """git turns `git autosync --help` into `man git-autosync`: the page must be found."""
    res = run(dict(tenv, MANPAGER="cat", PAGER="cat", MANWIDTH="80"), "--help", cwd=tmp_path)
    assert res.returncode == 0 and "EXIT STATUS" in res.stdout


@pytest.mark.parametrize("command", ["run", "start", "stop", "status", "sync", "log",
                                     "systemd"])
def test_each_command_has_help(tenv, tmp_path, command):
    res = run(tenv, command, "-h", cwd=tmp_path)
    assert res.returncode == 0 and f"git autosync {command}" in res.stdout


def test_unknown_command_is_a_usage_error(tenv, tmp_path):
    res = run(tenv, "frobnicate", cwd=tmp_path)
    assert res.returncode == 2 and "invalid choice" in res.stderr
    assert "Traceback" not in res.stderr


def test_outside_a_repository_is_one_line(tenv, tmp_path):
    res = run(tenv, "status", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines()[0] == f"git-autosync: not a git repository: '{tmp_path}'"


def test_status_and_stop_when_not_running(tenv, make_repo):
    repo = make_repo("r")
    res = run(tenv, "status", cwd=repo)
    assert res.returncode == 3 and "not running" in res.stdout
    assert "last commit:" in res.stdout
    info = json.loads(run(tenv, "status", "--json", cwd=repo).stdout)
    assert info["running"] is False and info["last_commit"]["message"] == "init"
    res = run(tenv, "stop", cwd=repo)
    assert res.returncode == 3 and "not running" in res.stdout


def test_status_shows_conflict_copies_and_unpushed(tenv, server_and_clones):
    _, clone = server_and_clones
    repo = clone("c")
    (repo / "n.conflict-laptop-20261125-101010.md").write_text("other")
    subprocess.run(["git", "add", "."], cwd=repo, env=tenv, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, env=tenv, check=True)
    out = run(tenv, "status", cwd=repo).stdout
    assert "conflict copy: n.conflict-laptop-20261125-101010.md" in out
    assert "unpushed:      1 commits" in out


def test_start_refuses_a_detached_head_with_one_line(tenv, make_repo):
    repo = make_repo("d")
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=repo, env=tenv, check=True)
    res = run(tenv, "start", cwd=repo)
    assert res.returncode == 1 and res.stderr.startswith("git-autosync: HEAD is detached")


def test_version(tenv, tmp_path):
    res = run(tenv, "--version", cwd=tmp_path)
    assert res.returncode == 0 and re.match(r"git-autosync \d+\.\d+\.\d+", res.stdout)


def test_man_page_documents_every_key():
    page = (ROOT / "share" / "man" / "man1" / "git-autosync.1").read_text()
    for key in KEYS:
        assert f".B {key}\n" in page, key


@pytest.mark.skipif(not shutil.which("man"), reason="man not installed")
def test_man_page_renders_without_warnings():
    res = subprocess.run(["man", "-l", str(ROOT / "share" / "man" / "man1" / "git-autosync.1")],
                         env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "MANPAGER": "cat",
                              "LANG": "C.UTF-8"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == ""
    assert "EXIT STATUS" in res.stdout and "autosync.debounce" in res.stdout
