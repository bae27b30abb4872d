"""The daemon's pid file: held under an exclusive flock for the daemon's whole life.

Holding the lock (not the file's existence) is what says "running", so a daemon killed
with SIGKILL never leaves a stale "running" behind.
"""

import fcntl
import os
import shlex

from .git import Repo
from .util import Error, os_error


def path(repo: Repo) -> str:
    return os.path.join(repo.state_dir, "daemon.pid")


def running_pid(repo: Repo) -> int | None:
    """The pid of the daemon serving repo, or None. (O_NONBLOCK: a FIFO put in its place
    by whoever can write .git/autosync never blocks status, start, stop or list.)"""
    try:
        fd = os.open(path(repo), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        return None
    finally:
        os.close(fd)


def acquire(repo: Repo) -> int:
    """Take the daemon lock for this process; raise if another daemon has it.

    Returns the open descriptor, which must stay open for the daemon's lifetime.
    """
    repo.ensure_state_dir()
    try:
        fd = os.open(path(repo), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise os_error(e, f"cannot open the pid file '{path(repo)}'") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = running_pid(repo)
        raise Error(f"already running for '{repo.cwd}' (pid {pid})",
                    f"git -C {shlex.quote(repo.cwd)} autosync stop") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:  # a full disk: retry later (systemd restarts on 75, not on 1)
        os.close(fd)
        raise os_error(e, f"cannot write the pid file '{path(repo)}'") from None
    return fd
