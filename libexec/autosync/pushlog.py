"""The last push any autosync process made: $GIT_DIR/autosync/last-push.json.

Pushes are made by the daemon, by `git autosync sync` and by the push helper the
post-commit hook starts; `git autosync status` shows the newest of them, across restarts.
The daemon's own state.json belongs to the daemon alone (daemon.State), so every pusher
records here instead, after each successful push (sync.Remote.push): `record(repo, commit)`.

The file is small JSON, {"commit": ID, "time": UNIX-SECONDS}, replaced whole (a temporary
file, rename) under an flock, so a reader never sees half of one; and a slower writer never
puts an older push over a newer one: a commit that the recorded one already contains (its
push returned late) leaves the record as it is. Recording is best effort: a full disk, a
read-only .git or any other failure to write logs nothing and leaves the old file as it
was (status is then one push behind, nothing else depends on it). `last(repo)` reads it,
taking anything that is not such a record for no record.
"""

import fcntl
import json
import math
import os
import threading
import time
from typing import Any

from .git import Repo, is_hex_oid
from .util import Error, read_regular

NAME = "last-push.json"
MAX_SIZE = 4096  # a record is about 80 bytes; a larger file is not one


def path(repo: Repo) -> str:
    return os.path.join(repo.state_dir, NAME)


def record(repo: Repo, commit: str) -> None:
    """Remember that commit was just pushed. Never raises, never logs."""
    target = path(repo)
    tmp = f"{target}.{os.getpid()}-{threading.get_ident()}.tmp"
    lock = -1
    try:
        os.makedirs(repo.state_dir, exist_ok=True)
        lock = os.open(target + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = last(repo)
        if recorded and recorded["commit"] != commit and repo.is_ancestor(
                commit, recorded["commit"]):
            return  # a push that returned late: a newer one, with this commit, came first
        data = json.dumps({"commit": commit, "time": time.time()}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o666)
        try:
            view = memoryview(data)
            while view:  # (no fsync: this is on the way from a push to its announcement;
                view = view[os.write(fd, view):]  # a crash costs status one push)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except (OSError, Error):  # no space, read-only: the previous record stays as it was
        try:
            os.unlink(tmp)
        except OSError:
            pass
    finally:
        if lock >= 0:
            os.close(lock)  # (releases the flock)


def last(repo: Repo) -> dict[str, Any] | None:
    """{"commit": ID, "time": UNIX-SECONDS} of the last recorded push, or None (none yet,
    or a file that is not a record: truncated, garbage, a symbolic link, a FIFO)."""
    try:  # (a FIFO, a device: not a record, and never waited on)
        found = json.loads(read_regular(path(repo), MAX_SIZE))
    except (OSError, ValueError, RecursionError):
        return None
    return valid(found)


def valid(entry: object) -> dict[str, Any] | None:
    """entry as {"commit", "time"} when it is a push record (state.json's last_push has
    the same shape), else None."""
    if not isinstance(entry, dict):
        return None
    commit, when = entry.get("commit"), entry.get("time")
    if not isinstance(commit, str) or not is_hex_oid(commit):
        return None
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when) \
            or when < 0:
        return None
    return {"commit": commit, "time": when}


def newest(*entries: object) -> dict[str, Any] | None:
    """The most recent of several push records (invalid ones ignored), or None."""
    found = [e for e in (valid(x) for x in entries) if e is not None]
    return max(found, key=lambda e: e["time"]) if found else None
