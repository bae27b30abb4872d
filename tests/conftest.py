"""Shared test fixtures: isolated environment, real git repositories, the installed toolkit.

Every test runs with its own HOME, no system git config, a fixed identity, TZ and locale.
Nothing waits a fixed time: `wait_for` polls a condition until a deadline.

Nothing a run starts outlives it (see servers.py): every process carries the run's id in
RUN_VAR; at the end of the session, on SIGTERM/SIGHUP (turned into KeyboardInterrupt, so
fixtures tear down as on Ctrl-C), and from a reaper process when pytest dies any other way,
every process naming the run is ended.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBEXEC = ROOT / "libexec"
sys.path.insert(0, str(LIBEXEC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test User", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test User", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def pytest_addoption(parser):
    parser.addoption("--soak-seconds", type=float, default=12.0,
                     help="how long each soak case edits (make soak: 120)")


from servers import RUN_VAR, start_reaper, sweep  # noqa: E402  (needs sys.path above)

RUN = {}  # "id": this run's id, "reaper": its reaper process


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    run = f"{os.getpid()}-{secrets.token_hex(4)}"
    os.environ[RUN_VAR] = f"{os.environ.get(RUN_VAR, '')} {run}".strip()
    RUN.update(id=run, reaper=start_reaper(run))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _interrupt)


def pytest_unconfigure(config):
    if "id" not in RUN:
        return
    left = sweep(RUN["id"])
    if left:
        print(f"\nconftest: ended {len(left)} process(es) the tests left running: {left}",
              file=sys.stderr)
    reaper = RUN.pop("reaper")
    reaper.stdin.close()
    try:
        reaper.wait(10)
    except subprocess.TimeoutExpired:
        pass


def isolated_env(home):
    """A clean environment: only PATH and a few basics survive from the outside."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "TMPDIR", "PIP_CACHE_DIR", "VIRTUAL_ENV", "CI", RUN_VAR)}
    env.update(IDENTITY)
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", TZ="UTC", LANG="C.UTF-8",
               LC_ALL="C.UTF-8", XDG_CONFIG_HOME=str(home / ".config"),
               GIT_AUTOSYNC_DEBUG="1")
    return env


@pytest.fixture(scope="session")
def toolkit(tmp_path_factory):
    """The toolkit installed once per session with `make install PREFIX=...` (real venv)."""
    prefix = tmp_path_factory.mktemp("prefix")
    home = tmp_path_factory.mktemp("installhome")
    env = isolated_env(home)
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert res.returncode == 0, res.stdout
    return Toolkit(prefix)


class Toolkit:
    def __init__(self, prefix):
        self.prefix = Path(prefix)
        self.bin = self.prefix / "bin"
        self.libexec = self.prefix / "libexec" / "git-autosync"

    def tool(self, name):
        return str(self.libexec / name)


def mount_tmpfs(path, size="32m"):
    """Mount a tmpfs of size at path (made if missing) for a full disk; the test is
    skipped where that cannot be done (not root). The caller unmounts it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    return path


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home, monkeypatch):
    """The isolated environment, also applied to this process (for in-process tests)."""
    e = isolated_env(home)
    for k in list(os.environ):
        if k.startswith("GIT_"):
            monkeypatch.delenv(k, raising=False)
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    return e


@pytest.fixture
def tenv(env, toolkit, monkeypatch):
    """The isolated environment with the installed toolkit's bin/ first on PATH."""
    e = dict(env, PATH=f"{toolkit.bin}{os.pathsep}{env['PATH']}")
    monkeypatch.setenv("PATH", e["PATH"])
    return e


def git(cwd, *args, env=None, check=True, input=None):
    """Run git in cwd; return stdout text (stripped of the final newline)."""
    res = subprocess.run(["git", *args], cwd=cwd, env=env, input=input,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and res.returncode != 0:
        raise AssertionError(f"git {args} failed: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode(errors="surrogateescape").rstrip("\n")


@pytest.fixture
def watcher_kind():
    """The kind of watcher test_watch.py's `watcher` fixture makes: inotify here, for the
    modules that borrow that fixture; test_watch.py itself runs its tests with both."""
    return "inotify"


@pytest.fixture
def make_repo(tmp_path, env):
    """make_repo(name) -> Path of a fresh work tree on branch main with one commit."""
    def make(name="repo", bare=False, commit=True):
        path = tmp_path / name
        args = ["init", "-q", "-b", "main"] + (["--bare"] if bare else []) + [str(path)]
        git(tmp_path, *args, env=env)
        if not bare and commit:
            (path / "README").write_text("hello\n")
            git(path, "add", "README", env=env)
            git(path, "commit", "-q", "-m", "init", env=env)
        return path
    return make


@pytest.fixture
def server_and_clones(tmp_path, env, make_repo):
    """A bare server repository `notes.git` and a factory for clones of it."""
    seed = make_repo("seed")
    server = tmp_path / "notes.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server), env=env)
    shutil.rmtree(seed)

    def clone(name):
        path = tmp_path / name
        git(tmp_path, "clone", "-q", str(server), str(path), env=env)
        git(path, "config", "autosync.host", name, env=env)
        return path
    return server, clone


def wait_for(condition, timeout=15.0, what="condition", interval=0.02):
    """Poll condition() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
