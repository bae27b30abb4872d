"""Deterministic merge: the same tips give the same merge commit on every clone.

Tips are put in a fixed order (by commit id) before `git merge-tree --write-tree`, so the
merged tree does not depend on which clone is merging; more than two tips are folded in
that order, two at a time. Every conflicted path is then resolved without markers: the
version from the newer tip (committer time, then commit id) stays at the path, the other
one is kept beside it as a conflict copy (`copy_name`, the one place that format is made
and recognised). A path deleted on one side and modified on the other keeps the modified
file; a file where the other side has a directory goes to a conflict copy. The merge commit
has a fixed author, date (the newer tip's) and message, so two clones merging the same tips
at the same moment create the very same commit id and nothing ping-pongs.
"""

import argparse
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .checkout import Change, Entry, advance, changes, diff, recover
from .commit import check_committable, hold, ignored_untracked, uncommittable
from .config import Config
from .copies import Tip, copy_name, describe
from .git import Repo
from .treecheck import Refused, check_update
from .util import Error, log

T = TypeVar("T")

MERGE_IDENT = {"GIT_AUTHOR_NAME": "git-autosync", "GIT_AUTHOR_EMAIL": "git-autosync@localhost",
               "GIT_COMMITTER_NAME": "git-autosync",
               "GIT_COMMITTER_EMAIL": "git-autosync@localhost"}
# `git merge-tree` conflicts: {path: {stage: (mode, oid)}}
Stages = dict[str, dict[int, tuple[str, str]]]


@dataclass(frozen=True)
class Conflict:
    path: str
    kind: str  # "both-changed" or "file-directory" (a copy was made), "modify-delete" (kept)
    copy: str | None = None


# What depends on commit ids alone is the same every time it is computed: remembered for
# the life of the process (a clone folds the same tips again and again as new ones come),
# and forgotten all at once if an object it names may have gone (git gc --prune=now).
_memo: dict[tuple[Hashable, ...], Any] = {}


def _remember(repo: Repo, key: tuple[Hashable, ...], compute: Callable[[], T]) -> T:
    key = (repo.git_dir, *key)
    if key not in _memo:
        if len(_memo) >= 4096:
            _memo.clear()
        _memo[key] = compute()
    return _memo[key]


def conflict_copy_name(repo: Repo, path: str, tip: Tip, blob: str,
                       taken: dict[str, str]) -> str:
    """The copy name for path as it is (blob) on the side that lost: the one it has in
    `taken` (path -> blob of the tree) if that version is there already, else a free one."""
    origin = describe(repo, tip.oid, path)
    for n in range(1, 1000):
        candidate = copy_name(path, origin.host, origin.time, n, version=blob)
        if taken.get(candidate, blob) == blob:
            taken[candidate] = blob
            return candidate
    raise Error(f"too many conflict copies of '{path}'")


def parse_merge_tree(output: str) -> tuple[str, Stages]:
    """(tree, {path: {stage: (mode, oid)}}) from `git merge-tree --write-tree -z` output."""
    fields = output.split("\0")
    tree = fields[0]
    stages: Stages = {}
    for item in fields[1:]:
        if not item:
            break
        meta, _, path = item.partition("\t")
        mode, oid, stage = meta.split(" ")
        stages.setdefault(path, {})[int(stage)] = (mode, oid)
    return tree, stages


