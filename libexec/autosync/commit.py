"""Stage exactly the changed paths and commit them (the commit helper).

`git status` limited to the paths a batch names tells what really changed (git applies
.gitignore and shows nested repositories as `dir/`); `git update-index --add --remove`
stages exactly those entries. Only the start-up catch-up and a watcher overflow look at the
whole tree. Editor temp files, nested repositories and files above autosync.maxFileSize are
left out, each with one warning.
"""

import argparse
import io
import os
import re
import stat
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

from . import replace
from .checkout import interrupted_paths, recover
from .config import Config
from .git import Repo, diagnosis
from .ignore import is_temp
from .treecheck import MAX_DEPTH, name_problem
from .util import Error, Retry, log, warn

# A pathspec-limited status is cheap for a few paths; past this many, one status of the
# whole tree costs less than matching every index entry against every path.
MAX_PATHSPECS = 256
# How long a foreign index.lock may sit unchanged, with no git process in the
# repository, before it counts as stale and is removed.
STALE_LOCK_SECONDS = 2.0
LOCK_WAIT_SECONDS = 30.0

@dataclass
class Result:
    commit: str | None = None  # the new commit, or None when nothing changed
    message: str = ""
    skipped_large: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def check_committable(repo: Repo) -> None:
    """Refuse to touch a repository in a state the user is handling by hand."""
    op = repo.operation_in_progress()
    if op:
        verb = {"bisect": "reset"}.get(op, "continue")
        raise Error(f"'{repo.cwd}' is in the middle of a {op} started by hand; not touching it",
                    f"finish it with 'git {op} --{verb}' or 'git {op} --abort'"
                    if op != "bisect" else "finish it with 'git bisect reset'")


def changed_entries(repo: Repo, paths: Collection[str] | None) -> list[tuple[str, str]]:
    """[(xy, path)] from `git status`, for the given paths or the whole tree (paths=None)."""
    args = ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
            "--ignore-submodules=none"]
    env = {"GIT_OPTIONAL_LOCKS": "0"}  # no opportunistic index rewrite: half the time
    if paths is not None:
        if not paths:
            return []
        args += ["--"] + sorted(paths)
        env["GIT_LITERAL_PATHSPECS"] = "1"
    out = repo.run(*args, env=env).stdout.decode(errors="surrogateescape")
    return [(item[:2], item[3:]) for item in out.split("\0") if item]


UNMERGED = {"DD", "AU", "UD", "UA", "DU", "AA", "UU"}


TEMP, NESTED, LARGE = "an editor temp file", "a nested repository", \
    "larger than autosync.maxFileSize"
REFUSED = "a name or symlink git refuses to check out"


def skip_reason(repo: Repo, config: Config, path: str, xy: str = "") -> str | None:
    """Why autosync leaves this changed path (a `git status` entry, xy its status) uncommitted,
    or None. The shared file's ignore patterns apply to untracked files only."""
    if is_temp(path, config["ignore"]) or (
            xy == "??" and config.shared_ignore and is_temp(path, config.shared_ignore)):
        return TEMP
    if path.endswith("/"):  # an untracked directory git would not descend: a repository
        return NESTED
    try:
        st = os.lstat(os.path.join(repo.work_tree, path))
    except (FileNotFoundError, NotADirectoryError):  # (its directory now a file)
        return None  # deleted: update-index --remove stages the removal
    if st.st_size > config["maxFileSize"] and stat.S_ISREG(st.st_mode):
        return LARGE
    parts = path.split("/")
    if len(parts) > MAX_DEPTH or any(
            name_problem(os.fsencode(p), b"40000") for p in parts[:-1]) or name_problem(
            os.fsencode(parts[-1]), b"120000" if stat.S_ISLNK(st.st_mode) else b"100644"):
        return REFUSED  # e.g. a symlinked .gitignore: every clone would refuse the commit
    return None


def select(repo: Repo, config: Config, entries: list[tuple[str, str]],
           result: Result) -> list[str]:
    """The paths to stage, leaving out temp files, nested repositories and large files."""
    chosen = []
    held = read_held(repo)
    for xy, path in entries:
        if xy in UNMERGED:
            raise Error(f"'{path}' has unresolved merge conflicts; not committing",
                        f"resolve it, then 'git add -- {path}' (or 'git merge --abort')")
        if xy == "??" and held and _under(path.rstrip("/"), held):
            result.held.append(path)
            continue
        reason = skip_reason(repo, config, path, xy)
        if reason is None:
            chosen.append(path)
        elif reason == NESTED:
            result.nested.append(path.rstrip("/"))
        elif reason == LARGE:
            result.skipped_large.append(path)
        elif reason == REFUSED:
            warn(f"not committing '{path}': {reason}",
                 "other clones would refuse the commit; use a plain file instead")
    return chosen


