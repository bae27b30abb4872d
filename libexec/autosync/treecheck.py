"""Refuse a tree that `git checkout` would refuse, before anything is written.

Every tree object that an update brings (the new root and every subtree whose id changed)
is read raw and checked: each name must be one git accepts with core.protectNTFS and
core.protectHFS on (no '.git' in any case, 8.3, NTFS-stream or HFS-ignorable spelling, no
'.' or '..', nothing empty), no name may appear twice (a symlink `x` beside a directory `x/`
would let a later write go through the link), entries must be sorted as git writes them,
modes must be the five git knows, and .gitmodules, .gitattributes, .gitignore and .mailmap
must not be symlinks. Unchanged subtrees were checked out already and are not read again.
git's own verify_path() then runs on every changed path when the scratch index is built.
"""

import os
import re

from .git import Objects, Repo
from .util import Error, Retry, shown

BLOB_MODES = {b"100644": "100644", b"100755": "100755", b"100664": "100644",
              b"120000": "120000"}
TREE_MODES = {b"40000", b"040000"}
GITLINK = b"160000"
# code points HFS+ ignores when comparing names (git's is_hfs_dotgit)
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F),
                              *range(0x206A, 0x2070), 0xFEFF])
_SHORT_DOTGIT = re.compile(r"git~[0-9]+")
_SPECIAL = {".gitmodules", ".gitattributes", ".gitignore", ".mailmap"}
_SHORT_SPECIAL = re.compile(r"(gitmod|gi7eba|gi7d29|gi250a|maba30)~[0-9]+")
NAME_MAX = 255  # bytes: longer names cannot be created on common file systems
MAX_DEPTH = 256  # directories: deeper trees are refused rather than walked


class Refused(Error):
    """A commit whose tree git would not check out; nothing was changed."""

    def __init__(self, message: str, *hints: str, commit: str | None = None) -> None:
        super().__init__(message, *hints)
        self.commit = commit


def _q(path: str) -> str:
    """A path of a peer's tree in a message: 'plain', or quoted like git (util.shown)."""
    quoted = shown(path)
    return quoted if quoted != path else f"'{path}'"


def name_problem(name: bytes, mode: bytes) -> str | None:
    """Why git would refuse this tree entry name, or None."""
    if not name:
        return "an empty file name"
    if len(name) > NAME_MAX:
        return f"a file name longer than {NAME_MAX} bytes"
    if b"/" in name or b"\0" in name:
        return "a file name with '/' in it"
    if name in (b".", b".."):
        return f"a '{name.decode()}' entry"
    folded = name.decode("utf-8", "replace").translate(_HFS_IGNORED).lower()
    stem = folded.split(":", 1)[0].rstrip(" .")  # NTFS drops these; ':' starts a stream
    if stem == ".git" or folded == ".git" or _SHORT_DOTGIT.fullmatch(stem):
        return "'.git' (in some spelling) as a file name"
    if mode == b"120000" and (stem in _SPECIAL or _SHORT_SPECIAL.fullmatch(stem)):
        return f"'{stem}' as a symlink"
    return None


def _sort_key(name: bytes, mode: bytes) -> bytes:
    return name + b"/" if mode in TREE_MODES else name


# tree ids, and (old tree, new tree) updates, that passed, for the life of the process
# (objects never change)
PASSED: set[str | tuple[str | None, str]] = set()