def resolve(repo: Repo, stages: Stages, first: Tip, second: Tip, winner_is_first: bool,
            taken: dict[str, str]) -> tuple[list[str], list[Conflict]]:
    """Index lines and Conflicts that replace every conflicted path by clean versions."""
    lines: list[str] = []
    conflicts: list[Conflict] = []
    win, lose = (2, 3) if winner_is_first else (3, 2)
    loser_tip = second if winner_is_first else first
    for path in sorted(stages):
        s = stages[path]
        moved = next((t for t in (first, second) if path.endswith("~" + t.oid)), None)
        if moved is not None:
            # git moved a file aside as PATH~<commit> because the other side has a
            # directory there: the directory stays, the file becomes a conflict copy (the
            # version the side moved has; its base version, the only one, when it was
            # deleted on the side that has the directory)
            lines.append(_index_line("0", "0" * len(moved.oid), path))
            real = path[:-len(moved.oid) - 1]
            mode, blob = s.get(2) or s.get(3) or s[1]
            copy = conflict_copy_name(repo, real, moved, blob, taken)
            lines.append(_index_line(mode, blob, copy))
            conflicts.append(Conflict(real, "file-directory", copy))
        elif win in s and lose in s:
            copy = conflict_copy_name(repo, path, loser_tip, s[lose][1], taken)
            lines.append(_index_line(*s[win], path))
            lines.append(_index_line(*s[lose], copy))
            conflicts.append(Conflict(path, "both-changed", copy))
        elif win in s or lose in s:  # changed on one side, deleted on the other
            lines.append(_index_line(*s.get(win) or s[lose], path))
            conflicts.append(Conflict(path, "modify-delete"))
        else:
            lines.append(_index_line("0", "0" * len(s[1][1]), path))
    return lines, conflicts


def _index_line(mode: str, oid: str, path: str) -> str:
    return f"{mode} {oid}\t{path}\0"


def merge_commits(repo: Repo, a: str, b: str,
                  independent: bool = False) -> tuple[str, list[Conflict]]:
    """The commit that merges a and b (either order gives the same result), and the
    conflicts. independent: the caller knows neither contains the other."""
    if not independent:
        if repo.is_ancestor(b, a):
            return a, []
        if repo.is_ancestor(a, b):
            return b, []
    return _remember(repo, ("merge", *sorted((a, b))), lambda: _merge(repo, a, b))


def _merge(repo: Repo, a: str, b: str) -> tuple[str, list[Conflict]]:
    first, second = sorted((describe(repo, a), describe(repo, b)), key=lambda t: t.oid)
    left, right, base = _merge_sides(repo, first.oid, second.oid)
    # (no directory renames: a file saved into a folder the other side moved stays where
    # it was saved; git 2.39 takes merge.directoryRenames, not merge.renames)
    res = repo.run("-c", "merge.directoryRenames=false", "merge-tree", "--write-tree", "-z",
                   "--no-messages", "--allow-unrelated-histories", left, right, check=False)
    if res.returncode not in (0, 1):
        raise Error(f"cannot merge {first.oid[:10]} and {second.oid[:10]}: "
                    + res.stderr.decode(errors="replace").strip())
    tree, stages = parse_merge_tree(res.stdout.decode(errors="surrogateescape"))
    stages = {_moved_aside(path, (left, first.oid), (right, second.oid)): v
              for path, v in stages.items()}
    fixed: dict[str, Entry | None] = {}
    if base is not None:
        sides = [changes(repo, base, side) for side in (left, right)]
        if any(_renames_possible(side) for side in sides):
            aside = {p for p in stages if p.endswith(("~" + first.oid, "~" + second.oid))}
            fixed = _undo_renames(repo, base, tree, stages, aside, *sides)
    conflicts: list[Conflict] = []
    if stages or fixed:
        winner_is_first = (first.time, first.oid) > (second.time, second.oid)
        tree, conflicts = _rewrite_tree(repo, tree, stages, first, second, winner_is_first,
                                        fixed)
    newer = max(first.time, second.time)
    env = dict(MERGE_IDENT, GIT_AUTHOR_DATE=f"@{newer} +0000",
               GIT_COMMITTER_DATE=f"@{newer} +0000")
    message = merge_message(conflicts)
    commit = repo.out("commit-tree", tree, "-p", first.oid, "-p", second.oid, "-m", message,
                      env=env)
    return commit, conflicts


def _renames_possible(side: list[Change]) -> bool:
    """Whether git could see a rename in one side's changes: a path deleted and another
    added (merge-tree follows renames, and git 2.39 has no switch to stop it)."""
    return any(c.new is None for c in side) and any(c.old is None for c in side)


