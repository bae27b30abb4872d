"""The notification: "branch B of channel C now has commit X (sent by Y)" - and nothing else.

Wire format (README "Notification messages"): topic `autosync/<channel>/<branch>`, payload
one compact JSON object of at most 1024 bytes with exactly the keys v, channel, branch,
commit, sender, time. decode() is strict: a payload that is not exactly that raises
BadMessage, and a valid one can only ever lead to a fetch from the receiver's own remote.
"""

import hashlib
import json
import math
import re
from dataclasses import dataclass

VERSION = 1
MAX_SIZE = 1024
KEYS = {"v", "channel", "branch", "commit", "sender", "time"}
PREFIX = "autosync"

_CHANNEL = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BRANCH_CHARS = re.compile(r"[A-Za-z0-9._/+-]{1,200}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SENDER = re.compile(r"[A-Za-z0-9._:@-]{1,100}")


class BadMessage(ValueError):
    """A payload or topic that is not a valid notification (the reason is the message)."""


@dataclass(frozen=True)
class Notification:
    channel: str
    branch: str
    commit: str
    sender: str
    time: float


def branch_ok(name):
    """git's ref-name rules, plus a conservative character set: nothing option- or path-like."""
    if not _BRANCH_CHARS.fullmatch(name) or name.startswith(("-", "/")) or \
            name.endswith(("/", ".", ".lock")) or ".." in name or "//" in name:
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock")
               for part in name.split("/"))


def topic(channel, branch):
    if not _CHANNEL.fullmatch(channel) or not branch_ok(branch):
        raise BadMessage(f"cannot make a topic of channel '{channel}' branch '{branch}'")
    return f"{PREFIX}/{channel}/{branch}"


def encode(note):
    check(note)
    data = json.dumps({"v": VERSION, "channel": note.channel, "branch": note.branch,
                       "commit": note.commit, "sender": note.sender, "time": note.time},
                      separators=(",", ":")).encode()
    assert len(data) <= MAX_SIZE  # every field is bounded by check()
    return data


def check(note):
    if not _CHANNEL.fullmatch(note.channel):
        raise BadMessage("bad channel")
    if not branch_ok(note.branch):
        raise BadMessage("bad branch name")
    if not _COMMIT.fullmatch(note.commit):
        raise BadMessage("bad commit id")
    if not _SENDER.fullmatch(note.sender):
        raise BadMessage("bad sender")
    if isinstance(note.time, bool) or not isinstance(note.time, (int, float)) or \
            not 0 <= note.time < 1e11 or not math.isfinite(note.time):
        raise BadMessage("bad time")


def decode(payload, topic_name=None):
    """The Notification in payload (bytes), checked against topic_name when given."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_SIZE:
        raise BadMessage(f"payload larger than {MAX_SIZE} bytes")
    try:
        data = json.loads(bytes(payload).decode("utf-8"),
                          parse_constant=lambda c: _reject(f"constant {c}"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadMessage(f"not JSON ({type(e).__name__})")
    if not isinstance(data, dict):
        raise BadMessage("not a JSON object")
    if data.get("v") != VERSION or isinstance(data.get("v"), bool):
        raise BadMessage(f"unknown version {str(data.get('v'))[:20]!r}")
    if set(data) != KEYS:
        raise BadMessage("unexpected or missing keys")
    if not all(isinstance(data[k], str) for k in ("channel", "branch", "commit", "sender")):
        raise BadMessage("a field has the wrong type")
    note = Notification(data["channel"], data["branch"], data["commit"], data["sender"],
                        data["time"])
    check(note)
    if topic_name is not None and topic_name != topic(note.channel, note.branch):
        raise BadMessage("topic does not match the payload")
    return note


def _reject(what):
    raise BadMessage(f"not JSON ({what})")


def sender_id(repo, config):
    """`<host>:<8 hex>`: this clone, stable across restarts, distinct per repository."""
    digest = hashlib.sha1(repo.common_dir.encode(errors="surrogateescape")).hexdigest()[:8]
    host = re.sub(r"[^A-Za-z0-9._-]", "_", config.host)[:80] or "host"
    return f"{host}:{digest}"