class TreeChecker:
    """Checks tree objects read through objects; remembers what passed."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    def _read(self, oid: str) -> bytes:
        header = self.objects.header(oid)
        if header is None:
            raise Refused(f"tree {oid[:10]} is missing")
        data = self.objects.read(header[1])
        self.objects.end()
        if header[0] != "tree":
            raise Refused(f"{oid[:10]} is a {header[0]}, not a tree")
        return data

    def check(self, oid: str, where: str) -> None:
        """Check one tree object; `where` is its path, for the message."""
        if oid in PASSED:
            return
        data = self._read(oid)
        width = len(oid) // 2
        seen: set[bytes] = set()
        last: bytes | None = None
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos)
            nul = data.find(b"\0", space + 1)
            if space < 0 or nul < 0 or nul + 1 + width > len(data):
                raise Refused(f"tree {oid[:10]} ({_q(where or '/')}) is malformed")
            mode, name = data[pos:space], data[space + 1:nul]
            pos = nul + 1 + width
            path = (where + "/" if where else "") + name.decode(errors="replace")
            if mode not in BLOB_MODES and mode not in TREE_MODES and mode != GITLINK:
                raise Refused(f"{_q(path)} has mode {mode.decode(errors='replace')}, "
                              "which git does not know")
            problem = name_problem(name, mode)
            if problem:
                raise Refused(f"it contains {problem}: {_q(path)}")
            if name in seen:
                raise Refused(f"it holds {_q(path)} twice (git keeps only one of them)")
            seen.add(name)
            key = _sort_key(name, mode)
            if last is not None and key <= last:
                raise Refused(f"tree {_q(where or '/')} is not sorted the way git writes trees")
            last = key
        if len(PASSED) > 100000:
            PASSED.clear()
        PASSED.add(oid)


def changed_trees(repo: Repo, old_tree: str | None, new_tree: str) -> list[tuple[str, str]]:
    """(path, oid) of the new root and of every subtree whose id differs from old's."""
    result = [("", new_tree)]
    if old_tree is None:
        out = repo.run("ls-tree", "-r", "-t", "-z", "--full-tree", new_tree).stdout
        items = [(f.split(b"\t", 1)) for f in out.split(b"\0") if f]
        for meta, path in items:
            mode, typ, oid = meta.split()
            if typ == b"tree":
                result.append((path.decode(errors="surrogateescape"), oid.decode()))
        return result
    entries = diff_entries(repo, old_tree, new_tree)
    return result + [(path, oid) for _, mode, _, oid, path in entries
                     if mode in ("040000", "40000")]


def diff_entries(repo: Repo, old: str, new: str) -> list[tuple[str, str, str, str, str]]:
    """(old mode, new mode, old id, new id, path) of every entry, trees included, that
    differs between old and new (commits or trees): one `git diff-tree -r -t`."""
    out = repo.run("diff-tree", "-r", "-t", "-z", "--no-renames", "--raw", old, new).stdout
    fields = out.split(b"\0")
    found = []
    for i in range(0, len(fields) - 1, 2):
        meta = fields[i].decode().lstrip(":").split()
        if len(meta) >= 4:
            found.append((meta[0], meta[1], meta[2], meta[3], os.fsdecode(fields[i + 1])))
    return found


def check_update(repo: Repo, old_tree: str | None, new_tree: str,
                 subtrees: list[tuple[str, str]] | None = None,
                 objects: Objects | None = None) -> None:
    """Raise Refused when new_tree brings something git would not check out. subtrees:
    changed_trees but the root, when the caller has them (checkout.diff); objects: the
    caller's reader, when it has one."""
    if (old_tree, new_tree) in PASSED:
        return
    own = objects or Objects(repo)
    checker = TreeChecker(own)
    try:
        for path, oid in (changed_trees(repo, old_tree, new_tree) if subtrees is None
                          else [("", new_tree), *subtrees]):
            if path.count("/") >= MAX_DEPTH:
                raise Refused(f"it is more than {MAX_DEPTH} directories deep: "
                              f"{_q(path[:60] + '...')}")
            checker.check(oid, path)
    except OSError as e:  # git cat-file went away (killed, a corrupt object): no verdict on
        # the tree, and no refusal of a commit that may well be sound
        raise Retry(f"cannot check tree {new_tree[:10]} now ({e.strerror or e}); "
                    "trying again later") from e
    finally:
        if objects is None:
            own.close()
    PASSED.add((old_tree, new_tree))