def _undo_renames(repo: Repo, base: str, tree: str, stages: Stages, aside: set[str],
                  left: list[Change], right: list[Change]) -> dict[str, Entry | None]:
    """Autosync's commits know no renames (a file saved, a file deleted), but merge-tree
    follows them: an edit of p lands in q when the other side deleted p and added a q
    much like it, or q gets conflict markers, reported clean. Here every path the merged
    tree has other than each side's changes say is put right: what one side alone changed
    is taken as it is; what both changed, other than both modifying a file (merged line
    by line, which no rename can touch), becomes stages (in stages) for resolve; a path
    neither changed keeps base's entry, whatever merge-tree made of it, unless it is a
    file merge-tree moved aside for a directory (aside: PATH~<commit>, see resolve).
    Returns the entries to set (None: remove)."""
    ours = {c.path: c for c in left}
    theirs = {c.path: c for c in right}
    got = {c.path: c for c in changes(repo, base, tree)}  # what the merge changed
    fixed: dict[str, Entry | None] = {}
    for path in sorted(ours.keys() | theirs.keys() | got.keys()):
        o, t = ours.get(path), theirs.get(path)
        if o is None and t is None:  # changed by neither side: the merge keeps base's
            if path not in aside:
                stages.pop(path, None)
                if path in got:
                    fixed[path] = got[path].old
            continue
        if o is not None and t is not None and o.new != t.new:
            moved = any(p.startswith(path + "~") for p in aside)  # (merge-tree's own:
            # a file moved aside for a directory, see resolve)
            if None in (o.old, o.new, t.new) and not moved:  # added on both, or modified
                # and deleted
                stages[path] = {n: e for n, e in ((2, o.new), (3, t.new)) if e is not None}
            continue  # (both modified: merged line by line, which no rename can touch)
        one = o or t  # one side's change, or the same change on both
        assert one is not None
        have = got[path].new if path in got else one.old
        if have != one.new or path in stages:
            stages.pop(path, None)
            fixed[path] = one.new
    return fixed


MAX_BASES = 1  # best common ancestors git's own recursive merge is left to combine
MAX_FOLDED_BASES = 8  # more are merged by git (one process) and not folded (one each)


def _merge_sides(repo: Repo, a: str, b: str) -> tuple[str, str, str | None]:
    """What merge-tree merges for a and b, and their merge base (None: unrelated):
    themselves when they have few best common ancestors. With more (the criss-cross
    histories concurrent folds make), git's own recursive merge of the bases costs seconds
    and grows with the history; then the base is their fold - remembered, like every merge
    here, so each is merged once - and a's and b's trees are merged against it through
    commits made for that (same trees, with that base as their only history)."""
    bases = repo.out("merge-base", "--all", a, b).split()
    if len(bases) <= MAX_BASES:
        return a, b, bases[0] if bases else None
    if len(bases) > MAX_FOLDED_BASES:  # made to be costly (a hostile push): git merges the
        return a, b, None  # bases itself, in one process, the same on every clone
    base = fold(repo, bases)[0]
    env = dict(MERGE_IDENT, GIT_AUTHOR_DATE="@0 +0000", GIT_COMMITTER_DATE="@0 +0000")
    root = repo.out("commit-tree", repo.tree(base), "-m", "autosync: merge base", env=env)
    left, right = (repo.out("commit-tree", repo.tree(side), "-p", root, "-m",
                            "autosync: side", env=env) for side in (a, b))
    return left, right, root


def _moved_aside(path: str, *sides: tuple[str, str]) -> str:
    """PATH~<commit merged> (git's name for a file moved aside) with the real commit's id."""
    for merged, real in sides:
        if path.endswith("~" + merged):
            return path[:-len(merged)] + real
    return path


def fold(repo: Repo, tips: Sequence[str]) -> tuple[str, list[Conflict]]:
    """The merge of every tip in tips (commit ids none of which contains another): one
    merge commit with them all as parents, its tree merged two at a time, oldest tip first
    (committer time, then id), through commits nothing refers to. The same set gives the
    same commit everywhere, and a set of any size costs one merge commit in the history."""
    try:
        return _fold(repo, tips)
    except Error:
        if not _memo:
            raise
        _memo.clear()  # an object a remembered merge names may be gone
        return _fold(repo, tips)


