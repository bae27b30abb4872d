"""The notification: "branch B of channel C now has commit X (sent by Y)" - and nothing else.

Wire format (README "Notification messages"): topic `autosync/<channel>/<branch>`, payload
one compact UTF-8 JSON object of at most 1024 bytes with exactly the keys v, channel,
branch, commit, sender, time. decode() is strict: a payload that is not exactly that
(an unknown or repeated key included) raises BadMessage, and a valid one can only ever
lead to a fetch from the receiver's own remote.
"""

import functools
import json
import logging
import math
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, NoReturn

from .config import Config
from .git import Repo, valid_branch_name
from .util import log, read_regular, unlink_if_there

VERSION = 1
MAX_SIZE = 1024
MAX_BRANCH = 200  # bytes of UTF-8; with the other bounded fields a payload stays < 1024
KEYS = {"v", "channel", "branch", "commit", "sender", "time"}
PREFIX = "autosync"
# the push option (`git push -o`) with which a clone tells the server's post-receive hook
# that it announces this push itself: one announcement per push, and the fastest one
PUSH_OPTION = "autosync-announced"

_CHANNEL = re.compile(r"[A-Za-z0-9._-]{1,128}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SENDER = re.compile(r"[A-Za-z0-9._:@-]{1,100}")


class BadMessage(Exception):
    """A payload or topic that is not a valid notification (the reason is the message)."""


class NotForUs(Exception):
    """A well-formed payload for another channel or branch (decode's `want`): not an error."""


@dataclass(frozen=True)
class Notification:
    channel: str
    branch: str
    commit: str
    sender: str
    time: float

    @classmethod
    def now(cls, channel: str, branch: str, commit: str, sender: str) -> "Notification":
        """The notification for commit, sent now: the one place one is made."""
        return cls(channel, branch, commit, sender, time.time())


def branch_ok(name: object) -> bool:
    """A branch name git accepts that is also usable as MQTT topic levels.

    git's rules (git.valid_branch_name: no '..', '@{', leading '-', ...) plus: no MQTT
    wildcards '+' '#', no control, surrogate or unassigned characters, at most 200 bytes.
    """
    return isinstance(name, str) and _branch_ok(name)


@functools.lru_cache(maxsize=256)  # a receiver sees its own branch again and again
def _branch_ok(name: str) -> bool:
    if not name or len(name.encode("utf-8", "replace")) > MAX_BRANCH:
        return False
    if any(c in "+#" or unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in name):
        return False
    return valid_branch_name(name)


def channel_ok(name: object) -> bool:
    return isinstance(name, str) and _CHANNEL.fullmatch(name) is not None


def topic(channel: str, branch: str) -> str:
    """`autosync/<channel>/<branch>`; BadMessage when either cannot be a topic."""
    if not channel_ok(channel):
        raise BadMessage(f"channel '{channel}' is not a plain name (letters, digits, . _ -)")
    if not branch_ok(branch):
        raise BadMessage(f"branch '{branch}' is not usable in a topic (git's rules, no '+' or '#')")
    return f"{PREFIX}/{channel}/{branch}"


def encode(note: Notification) -> bytes:
    """The payload (bytes) of a valid note; BadMessage otherwise."""
    check(note)
    data = json.dumps({"v": VERSION, "channel": note.channel, "branch": note.branch,
                       "commit": note.commit, "sender": note.sender, "time": note.time},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_SIZE:  # cannot happen: every field is bounded by check()
        raise BadMessage(f"payload larger than {MAX_SIZE} bytes")
    return data


def check(note: Notification) -> None:
    """BadMessage unless every field of note is well-formed."""
    if not channel_ok(note.channel):
        raise BadMessage("bad channel")
    if not branch_ok(note.branch):
        raise BadMessage("bad branch name")
    if not isinstance(note.commit, str) or not _COMMIT.fullmatch(note.commit):
        raise BadMessage("bad commit id")
    if not isinstance(note.sender, str) or not _SENDER.fullmatch(note.sender):
        raise BadMessage("bad sender")
    t = note.time
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
            or not 0 <= t < 1e11:
        raise BadMessage("bad time")


def decode(payload: object, topic: str | None = None,
           want: tuple[str, str] | None = None) -> Notification:
    """The Notification in payload (bytes), checked against its topic when given.

    want=(channel, branch): a payload naming another channel or branch raises NotForUs,
    found by comparing strings before any field is validated (XMPP has no topic: a room
    carries every channel's notifications, and most of them are someone else's)."""
    if not isinstance(payload, (bytes, bytearray)):
        raise BadMessage("payload is not bytes")
    if len(payload) > MAX_SIZE:
        raise BadMessage(f"payload larger than {MAX_SIZE} bytes")
    try:
        data = json.loads(bytes(payload).decode("utf-8"), object_pairs_hook=_unique,
                          parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadMessage(f"not JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise BadMessage("not a JSON object")
    v = data.get("v")
    if v != VERSION or isinstance(v, bool):
        raise BadMessage(f"unknown version {str(v)[:20]!r}")
    if set(data) != KEYS:
        raise BadMessage("unexpected or missing keys")
    if not all(isinstance(data[k], str) for k in ("channel", "branch", "commit", "sender")):
        raise BadMessage("a field has the wrong type")
    if want is not None and (data["channel"], data["branch"]) != tuple(want):
        raise NotForUs(f"{data['channel'][:40]}/{data['branch'][:40]}")
    if topic is not None and topic != f"{PREFIX}/{data['channel']}/{data['branch']}":
        raise BadMessage("topic does not match the payload")
    note = Notification(data["channel"], data["branch"], data["commit"], data["sender"],
                        data["time"])
    check(note)
    return note


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadMessage("a key is repeated")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise BadMessage(f"not JSON ({name})")


def host_label(config: Config) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", config.host)[:80] or "host"


CLONE_ID = "clone-id"  # in $GIT_DIR/autosync/


def repo_digest(repo: Repo) -> str:
    """8 hex digits naming this clone, stable across restarts: drawn at random the first
    time and kept in $GIT_DIR/autosync/clone-id, so two machines with the same host name
    and the same path (two Raspberry Pis, say) are two clones. A clone whose daemon ran
    before that file existed keeps the digest of its path it was known by.

    The file also says where the clone is (its state directory's device and inode, and its
    path): a copy of the clone (cp -a, rsync -a, a restored backup or a snapshot mounted
    beside the original) is at neither and draws a name of its own - under the original's
    name it would take the original's notifications for its own echo and push to the
    original's ref. A clone moved (same device and inode) or on a file system that numbers
    them anew at each mount (same path) keeps its name."""
    path = os.path.join(repo.state_dir, CLONE_ID)
    here = _place(repo.state_dir)
    found = _read_id(path)
    if found and (here is None or found[1] is None):
        if here is not None:  # (written before places were: this one is taken)
            _write_id(path, found[0], replace=True)
        return found[0]
    if found and found[1] is not None and here is not None and \
            (found[1][0] == here[0] or found[1][1] == here[1]):
        return found[0]
    if found:  # a copy: a name of its own
        made = _copy_name(found[0], here)
    else:
        made = _path_digest(repo) if os.path.exists(os.path.join(repo.state_dir,
                                                                 "state.json")) \
            else os.urandom(4).hex()
    if not _write_id(path, made, replace=found is not None):
        return _path_digest(repo)  # read-only, full: the name of its path, as before
    now = _read_id(path)  # (two processes at once: the first link, or the last rename)
    return now[0] if now else _path_digest(repo)


def _place(state_dir: str) -> tuple[bytes, bytes] | None:
    """(b"device:inode", path) of a clone's state directory (a snapshot keeps inode
    numbers, not the device), the path as its line in the clone-id
    file (bytes, as the file system has them: any but UTF-8 made the write fail with a
    UnicodeEncodeError; a newline or backslash escaped: a path with a newline was written
    without its place, the file rewritten by every process); None when it cannot be
    looked at."""
    try:
        path = os.fsencode(os.path.realpath(state_dir))
        st = os.stat(state_dir)
        return b"%d:%d" % (st.st_dev, st.st_ino), \
            path.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
    except OSError:
        return None


def _copy_name(ident: str, here: tuple[bytes, bytes] | None) -> str:
    """The name of a copy of the clone named ident now at here: drawn from both, not at
    random, so that every process that finds the copy (a daemon starting and a sync at
    once) draws the same - at random, a process that read the file before another renamed
    its own name over it went by a name that the file no longer said (a daemon by one
    name, every later command by another). Copies at two places draw two names."""
    import hashlib
    if here is None:
        return os.urandom(4).hex()
    return hashlib.sha1(b"%s\n%s\n%s" % (ident.encode(), here[0], here[1])).hexdigest()[:8]


def _write_id(path: str, ident: str, replace: bool) -> bool:
    """Write the clone-id file, with its place, through a temp file: linked (the first
    process to get here names the clone for all) or, with replace, renamed over the one
    there. False when it cannot be written (it leaves no temp file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        unlink_if_there(tmp)  # (left by a process of this pid killed here before)
        place = _place(os.path.dirname(path))
        where = b"%s\n%s\n" % place if place else b""
        with open(tmp, "xb") as f:
            try:
                f.write(ident.encode() + b"\n" + where)
                f.close()
                if replace:
                    os.rename(tmp, path)
                else:
                    os.link(tmp, path)
            except FileExistsError:
                pass
            finally:  # (also when full, or without hard links: none left at every start)
                unlink_if_there(tmp)
    except OSError:
        return False
    return True


def _path_digest(repo: Repo) -> str:
    """The digest of the clone's path, its name before clone-id files (and when one cannot
    be written). hashlib is imported here only: OpenSSL's libcrypto is 3.5 MB of every
    process that loads it, and a first start has no use for it."""
    import hashlib
    return hashlib.sha1(repo.common_dir.encode(errors="surrogateescape")).hexdigest()[:8]


def _read_id(path: str) -> tuple[str, tuple[bytes, bytes] | None] | None:
    """The clone-id file's name and place (None: a file from before places were kept);
    None when there is no such file, or it is not one autosync writes."""
    try:  # (read like any file someone else could have put there: util.read_regular)
        lines = read_regular(path, 8192).split(b"\n")
    except (OSError, ValueError):
        return None
    ident = lines[0].strip().decode("ascii", errors="replace")
    if len(ident) != 8 or any(c not in "0123456789abcdef" for c in ident):
        return None
    if len(lines) >= 3 and re.fullmatch(rb"[0-9]+(:[0-9]+)?", lines[1]) and lines[2]:
        return ident, (lines[1], lines[2])
    return ident, None


def sender_id(repo: Repo, config: Config) -> str:
    """`<host>:<8 hex>`: this clone, stable across restarts, distinct per repository."""
    return f"{host_label(config)}:{repo_digest(repo)}"


def server_sender_id(config: Config) -> str:
    """`<host>:server`: a bare server's post-receive hook."""
    return f"{host_label(config)}:server"


class DropLog:
    """Log an event that a flood can repeat (a dropped notification, a relayed one): one line
    at most every `every` seconds, so a flood cannot fill the log; the next line counts the
    ones left out."""

    def __init__(self, every: float = 10.0, what: str = "dropped an invalid notification",
                 level: int = logging.WARNING) -> None:
        self.every, self.what, self.level = every, what, level
        self.next_at, self.suppressed = 0.0, 0

    def __call__(self, detail: str) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            log.debug("%s: %s", self.what, detail)
            return
        more = f" (and {self.suppressed} more since)" if self.suppressed else ""
        log.log(self.level, "%s: %s%s", self.what, detail, more)
        self.next_at, self.suppressed = now + self.every, 0
