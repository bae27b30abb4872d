"""Move the work tree from a commit to a descendant without ever overwriting a save.

git's own checkout looks at each file and, a moment later, replaces it: a save that lands
in between is lost. Here every file the update touches is first renamed aside (atomic) and
compared with its committed version. Only when all of them match are the new versions put
in place, each with link(), which fails rather than replace a file that appeared in the
meantime (that save is newer than the merge and is kept). A file that differs is put back
and the update is refused with Busy: the caller commits it and merges again.
"""

import os
import shutil
import subprocess

from .util import Error, log

GITLINK, SYMLINK = "160000", "120000"
CHUNK = 1 << 16


class Busy(Error):
    """A file changed after it was committed: commit it, then update again."""


class Change:
    def __init__(self, old_mode, new_mode, old_oid, new_oid, path):
        self.old_mode, self.new_mode = old_mode, new_mode
        self.old_oid = None if old_oid.strip("0") == "" else old_oid
        self.new_oid = None if new_oid.strip("0") == "" else new_oid
        self.path = path


def changes(repo, old, new):
    out = repo.run("diff-tree", "-r", "-z", "--no-renames", "--raw", old, new).stdout
    fields = out.split(b"\0")
    result = []
    for i in range(0, len(fields) - 1, 2):
        meta = fields[i].decode().lstrip(":").split()
        if len(meta) >= 4:
            result.append(Change(meta[0], meta[1], meta[2], meta[3],
                                 os.fsdecode(fields[i + 1])))
    return result