def _fold(repo: Repo, tips: Sequence[str]) -> tuple[str, list[Conflict]]:
    if len(tips) == 1:
        return tips[0], []
    tips = [t.oid for t in sorted((describe(repo, t) for t in tips),
                                  key=lambda t: (t.time, t.oid))]
    if len(tips) <= 2:
        return (merge_commits(repo, tips[0], tips[1], independent=True) if len(tips) == 2
                else (tips[0], []))
    merged, conflicts = tips[0], []
    for tip in tips[1:]:  # a new tip is usually the newest: the merges before it are known
        merged, more = merge_commits(repo, merged, tip, independent=True)
        conflicts += more
    newer = describe(repo, tips[-1]).time
    env = dict(MERGE_IDENT, GIT_AUTHOR_DATE=f"@{newer} +0000",
               GIT_COMMITTER_DATE=f"@{newer} +0000")
    parents = [arg for tip in sorted(tips) for arg in ("-p", tip)]
    return _remember(repo, ("octopus", *sorted(tips)), lambda: repo.out(
        "commit-tree", repo.tree(merged), *parents, "-m", merge_message(conflicts),
        env=env)), conflicts


def _rewrite_tree(repo: Repo, tree: str, stages: Stages, first: Tip, second: Tip,
                  winner_is_first: bool,
                  fixed: dict[str, Entry | None]) -> tuple[str, list[Conflict]]:
    """tree with the entries of fixed set (None: removed) and every conflicted path
    resolved (resolve)."""
    start: dict[str, Entry] = {}  # path -> (mode, blob) of tree
    for entry in repo.out("ls-tree", "-r", "-z", tree).split("\0"):
        meta, _, name = entry.partition("\t")
        if name:
            mode, _, oid = meta.split(" ")
            start[name] = (mode, oid)
    final = dict(start)
    for path, e in fixed.items():
        if e:
            final[path] = e
        else:
            final.pop(path, None)
    taken = {path: e[1] for path, e in final.items()}
    lines, conflicts = resolve(repo, stages, first, second, winner_is_first, taken)
    for line in lines:
        meta, _, path = line.rstrip("\0").partition("\t")
        mode, _, oid = meta.partition(" ")
        if mode == "0":
            final.pop(path, None)
        else:
            final[path] = (mode, oid)
    _file_directory(repo, final, conflicts, (first, second), taken)
    # removals first: update-index would let a file replace a directory (or the other way
    # round) on the way, and the tree lose it
    zero = "0" * len(tree)
    lines = [_index_line("0", zero, path) for path in start if path not in final]
    lines += [_index_line(*e, path) for path, e in final.items() if start.get(path) != e]
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


def _file_directory(repo: Repo, final: dict[str, Entry], conflicts: list[Conflict],
                    tips: tuple[Tip, Tip], taken: dict[str, str]) -> None:
    """A file at a path the merged tree (final) needs as a directory goes to a conflict
    copy, as merge-tree does with a file in the way."""
    dirs: set[str] = set()
    for path in final:
        i = path.rfind("/")
        while i > 0 and path[:i] not in dirs:  # (each directory's parents are in already)
            dirs.add(path[:i])
            i = path.rfind("/", 0, i)
    for path in sorted(p for p in final if p in dirs):
        mode, blob = final.pop(path)
        tip = next((t for t in tips if repo.out("rev-parse", "-q", "--verify",
                                                 f"{t.oid}:{path}", check=False) == blob),
                   tips[0])
        copy = conflict_copy_name(repo, path, tip, blob, taken)
        final[copy] = (mode, blob)
        conflicts.append(Conflict(path, "file-directory", copy))


