"""Deterministic merge: the same two commits give the same merge commit on every clone.

The two tips are put in a fixed order (by commit id) before `git merge-tree --write-tree`,
so the merged tree does not depend on which clone is merging. Every conflicted path is
then resolved without markers: the version from the newer tip (committer time, then commit
id) stays at the path, the other one is kept beside it as
`NAME.conflict-<host>-<YYYYmmdd-HHMMSS>.EXT` (host and time of the tip that lost). A path
deleted on one side and modified on the other keeps the modified file. The merge commit has
a fixed author, date (the newer tip's) and message, so two clones merging the same pair at
the same moment create the very same commit id and nothing ping-pongs.
"""

import argparse
import os
import re
import time
from dataclasses import dataclass

from .git import Repo
from .util import Error, log

MERGE_IDENT = {"GIT_AUTHOR_NAME": "git-autosync", "GIT_AUTHOR_EMAIL": "git-autosync@localhost",
               "GIT_COMMITTER_NAME": "git-autosync",
               "GIT_COMMITTER_EMAIL": "git-autosync@localhost"}
HOST_IN_SUBJECT = re.compile(r"\(host ([A-Za-z0-9._-]{1,64})\)\s*$")


@dataclass(frozen=True)
class Tip:
    oid: str
    time: int
    subject: str

    @property
    def host(self):
        m = HOST_IN_SUBJECT.search(self.subject)
        return m.group(1) if m else self.oid[:8]


@dataclass(frozen=True)
class Conflict:
    path: str
    kind: str  # "both-changed" (a copy was made) or "modify-delete" (the modified file kept)
    copy: str | None = None


def describe(repo, oid):
    # log, not show: show sets up a diff it then skips (60 ms on a large tree)
    fields = repo.out("log", "-1", "--no-walk", "--format=%H%x00%ct%x00%s", oid,
                      "--").split("\0")
    return Tip(fields[0], int(fields[1]), fields[2])


NAME_MAX = 255  # bytes in one file name on every common file system


def copy_name(path, host, when, n=1):
    """notes.md -> notes.conflict-laptop-20261124-101530.md (-2, -3 ... for n > 1).
    A long stem is shortened so that the name still fits in NAME_MAX bytes."""
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem or len(os.fsencode(ext)) > 32:  # no extension, a dot file, or no real one
        stem, dot, ext = name, "", ""
    when = min(max(int(when), 0), 253402300799)  # a pushed date may be anything: 0..9999
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    suffix = f".conflict-{host}-{stamp}" + (f"-{n}" if n > 1 else "")
    room = NAME_MAX - len(os.fsencode(suffix + dot + ext))
    raw = os.fsencode(stem)
    if len(raw) > room:
        try:  # cut on a character boundary where the name is UTF-8
            raw.decode("utf-8")
            stem = raw[:room].decode("utf-8", "ignore")
        except UnicodeDecodeError:
            stem = os.fsdecode(raw[:room])
    return (head + "/" if head else "") + stem + suffix + dot + ext


def conflict_copy_name(path, tip, taken):
    """The copy name for the side that lost, unique within `taken`."""
    for n in range(1, 1000):
        candidate = copy_name(path, tip.host, tip.time, n)
        if candidate not in taken:
            return candidate
    raise Error(f"too many conflict copies of '{path}'")


def parse_merge_tree(output):
    """(tree, {path: {stage: (mode, oid)}}) from `git merge-tree --write-tree -z` output."""
    fields = output.split("\0")
    tree = fields[0]
    stages = {}
    for item in fields[1:]:
        if not item:
            break
        meta, _, path = item.partition("\t")
        mode, oid, stage = meta.split(" ")
        stages.setdefault(path, {})[int(stage)] = (mode, oid)
    return tree, stages


def resolve(stages, first, second, winner_is_first, taken):
    """Index lines and Conflicts that replace every conflicted path by clean versions."""
    lines, conflicts = [], []
    win, lose = (2, 3) if winner_is_first else (3, 2)
    loser_tip = second if winner_is_first else first
    for path in sorted(stages):
        s = stages[path]
        if win in s and lose in s:
            copy = conflict_copy_name(path, loser_tip, taken)
            taken.add(copy)
            lines.append(_index_line(*s[win], path))
            lines.append(_index_line(*s[lose], copy))
            conflicts.append(Conflict(path, "both-changed", copy))
        elif win in s or lose in s:  # changed on one side, deleted on the other
            lines.append(_index_line(*s.get(win) or s[lose], path))
            conflicts.append(Conflict(path, "modify-delete"))
        else:
            lines.append(_index_line("0", "0" * len(s[1][1]), path))
    return lines, conflicts


def _index_line(mode, oid, path):
    return f"{mode} {oid}\t{path}\0"


def merge_commits(repo, a, b):
    """The commit that merges a and b (either order gives the same result), and the conflicts."""
    if repo.is_ancestor(b, a):
        return a, []
    if repo.is_ancestor(a, b):
        return b, []
    first, second = sorted((describe(repo, a), describe(repo, b)), key=lambda t: t.oid)
    res = repo.run("merge-tree", "--write-tree", "-z", "--no-messages",
                   "--allow-unrelated-histories", first.oid, second.oid, check=False)
    if res.returncode not in (0, 1):
        raise Error(f"cannot merge {first.oid[:10]} and {second.oid[:10]}: "
                    + res.stderr.decode(errors="replace").strip())
    tree, stages = parse_merge_tree(res.stdout.decode(errors="surrogateescape"))
    conflicts = []
    if stages:
        winner_is_first = (first.time, first.oid) > (second.time, second.oid)
        tree, conflicts = _rewrite_tree(repo, tree, stages, first, second, winner_is_first)
    newer = max(first.time, second.time)
    env = dict(MERGE_IDENT, GIT_AUTHOR_DATE=f"@{newer} +0000",
               GIT_COMMITTER_DATE=f"@{newer} +0000")
    message = merge_message(conflicts)
    commit = repo.out("commit-tree", tree, "-p", first.oid, "-p", second.oid, "-m", message,
                      env=env)
    return commit, conflicts