class Blobs:
    """Committed blobs streamed from one `git cat-file --batch`, compared with files."""

    def __init__(self, repo):
        self.proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo.cwd,
                                     env=repo.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def same(self, oid, path):
        """Whether the file at path holds exactly blob oid (bytes, before any filter)."""
        self.proc.stdin.write(oid.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        size = int(header[2]) if len(header) == 3 else -1
        equal = size >= 0 and os.path.getsize(path) == size
        left = max(size, 0)
        with open(path, "rb") as f:
            while left:
                want = self.proc.stdout.read(min(CHUNK, left))
                left -= len(want)
                if equal and f.read(len(want)) != want:
                    equal = False
        if size >= 0:
            self.proc.stdout.read(1)  # the newline after the content
        return equal

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def unchanged(repo, blobs, change, aside):
    """The file moved aside is the committed version (content or link target)."""
    if change.old_mode == SYMLINK:
        return os.path.islink(aside) and os.fsencode(os.readlink(aside)) == \
            repo.run("cat-file", "blob", change.old_oid).stdout
    if os.path.islink(aside) or not os.path.isfile(aside):
        return False
    if blobs.same(change.old_oid, aside):
        return True
    # the bytes differ: equal after git's filters (eol, clean) is still unchanged
    res = repo.run("hash-object", f"--path={change.path}", "--", aside, check=False)
    return res.returncode == 0 and res.stdout.decode().strip() == change.old_oid


def advance(repo, branch, old, new):
    """Update work tree, index and branch from old to new (a descendant of old)."""
    todo = [c for c in changes(repo, old, new) if GITLINK not in (c.old_mode, c.new_mode)]
    aside_dir = os.path.join(repo.ensure_state_dir(), "aside")
    shutil.rmtree(aside_dir, ignore_errors=True)  # copies of committed content only
    os.makedirs(aside_dir)
    moved = []
    blobs = Blobs(repo)
    try:
        for i, c in enumerate(todo):
            if c.old_oid is None:
                continue
            full = os.path.join(repo.top, c.path)
            aside = os.path.join(aside_dir, str(i))
            try:
                os.rename(full, aside)
            except FileNotFoundError:
                raise Busy(f"'{c.path}' was deleted while merging; committing that first")
            moved.append((c.path, aside))
            if not unchanged(repo, blobs, c, aside):
                raise Busy(f"'{c.path}' changed while merging; committing it first")
        for c in todo:  # added paths must be free (a directory emptied above is)
            if c.old_oid is None:
                prune_dirs(repo.top, c.path)
                if os.path.lexists(os.path.join(repo.top, c.path)):
                    raise Busy(f"'{c.path}' appeared while merging; committing it first")
    except BaseException:
        put_back(repo, moved)
        raise
    finally:
        blobs.close()
    for c in todo:  # first, so that a file can take the place of a directory
        if c.new_oid is None:
            prune_dirs(repo.top, os.path.dirname(c.path))
    place_new(repo, [c for c in todo if c.new_oid is not None], aside_dir)
    # the index takes what is now in the tree: the new versions with their real stat data,
    # or a save that won the race (it is then staged, and the next commit records it)
    ordered = [c.path for c in todo if c.new_oid is None] + \
        [c.path for c in todo if c.new_oid is not None]  # removals first: file <-> dir
    res = repo.run("update-index", "--add", "--remove", "--replace", "-z", "--stdin",
                   check=False, input="".join(p + "\0" for p in ordered)
                   .encode(errors="surrogateescape"))
    if res.returncode != 0:
        log.warning("updating the index after the merge: %s",
                    res.stderr.decode(errors="replace").strip())
    repo.run("update-ref", "-m", "autosync: merge", f"refs/heads/{branch}", new, old)
    shutil.rmtree(aside_dir, ignore_errors=True)


def put_back(repo, moved):
    """Return moved-aside files; a save that took a path meanwhile wins, the other is kept."""
    for path, aside in reversed(moved):
        full = os.path.join(repo.top, path)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.link(aside, full, follow_symlinks=False)
            os.unlink(aside)
        except FileExistsError:
            keep = f"{full}.autosync-saved-{os.getpid()}"
            os.rename(aside, keep)
            log.warning("'%s' was saved twice during a merge; the older save is '%s'", path,
                        keep)


def place_new(repo, todo, aside_dir):
    """The new versions, smudged by git (filters, eol) into temp files, linked into place."""
    if not todo:
        return
    index = os.path.join(aside_dir, "index")
    env = {"GIT_INDEX_FILE": index}
    lines = "".join(f"{c.new_mode} {c.new_oid}\t{c.path}\0" for c in todo)
    repo.run("update-index", "-z", "--index-info", env=env,
             input=lines.encode(errors="surrogateescape"))
    regular = [c for c in todo if c.new_mode != SYMLINK]
    temps = {}
    if regular:
        out = repo.run("checkout-index", "--temp", "-z", "--stdin", env=env,
                       input="".join(c.path + "\0" for c in regular)
                       .encode(errors="surrogateescape")).stdout
        for record in out.split(b"\0"):
            if b"\t" in record:
                tmp, path = record.split(b"\t", 1)
                temps[os.fsdecode(path)] = os.path.join(repo.top, os.fsdecode(tmp))
    for i, c in enumerate(todo):
        full = os.path.join(repo.top, c.path)
        if c.new_mode == SYMLINK:
            tmp = os.path.join(aside_dir, f"link-{i}")
            os.symlink(os.fsdecode(repo.run("cat-file", "blob", c.new_oid).stdout), tmp)
        else:
            tmp = temps[c.path]
            if c.new_mode == "100755":  # --temp files are never executable: as git does,
                mode = os.stat(tmp).st_mode  # give x wherever there is r
                os.chmod(tmp, mode | (mode & 0o444) >> 2)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.link(tmp, full, follow_symlinks=False)
        except FileExistsError:
            log.info("'%s' was saved during the merge: the save is kept", c.path)
        finally:
            os.unlink(tmp)


def prune_dirs(top, rel):
    """Remove directories a deletion left empty, up to the top."""
    while rel:
        try:
            os.rmdir(os.path.join(top, rel))
        except OSError:
            return
        rel = os.path.dirname(rel)