def merge_message(conflicts: list[Conflict]) -> str:
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
    head: str | None  # the branch's new commit
    conflicts: list = field(default_factory=list)  # Conflicts the merge resolved
    copies: list = field(default_factory=list)  # (path, copy): a save landed during the update
    kept: list = field(default_factory=list)  # (path, where): local files moved out of the way
    refused: list = field(default_factory=list)  # Refused: tips git would not check out
    tips: list = field(default_factory=list)  # the tips brought in
    deferred: bool = False  # more tips than MAX_FOLD: the rest wait for the next time
    waiting: bool = False  # a fold is needed, and another clone makes it (see integrate)
    mine: bool = False  # ... of work of this clone's own, among others
    held_back: list = field(default_factory=list)  # ... and the tips left to that fold


def local_side(repo: Repo, head: str) -> list[str]:
    """What stands for this clone's own work in a fold: HEAD; or, when HEAD is a merge
    autosync made, the commits it merged - so that the fold depends on the tips alone, and
    not on the order in which this clone happened to see them (no merges of merges)."""
    author, _, parents = repo.out("log", "-1", "--format=%ae%x00%P", head).partition("\0")
    if not maybe_fold(author, parents):
        return [head]
    try:  # the very commit fold makes of them (remembered): not amended, not made up
        if fold(repo, parents.split())[0] == head:
            return parents.split()
    except Error:
        pass
    return [head]


def maybe_fold(author_email: str, parents: str) -> bool:
    """Whether a commit by author_email with parents (ids, space-separated) may be a fold
    autosync made (local_side tells for sure)."""
    return author_email == MERGE_IDENT["GIT_AUTHOR_EMAIL"] and len(parents.split()) >= 2


def is_fold(repo: Repo, commit: str) -> bool:
    """Whether commit is the fold of its parents that autosync makes (so nobody's work of
    its own: a user's merge, or an amended fold, is)."""
    return local_side(repo, commit) != [commit]


MAX_FOLD = 32  # tips brought in at once; more wait for the next integration


def oldest(repo: Repo, oids: list[str]) -> list[str]:
    """oids, oldest commit first (committer time, then id): one git process."""
    out = repo.out("log", "--no-walk=unsorted", "--format=%H %ct", *oids, "--")
    when = dict(line.split() for line in out.splitlines() if " " in line)
    return sorted(oids, key=lambda oid: (int(when.get(oid, 0)), oid))


REFUSED_HINT = ("nothing was changed; syncing resumes by itself once the branch moves on "
                "to a commit without it")


