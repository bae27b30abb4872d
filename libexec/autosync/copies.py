"""Conflict copies: the one place their names are made and recognised.

When two clones changed the same file, the version that lost stays beside the path as
`NAME.conflict-<host>-<YYYYmmdd-HHMMSS>-<6 hex>.EXT` (the host and UTC time of the commit that
made that version, and the start of its blob id); `status` lists every file whose name has
that shape, `is_copy_of` whether it is one of a given path. `describe` says which host and
time a version is named after.
"""

import os
import re
import time
from dataclasses import dataclass

from .git import Repo

NAME_MAX = 255  # bytes in one file name on every common file system
HOST_IN_SUBJECT = re.compile(r"\(host ([A-Za-z0-9._-]{1,64})\)\s*$")
COPY_NAME = re.compile(
    r"\.conflict-[A-Za-z0-9._-]+-\d{8}-\d{6}(-[0-9a-f]{6})?(-\d+)?(\.[^/]*)?$")


def is_conflict_copy(path: str) -> bool:
    return COPY_NAME.search(path) is not None


# what follows ".conflict-" in a copy's name, up to the extension
_MADE = re.compile(r"[A-Za-z0-9._-]{1,64}-\d{8}-\d{6}(-[0-9a-f]{6})?(-\d+)?")


def is_copy_of(copy: str, path: str) -> bool:
    """Whether copy has a name copy_name gives a conflict copy of path (any host, time,
    version and number): notes.conflict-laptop-20261124-101530-1a2b3c.md for notes.md."""
    marker = ".conflict-\0-19700101-000000"
    head, _, tail = copy_name(path, "\0", 0).partition(marker)
    start, end = len(head) + len(".conflict-"), len(copy) - len(tail)
    return (end > start and copy.startswith(head + ".conflict-") and copy.endswith(tail)
            and _MADE.fullmatch(copy, start, end) is not None)


def copy_name(path: str, host: str, when: float, n: int = 1, version: str = "") -> str:
    """notes.md -> notes.conflict-laptop-20261124-101530-1a2b3c.md: the host and time of
    the commit that made the version, and the start of its blob id (so the same version
    always gets the same name and two versions never share one); -2, -3 ... for n > 1.
    A long stem is shortened so that the name still fits in NAME_MAX bytes."""
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem or len(os.fsencode(ext)) > 32:  # no extension, a dot file, or no real one
        stem, dot, ext = name, "", ""
    when = min(max(int(when), 0), 253402300799)  # a pushed date may be anything: 0..9999
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    suffix = f".conflict-{host}-{stamp}" + (f"-{version[:6]}" if version else "") + (
        f"-{n}" if n > 1 else "")
    room = NAME_MAX - len(os.fsencode(suffix + dot + ext))
    raw = os.fsencode(stem)
    if len(raw) > room:
        try:  # cut on a character boundary where the name is UTF-8
            raw.decode("utf-8")
            stem = raw[:room].decode("utf-8", "ignore")
        except UnicodeDecodeError:
            stem = os.fsdecode(raw[:room])
    return (head + "/" if head else "") + stem + suffix + dot + ext


@dataclass(frozen=True)
class Tip:
    oid: str
    time: int
    subject: str
    author: str = ""

    @property
    def host(self) -> str:
        """The host an autosync commit names; else its author (a plain git user's)."""
        m = HOST_IN_SUBJECT.search(self.subject)
        if m:
            return m.group(1)
        author = re.sub(r"[^A-Za-z0-9._-]+", "-", self.author).strip("-.")[:64]
        return author or self.oid[:8]


# what a commit says of itself never changes: remembered for the life of the process
_described: dict[tuple[str, str, str | None], Tip] = {}


def describe(repo: Repo, oid: str, path: str | None = None) -> Tip:
    """The Tip for commit oid; with path: for the last commit up to oid, other than a merge,
    that changed path (the host and time a conflict copy of that path is named after)."""
    key = (repo.git_dir, oid, path)
    if key not in _described:
        if len(_described) >= 4096:
            _described.clear()
        _described[key] = _describe(repo, oid, path)
    return _described[key]


def _describe(repo: Repo, oid: str, path: str | None) -> Tip:
    # log, not show: show sets up a diff it then skips (60 ms on a large tree)
    args = ["log", "-1", "--format=%H%x00%T%x00%ct%x00%an%x00%s", oid]
    args += ["--no-merges", "--", ":(literal)" + path] if path else ["--no-walk", "--"]
    fields = repo.out(*args).split("\0", 4)
    if len(fields) < 5:  # the path's history is all merges: name it after the tip
        return describe(repo, oid)
    repo.know_tree(fields[0], fields[1])  # asked for next, mostly
    return Tip(fields[0], int(fields[2]), fields[4], fields[3])