def uncommittable(repo: Repo, config: Config, paths: list[str]) -> dict[str, str]:
    """{path: reason} for those of paths (files or directories) holding nothing autosync
    would commit: ignored, temp names, nested repositories, too large."""
    entries = changed_entries(repo, paths)
    result = {}
    for path in paths:
        inside = [(xy, p) for xy, p in entries
                  if p.rstrip("/") == path or p.startswith(path + "/")]
        reasons = [skip_reason(repo, config, p, xy) for xy, p in inside]
        known = [r for r in reasons if r is not None]
        if len(known) == len(reasons):
            result[path] = known[0] if known else "ignored"
    return result


# {git dir: index_mark() when this process's own commit left the index as HEAD}
_AS_HEAD: dict[str, tuple[int, int, int, str | None]] = {}


def index_mark(repo: Repo) -> tuple[int, int, int, str | None] | None:
    """The index file's identity and HEAD's commit (no process): another git writing
    the index (git add, rm --cached, update-index by hand; a merge) or moving HEAD
    (git reset --soft) changes it."""
    try:
        st = os.stat(repo.git_path("index"))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size, repo.head()


def name_status(repo: Repo, entries: list[tuple[str, str]], chosen: list[str],
                as_head: bool = False) -> str:
    """What the commit changes, in `git diff --cached --name-status -z` form, from what
    `git status` said already: the paths staged now, and those staged before by hand.
    Git is asked instead for a commit that both adds and deletes files (renames are
    found then), and unless the index was as HEAD outside the batch (as_head: this
    process's last commit left it so): a change staged by hand elsewhere is committed
    too, and status limited to the batch's paths does not list it."""
    staged = set(chosen)
    codes: dict[str, str] = {}
    for xy, path in entries:
        if path not in staged and xy[0] in " ?":
            continue  # not part of this commit
        full = os.path.join(repo.work_tree, path)
        if (path in staged or xy[0] == "D") and (not os.path.lexists(full) or (
                xy[1] == "D" and os.path.isdir(full) and not os.path.islink(full))):
            code = "D"  # (a directory in its place: a file's removal)
        elif xy == "??" or "A" in xy:  # (" A": added with intent to add)
            code = "A"
        else:
            code = "M"
        # one path listed twice ('D ' and '??': untracked by hand, then saved) is one edit
        codes[path] = code if codes.get(path, code) == code else "M"
    if not as_head or {"A", "D"} <= set(codes.values()) or any(
            xy[0] in "RC" for xy, _ in entries):
        return repo.run("diff", "--cached", "--name-status", "-z", "-M", "--no-ext-diff"
                        ).stdout.decode(errors="surrogateescape")
    return "".join(f"{code}\0{path}\0" for path, code in codes.items())


def _mark_as_head(repo: Repo) -> None:
    mark = index_mark(repo)
    if mark is not None:
        _AS_HEAD[repo.git_dir] = mark


def summarize(status_lines: str) -> tuple[str, int]:
    """'edit notes.md, add 2 files' from `git diff --cached --name-status -z` fields."""
    verbs = {"M": "edit", "T": "edit", "A": "add", "C": "add", "D": "delete", "R": "rename"}
    groups: dict[str, list[str]] = {}
    fields = status_lines.split("\0")
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i][0]
        if code in "RC":
            groups.setdefault(verbs[code], []).append(f"{_short(fields[i + 1])} to "
                                                       f"{_short(fields[i + 2])}")
            i += 3
        else:
            groups.setdefault(verbs.get(code, "edit"), []).append(_short(fields[i + 1]))
            i += 2
    parts = []
    for verb in ("edit", "add", "delete", "rename"):
        items = groups.get(verb, [])
        if len(items) == 1:
            parts.append(f"{verb} {items[0]}")
        elif items:
            parts.append(f"{verb} {len(items)} files")
    count = sum(len(v) for v in groups.values())
    return ", ".join(parts), count


def _short(path: str) -> str:
    """A path for a one-line message: control characters shown as '?', long paths cut."""
    path = re.sub(r"[\x00-\x1f\x7f]", "?", path)
    return path if len(path) <= 60 else "..." + path[-57:]


# -- files a merge un-ignored -------------------------------------------------------------
HELD = "held"  # $GIT_DIR/autosync/held: NUL-separated paths (a directory: all below it)