def integrate(repo: Repo, tips: str | Sequence[str], config: Config,
              folds: Callable[[list[str], bool], bool] | None = None) -> Integrated:
    """Bring the checked-out branch to include every acceptable commit of tips (one commit
    id or several), updating the work tree: a fast-forward when one tip contains all the
    others and HEAD, else the fold of them all (`fold`).

    folds(new, mine), when given, says whether this clone is the one to fold the independent
    tips new (sync.Remote.folds; mine: HEAD has commits no tip has); when not, nothing is
    done (.waiting) unless it is a fast-forward. The caller has committed local changes and
    holds repo.lock(). A tip whose tree git would not check out is left out (in .refused)
    and the others are brought in. checkout.advance asks for a commit first when local
    edits are in the way (Busy), and never overwrites a file saved in the meantime.
    """
    recover(repo)
    head = repo.head()
    tips = [tips] if isinstance(tips, str) else list(dict.fromkeys(tips))
    ours = [] if head is None else [head]
    new = repo.out("merge-base", "--independent", *ours, *tips).split()
    if head is not None and head in new and head not in tips and len(new) > 1:
        # HEAD holds something no tip has: when that is a fold autosync made here, its
        # parents stand for it (local_side). A HEAD a tip holds is shared history as it is.
        ours = local_side(repo, head)
        if ours != [head]:
            new = repo.out("merge-base", "--independent", *ours, *tips).split()
    result = Integrated(head)
    others = [t for t in new if t not in ours]
    mine = len(new) > len(others)
    if len(new) > 1 and folds is not None and not folds(new, mine):
        result.waiting, result.mine, result.held_back = True, mine, others
        # meanwhile, a tip that holds HEAD is taken as it is (a fast-forward: nothing is
        # built here): a save reaches this clone at once, the fold of the rest comes later
        ahead = [] if mine or head is None else [t for t in others
                                                  if repo.is_ancestor(head, t)]
        if not ahead:
            return result
        new = others = [max(ahead, key=lambda t: (describe(repo, t).time, t))]
    if len(others) > MAX_FOLD:  # someone flooding: the oldest first, the rest next time
        others = oldest(repo, others)[:MAX_FOLD]
        result.deferred = True
        new = [t for t in new if t in ours] + others
    incoming = []
    for tip in others:
        if len(new) > 1:
            # each incoming side on its own first: merge-tree would quietly drop a duplicate
            # entry, so a hostile tree must be refused before it is merged with local work
            # (a single tip is checked as it is by checkout.advance)
            base = head and repo.run("merge-base", head, tip,
                                     check=False).stdout.decode().strip()
            try:
                check_update(repo, repo.tree(base) if base else None, repo.tree(tip))
            except Refused as e:
                result.refused.append(Refused(f"refusing commit {tip[:10]}: {e.message}",
                                              REFUSED_HINT, commit=tip))
                continue
        incoming.append(tip)
    if not incoming:
        return result
    result.tips = incoming
    try:
        _bring_in(repo, config, head, incoming, [t for t in new if t in ours], result)
    except Refused as e:  # each tip is fine on its own, their merge is not
        result.refused += [Refused(f"refusing commit {tip[:10]}: {e.message}", REFUSED_HINT,
                                   commit=tip) for tip in incoming]
        return Integrated(head, refused=result.refused)
    for c in result.conflicts:
        log.warning("conflict in '%s': %s", c.path,
                    f"other version kept as '{c.copy}'" if c.copy else "modified version kept")
    return result


def _bring_in(repo: Repo, config: Config, head: str | None, incoming: list[str],
              ours: list[str], result: Integrated) -> None:
    merged, result.conflicts = fold(repo, incoming + ours)
    result.head = merged
    if merged == head:  # HEAD is the merge of these tips already
        result.conflicts = []
        return
    if head is None:  # unborn branch: nothing committed here yet, so nothing to protect
        repo.run("merge", "--ff-only", "-q", merged, env={"GIT_AUTOSYNC_COMMITTER": "1"})
        return
    branch = repo.current_branch()
    if branch is None:  # only the branch checked out is ever moved
        raise Error("HEAD is detached; not merging", "git switch BRANCH, then merge again")
    # conflict copies of a save made meanwhile are named after the newest incoming commit
    newest = incoming[0] if len(incoming) == 1 else max(
        (describe(repo, t) for t in incoming), key=lambda t: (t.time, t.oid)).oid
    # someone else's .gitignore edit must not make this clone commit (and push) what it
    # ignored until now: everything ignored now is held before the new rules can reach
    # the folder (a crash or a failure half way must not let a commit take it); what the
    # new rules still ignore is let go afterwards
    todo = diff(repo, head, merged)
    rules = any(c.path.rpartition("/")[2] == ".gitignore" for c in todo[0])
    ignored = ignored_untracked(repo) if rules else set()
    if ignored:
        hold(repo, add=ignored)
    result.copies, result.kept = advance(
        repo, branch, head, merged, (newest, config.host),
        lambda paths: uncommittable(repo, config, paths), todo)
    if ignored:
        unignored = hold(repo, drop=ignored_untracked(repo)) & ignored
        if unignored:
            log.warning("not committing %s: ignored here until %s changed .gitignore (git "
                        "add it by hand to share it)", ", ".join(
                            f"'{p}'" for p in sorted(unignored)[:5])
                        + (" ..." if len(unignored) > 5 else ""), newest[:10])


def main(argv: list[str]) -> int:
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
        head = repo.head()  # None on an unborn branch: the commit itself is the result
        print(merge_commits(repo, head, target)[0] if head else target)
        return 0
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