def _rewrite_tree(repo, tree, stages, first, second, winner_is_first):
    taken = set(repo.out("ls-tree", "-r", "-z", "--name-only", tree).split("\0"))
    lines, conflicts = resolve(stages, first, second, winner_is_first, taken)
    index = os.path.join(repo.ensure_state_dir(), f"merge-index.{os.getpid()}")
    env = {"GIT_INDEX_FILE": index}
    try:
        repo.run("read-tree", tree, env=env)
        repo.run("update-index", "-z", "--index-info",
                 input="".join(lines).encode(errors="surrogateescape"), env=env)
        return repo.out("write-tree", env=env), conflicts
    finally:
        try:
            os.unlink(index)
        except FileNotFoundError:
            pass


def merge_message(conflicts):
    if not conflicts:
        return "autosync: merge"
    body = []
    for c in conflicts:
        if c.copy:
            body.append(f"  {c.path}: both changed; the other version is in {c.copy}")
        else:
            body.append(f"  {c.path}: changed on one side, deleted on the other; kept")
    return "autosync: merge, keeping both versions of conflicting files\n\n" + "\n".join(body)


@dataclass
class Integrated:
    head: str  # the branch's new commit
    conflicts: list  # Conflicts the merge resolved
    copies: list  # (path, copy): a save landed during the update; the new version is beside
    kept: list  # (path, where): local files autosync does not commit, moved out of the way


def integrate(repo, target, config):
    """Bring the checked-out branch to include `target`, updating the work tree.

    The caller has committed local changes and holds repo.lock(). checkout.advance refuses
    an unsafe tree (Refused), asks for a commit first when local edits are in the way
    (Busy), and never overwrites a file saved in the meantime.
    """
    from .checkout import advance, recover
    from .commit import hold, ignored_untracked, uncommittable
    from .treecheck import Refused, check_update
    recover(repo)
    head = repo.rev("HEAD")
    try:
        # the incoming side on its own first: merge-tree would quietly drop a duplicate
        # entry, so a hostile tree must be refused before it is merged with local work
        base = head and repo.run("merge-base", head, target, check=False).stdout.decode().strip()
        check_update(repo, repo.tree(base) if base else None, repo.tree(target))
        if head is None:  # unborn branch: take the remote's history as it is
            merged, conflicts = target, []
        else:
            merged, conflicts = merge_commits(repo, head, target)
        if merged == head:
            return Integrated(head, [], [], [])
        if head is None:  # nothing committed here yet, so nothing of ours to protect
            repo.run("merge", "--ff-only", "-q", merged, env={"GIT_AUTOSYNC_COMMITTER": "1"})
            copies, kept = [], []
        else:
            tip = describe(repo, target)
            # someone else's .gitignore edit must not make this clone commit (and push)
            # what it ignored until now: those files are held back
            rules = any(p.rpartition("/")[2] == ".gitignore" for p in repo.out(
                "diff-tree", "-r", "-z", "--name-only", head, merged).split("\0"))
            # everything ignored now is held before the new rules can reach the folder (a
            # crash or a failure half way must not let a commit take it); what the new rules
            # still ignore is let go afterwards
            ignored = ignored_untracked(repo) if rules else set()
            if ignored:
                hold(repo, add=ignored)
            copies, kept = advance(repo, repo.current_branch(), head, merged,
                                   (tip.host, tip.time, config.host),
                                   lambda paths: uncommittable(repo, config, paths))
            if ignored:
                unignored = hold(repo, drop=ignored_untracked(repo)) & ignored
                if unignored:
                    log.warning("not committing %s: ignored here until %s changed "
                                ".gitignore (git add it by hand to share it)",
                                ", ".join(f"'{p}'" for p in sorted(unignored)[:5])
                                + (" ..." if len(unignored) > 5 else ""), target[:10])
    except Refused as e:
        raise Refused(f"refusing commit {target[:10]}: {e.message}",
                      "nothing was changed; syncing resumes by itself once the branch moves "
                      "on to a commit without it", commit=target)
    for c in conflicts:
        log.warning("conflict in '%s': %s", c.path,
                    f"other version kept as '{c.copy}'" if c.copy else "modified version kept")
    return Integrated(merged, conflicts, copies, kept)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="autosync-merge",
        description="Merge COMMIT into the checked-out branch the way autosync does: "
                    "deterministically, keeping both versions of every conflicting file.")
    ap.add_argument("-C", dest="dir", default=".", help="repository (default: .)")
    ap.add_argument("--print-only", action="store_true",
                    help="only print the merge commit that would result; change nothing")
    ap.add_argument("commit", help="commit to merge, e.g. origin/main")
    args = ap.parse_args(argv)
    repo = Repo(args.dir)
    target = repo.rev(args.commit)
    if target is None:
        raise Error(f"not a commit: '{args.commit}'")
    if args.print_only:
        print(merge_commits(repo, repo.rev("HEAD"), target)[0])
        return 0
    from .commit import check_committable
    from .config import Config
    with repo.lock():
        check_committable(repo)
        result = integrate(repo, target, Config(repo))
    for c in result.conflicts:
        print(f"conflict: {c.path}" + (f" (other version: {c.copy})" if c.copy else " (kept)"))
    for path, copy in result.copies:
        print(f"saved during the merge: {path} (the merged version: {copy})")
    for path, where in result.kept:
        print(f"moved out of the way: {path} (now {where})")
    print(result.head)
    return 0