def ignored_untracked(repo: Repo) -> set[str]:
    """Untracked files git ignores now, one by one (a file created later in an ignored
    directory is not among them)."""
    out = repo.run("ls-files", "-z", "-o", "-i", "--exclude-standard").stdout
    return {p for p in os.fsdecode(out).split("\0") if p}


def read_held(repo: Repo) -> set[str]:
    try:
        with open(os.path.join(repo.state_dir, HELD), "rb") as f:
            return {p for p in os.fsdecode(f.read()).split("\0") if p}
    except FileNotFoundError:
        return set()


def hold(repo: Repo, add: Iterable[str] = (), drop: Iterable[str] = ()) -> set[str]:
    """Never commit these by ourselves: a merge (someone else's .gitignore edit) may
    un-ignore them. `git add` by hand still commits one; so does removing it from the file."""
    path = os.path.join(repo.ensure_state_dir(), HELD)
    held = (read_held(repo) | set(add)) - set(drop)
    with open(path + ".tmp", "wb") as f:
        f.write(os.fsencode("".join(p + "\0" for p in sorted(held))))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return held


def _under(path: str, paths: Collection[str]) -> bool:
    """Whether path or one of its directories is in paths."""
    while path:
        if path in paths:
            return True
        path = path.rpartition("/")[0]
    return False


def render_message(template: str, summary: str, host: str, count: int) -> str:
    return (template.replace("%(summary)", summary).replace("%(host)", host)
            .replace("%(count)", str(count)))


def wait_for_index_lock(repo: Repo, timeout: float = LOCK_WAIT_SECONDS) -> None:
    """Wait while someone holds index.lock; remove it only when it is provably stale."""
    lock = repo.git_path("index.lock")
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        try:
            st = os.stat(lock)
        except FileNotFoundError:
            return
        ident = (st.st_ino, st.st_mtime_ns)
        if ident != seen:
            seen, since = ident, time.monotonic()
        elif time.monotonic() - since >= STALE_LOCK_SECONDS and not git_running_in(repo):
            log.warning("removing stale '%s' (no git process is using the repository)", lock)
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
            return
        if time.monotonic() >= deadline:
            raise Retry(f"'{lock}' is held by another git process",
                        "wait for it to finish; autosync retries by itself")
        time.sleep(0.05)


def _parent(pid: int) -> int:
    """The parent of process pid (0 when it cannot be told)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _lineage(pid: int, limit: int = 64) -> list[int]:
    """pid's parent, its parent, ... up to init (at most limit of them)."""
    chain: list[int] = []
    while len(chain) < limit:
        pid = _parent(pid)
        if pid <= 1 or pid in chain:
            break
        chain.append(pid)
    return chain


def git_running_in(repo: Repo) -> bool:
    """Whether any git process works in this repository, other than this one and those
    that started it (`git autosync sync` runs in a `git` that waits for it, in the
    repository, and holds no lock)."""
    roots = [repo.git_dir] + ([repo.top] if repo.top else [])
    me = os.getpid()
    ancestors = set(_lineage(me))
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me or int(pid) in ancestors:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("git"):
                    continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if any(cwd == r or cwd.startswith(r + "/") for r in roots):
            return True
        if b"GIT_DIR=" + repo.git_dir.encode() in environ:
            return True
    return False


# git commit asks `git maintenance run --auto` whether to pack up after every commit: a
# process on the way from a save to its push. One commit in MAINTAIN_EVERY lets it ask.
MAINTAIN_EVERY = 32
_commits: dict[str, int] = {}  # {git dir: commits this process made}


def _maintenance(repo: Repo) -> list[str]:
    """The options for the next commit: git's automatic maintenance, or not this time."""
    n = _commits[repo.git_dir] = _commits.get(repo.git_dir, -1) + 1
    return [] if n % MAINTAIN_EVERY == 0 else ["-c", "maintenance.auto=false"]


