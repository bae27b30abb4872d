"""Conflict copies: the one place their names are made and recognised.

When two clones changed the same file, the version that lost stays beside the path as
`NAME.conflict-<host>-<YYYYmmdd-HHMMSS>-<6 hex>.EXT` (the host and UTC time of the commit that
made that version, and the start of its blob id); `status` lists every file whose name has
that shape.
"""

import os
import re
import time

NAME_MAX = 255  # bytes in one file name on every common file system
COPY_NAME = re.compile(
    r"\.conflict-[A-Za-z0-9._-]+-\d{8}-\d{6}(-[0-9a-f]{6})?(-\d+)?(\.[^/]*)?$")


def is_conflict_copy(path: str) -> bool:
    return COPY_NAME.search(path) is not None


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
