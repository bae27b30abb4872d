"""Attack round on issue 14 parts 1 and 2 (shared settings `.autosync`, `git autosync share`,
`git autosync clone`, `git autosync list` / `status --all`): a peer with push access to the
shared repository, and a user with a messy machine.

Each test is one finding and failed while the bug was there. Commands are run the way a
user runs them: through `git autosync` with the installed toolkit on PATH and, where what
the user sees matters, without GIT_AUTOSYNC_DEBUG (which turns an internal error into a
traceback on purpose).
"""

import os
import resource
import subprocess

import pytest
from conftest import git

from autosync import config as config_module
from autosync.config import Config
from autosync.git import Repo


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """.autosync warnings are given once per process: each test starts with none given."""
    monkeypatch.setattr(config_module, "_warned_shared", set())


def user_env(env, **more):
    """What a user has: no GIT_AUTOSYNC_DEBUG (a crash must still read as a message)."""
    e = {k: v for k, v in env.items() if k != "GIT_AUTOSYNC_DEBUG"}
    e.update(more)
    return e


def autosync(env, *args, cwd, timeout=120, **kwargs):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, **kwargs)


def commit_file(repo, name, data, env=None):
    path = repo / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    git(repo, "add", name, env=env)
    git(repo, "commit", "-q", "-m", f"add {name}", env=env)


def warnings(text):
    return [line for line in text.splitlines() if line.startswith("warning: .autosync:")]


@pytest.fixture
def said(capsys, caplog):
    """said() -> the .autosync warnings given so far (stderr, or the log)."""
    def lines():
        return warnings(capsys.readouterr().err + "\n" + "\n".join(caplog.messages))
    return lines


# == 1. reading a peer's .autosync ===============================================================
def amplifier():
    """64 KB that `git config --list` turns into 500 MB: a 30,000-character subsection
    name, then 17,000 bare keys, each listed with the whole section name before it."""
    return ("[autosync \"" + "s" * 30000 + "\"]\n" + "x\n" * 17000).encode()


def test_a_small_file_that_git_lists_as_half_a_gigabyte_is_not_read(make_repo, tenv):
    """The size check (64 KiB) is on the file; what git lists from it was read whole: a
    peer's 64 KB file made every `status`, `start`, `list` and `sync` of every clone read
    510 MB from git and hold 1.5 GB (4 s; an OOM kill on a small machine)."""
    r = make_repo()
    commit_file(r, ".autosync", amplifier() + b"[autosync]\n\tdebounce = 300\n", env=tenv)
    assert len((r / ".autosync").read_bytes()) < config_module.SHARED_MAX_BYTES
    limit = 600 * 1024 * 1024  # address space: plenty for status, not for 1.5 GB

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    res = autosync(user_env(tenv), "status", cwd=r, preexec_fn=cap)
    assert res.returncode == 3, res.stderr  # not running; nothing else went wrong
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert warnings(res.stderr) == [
        "warning: .autosync: not read: git lists more than 256 KiB of settings from it"]


def test_a_bare_server_does_not_read_a_huge_file(make_repo, tmp_path, said):
    """A bare repository has no work tree to lstat: HEAD's .autosync was read whole, at
    every push (the post-receive hook and the publisher each build a Config): 74 MB took
    3.3 s and 563 MB per push, 1 GB would be an OOM kill on the server at every push."""
    seed = make_repo("seed")
    padding = "# " + "x" * 1000 + "\n"
    commit_file(seed, ".autosync", "[autosync]\n\tchannel = big\n" + padding * 2000)
    server = tmp_path / "srv.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    assert Config(Repo(server)).channel == "srv"
    assert said() == ["warning: .autosync: not read: it is larger than 64 KiB"]


def test_a_bare_server_does_not_read_a_symbolic_link(make_repo, tmp_path, said):
    """A committed symbolic link .autosync is not read by the clones (README), but the bare
    server read its target text as the file: the server's channel was the link's."""
    seed = make_repo("seed")
    os.symlink("[autosync]\n\tchannel = link\n", seed / ".autosync")
    git(seed, "add", ".autosync")
    git(seed, "commit", "-q", "-m", "a link")
    assert Config(Repo(seed)).channel == "seed"  # a clone: not read
    server = tmp_path / "srv.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    assert Config(Repo(server)).channel == "srv"
    assert said() == ["warning: .autosync: not read: it is not a regular file"]


def test_a_channel_no_notification_can_carry_is_refused(make_repo, said):
    """Notifications name channels of at most 128 characters; the shared file's channel
    was only checked for its characters: a 200-character one was taken by every clone,
    whose transport then refused it, so no clone sent or got a notification again (each
    polled every minute, with a 'not a plain name' warning about the plain name)."""
    r = make_repo()
    commit_file(r, ".autosync", f"[autosync]\n\tchannel = {'a' * 200}\n\tdebounce = 300\n")
    c = Config(Repo(r))
    assert c.channel == "repo" and c["debounce"] == 300
    lines = said()
    assert len(lines) == 1 and lines[0].startswith(
        "warning: .autosync: ignoring autosync.channel: ")


def test_thousands_of_shared_ignore_patterns_are_refused(make_repo, said):
    """Every changed path is matched against every autosync.ignore pattern (twice: the
    watcher, then the commit): 3,000 patterns in a 57 KB file cost 3.5 ms per path, 70 s
    of CPU for a 10,000-file unpack, on every clone."""
    r = make_repo()
    commit_file(r, ".autosync", "[autosync]\n\tdebounce = 300\n"
                + "".join(f"\tignore = p{i}*.x\n" for i in range(3000)))
    c = Config(Repo(r))
    assert c["ignore"] == [] and c["debounce"] == 300
    lines = said()
    assert len(lines) == 1 and lines[0].startswith(
        "warning: .autosync: ignoring autosync.ignore: 3000 patterns")
    commit_file(r, ".autosync", "[autosync]\n" + "".join(
        f"\tignore = p{i}*.x\n" for i in range(config_module.SHARED_MAX_PATTERNS)))
    assert len(Config(Repo(r))["ignore"]) == config_module.SHARED_MAX_PATTERNS