def commit_changes(repo: Repo, config: Config, paths: Collection[str] | None = None,
                   hook_pushes: bool = False, summary: str | None = None) -> Result:
    """Stage `paths` (None: the whole tree) and commit. Caller holds repo.lock().
    hook_pushes: the post-commit hook pushes it, as for any commit made by hand (the
    commit helper run alone); False when the caller pushes it itself (the sync engine).
    summary: what the message says instead of the one made from the changes ('restore
    notes.md as of 1a2b3c4d5e'), in the autosync.commitMessage template all the same."""
    result = Result()
    check_committable(repo)
    held: set[str] | None = set()
    try:
        replace.recover(repo)  # a restore that was killed: its temp files go first
    except Error as e:  # (they are never committed: the rest need not wait)
        log.warning("%s", e.message)
    try:
        recover(repo)  # an interrupted merge is completed first: never commit its half-state
    except Error as e:
        held = interrupted_paths(repo)
        if held is None:
            raise
        # a merge that cannot complete (a read-only directory, a full disk) must not stop
        # the user's other saves: everything it is about waits, the rest is committed
        log.warning("%s; committing everything else meanwhile", e.message)
    entries = changed_entries(repo, None if paths is None or len(paths) > MAX_PATHSPECS
                              else paths)
    if held:
        entries = [(xy, p) for xy, p in entries if not _under(p.rstrip("/"), held)]
    chosen = select(repo, config, entries, result)
    for path in result.skipped_large:
        warn(f"not committing '{path}': larger than autosync.maxFileSize "
             f"({config['maxFileSize']} bytes)",
             f"git config autosync.maxFileSize {config['maxFileSize'] * 2}")
    if not chosen and not entries:
        return result
    wait_for_index_lock(repo)
    as_head = _AS_HEAD.get(repo.git_dir, False) == index_mark(repo)
    if chosen:
        repo.run("update-index", "--add", "--remove", "-z", "--stdin",
                 input="".join(p + "\0" for p in chosen).encode(errors="surrogateescape"))
    names = name_status(repo, entries, chosen, as_head)
    if not names:
        return result
    made, count = summarize(names)
    result.message = render_message(config["commitMessage"], summary or made, config.host,
                                    count)
    res = repo.run(*_maintenance(repo), "commit", "-q", "--no-verify",
                   "--allow-empty-message", "-m", result.message,
                   env=None if hook_pushes else {"GIT_AUTOSYNC_COMMITTER": "1"}, check=False)
    if res.returncode == 1 and not res.stderr.strip() and repo.ok(
            "diff", "--cached", "--quiet", "--no-ext-diff"):
        _mark_as_head(repo)
        return result  # what was staged is as committed (a file saved back as it was)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        if "index.lock" in err:
            raise Retry("index.lock appeared while committing; will retry")
        # git's diagnosis whole: gpg's reason for a failed signature, the identity to set
        said = diagnosis(err) or f"'git commit' failed (exit status {res.returncode})"
        if "no space left on device" in err.lower():
            raise Retry(f"cannot commit in '{repo.cwd}': {said}",
                        "free some disk space; autosync retries by itself")
        if "gpg failed to sign" in err:  # git (2.39) keeps gpg's own reason to itself
            raise Error(f"cannot commit in '{repo.cwd}': {said}",
                        f"echo test | {config.other('gpg.program') or 'gpg'} --clearsign   "
                        "(says why it cannot sign; or: git config commit.gpgSign false)")
        raise Error(f"cannot commit in '{repo.cwd}': {said}")
    result.commit = repo.head()
    _mark_as_head(repo)
    log.info("committed %.10s %s", result.commit, result.message)
    return result


def batches(stream: io.BufferedIOBase, sep: bytes) -> Iterator[list[str]]:
    """Lists of paths read from stream as they come: each path ends in sep, and an empty
    one (or the end of the input) ends a batch. '.' stands for every change."""
    buf, batch = b"", []
    while chunk := stream.read1(65536):
        *records, buf = (buf + chunk).split(sep)
        for record in records:
            if record:
                batch.append(os.fsdecode(record))
            elif batch:
                yield batch
                batch = []
    if buf:
        batch.append(os.fsdecode(buf))
    if batch:
        yield batch


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="autosync-commit",
        description="Stage the given paths (default: every change) and commit them. The "
                    "commit is pushed like any other (the post-commit hook).")
    ap.add_argument("-C", dest="dir", default=".", help="repository (default: .)")
    ap.add_argument("--stdin", action="store_true",
                    help="read paths from stdin and commit each batch as it ends (an empty "
                         "line, or an empty path with -z: `autosync-watch -z | "
                         "autosync-commit --stdin -z`)")
    ap.add_argument("-z", action="store_true", help="with --stdin: paths are NUL-terminated")
    ap.add_argument("paths", nargs="*", help="paths relative to the top of the work tree")
    args = ap.parse_args(argv)
    repo = Repo(args.dir)
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository; nothing to commit")
    config = Config(repo)
    # typeshed declares sys.stdin.buffer a BinaryIO (no read1); it is a BufferedReader
    todo = batches(cast(io.BufferedIOBase, sys.stdin.buffer), b"\0" if args.z else b"\n") \
        if args.stdin else [args.paths]
    for paths in todo:
        with repo.lock():
            result = commit_changes(repo, config, None if not paths or "." in paths else paths,
                                    hook_pushes=True)
        if result.commit:
            print(f"[{result.commit[:10]}] {result.message}", flush=True)
    return 0
