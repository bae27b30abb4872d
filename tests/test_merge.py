"""Deterministic merges: same result on every clone, both versions kept, no markers."""

import itertools
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import git
from autosync.config import Config
from autosync.git import Repo
from autosync.merge import integrate, merge_commits
from autosync.util import Error


def commit_all(r, message, when):
    git(r, "add", "-A")
    git(r, "commit", "-q", "--allow-empty", "-m", message,
        env=dict(os.environ, GIT_COMMITTER_DATE=f"@{when} +0000", GIT_AUTHOR_DATE=f"@{when} +0000"))
    return git(r, "rev-parse", "HEAD")


def v(r, text):
    """The start of text's blob id: the version part of a conflict copy's name."""
    return git(r, "hash-object", "--stdin", input=text.encode())[:6]


def files_at(r, rev):
    names = [n for n in git(r, "ls-tree", "-r", "-z", "--name-only", rev).split("\0") if n]
    return {n: git(r, "cat-file", "blob", f"{rev}:{n}") for n in names}


@pytest.fixture
def diverged(make_repo):
    """A repository with branches `a` (older tip, host laptop) and `b` (newer, host desktop)."""
    r = make_repo()
    (r / "shared.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    (r / "doc.md").write_text("base\n")
    (r / "gone.txt").write_text("base\n")
    (r / "pic.bin").write_bytes(b"\0base")
    commit_all(r, "base", 1_700_000_000)
    git(r, "checkout", "-q", "-b", "a")
    (r / "shared.txt").write_text("ONE\ntwo\nthree\nfour\nfive\n")
    (r / "doc.md").write_text("laptop\n")
    (r / "gone.txt").write_text("edited on laptop\n")
    (r / "pic.bin").write_bytes(b"\0laptop")
    (r / "new.txt").write_text("laptop new\n")
    a = commit_all(r, "autosync: edit 4 files (host laptop)", 1_700_000_100)
    git(r, "checkout", "-q", "main")
    git(r, "checkout", "-q", "-b", "b")
    (r / "shared.txt").write_text("one\ntwo\nthree\nfour\nFIVE\n")
    (r / "doc.md").write_text("desktop\n")
    os.remove(r / "gone.txt")
    (r / "pic.bin").write_bytes(b"\0desktop")
    (r / "new.txt").write_text("desktop new\n")
    b = commit_all(r, "autosync: edit 4 files (host desktop)", 1_700_000_200)
    return r, a, b


def test_merge_is_the_same_commit_from_both_sides(diverged):
    r, a, b = diverged
    repo = Repo(r)
    m1, c1 = merge_commits(repo, a, b)
    m2, c2 = merge_commits(repo, b, a)
    assert m1 == m2 and c1 == c2
    assert set(git(r, "rev-list", "--parents", "-1", m1).split()[1:]) == {a, b}


def test_conflicts_keep_both_versions_newest_at_the_path(diverged):
    r, a, b = diverged
    m, conflicts = merge_commits(Repo(r), a, b)
    files = files_at(r, m)
    stamp = "20231114-221500"  # laptop's tip time, the losing side
    assert files["shared.txt"] == "ONE\ntwo\nthree\nfour\nFIVE"  # clean merge of other lines
    assert files["doc.md"] == "desktop"
    laptop, pic, new = v(r, "laptop\n"), v(r, "\0laptop"), v(r, "laptop new\n")
    assert files[f"doc.conflict-laptop-{stamp}-{laptop}.md"] == "laptop"
    assert files["pic.bin"] == "\0desktop"
    assert files[f"pic.conflict-laptop-{stamp}-{pic}.bin"] == "\0laptop"
    assert files["new.txt"] == "desktop new"  # add/add
    assert files[f"new.conflict-laptop-{stamp}-{new}.txt"] == "laptop new"
    assert files["gone.txt"] == "edited on laptop"  # delete vs modify keeps the modified file
    kinds = {c.path: c.kind for c in conflicts}
    assert kinds == {"doc.md": "both-changed", "pic.bin": "both-changed",
                     "new.txt": "both-changed", "gone.txt": "modify-delete"}
    assert not any("<<<<<<<" in v or ">>>>>>>" in v for v in files.values())
    assert git(r, "log", "-1", "--format=%an %ct", m) == "git-autosync 1700000200"


def test_fast_forward_and_already_merged(diverged):
    r, a, b = diverged
    repo = Repo(r)
    base = git(r, "rev-parse", "main")
    assert merge_commits(repo, base, a) == (a, [])
    assert merge_commits(repo, a, base) == (a, [])
    assert merge_commits(repo, a, a) == (a, [])


def test_integrate_updates_the_work_tree(diverged):
    r, a, b = diverged
    git(r, "checkout", "-q", "a")
    head = integrate(Repo(r), b, Config(Repo(r))).head
    assert git(r, "rev-parse", "HEAD") == head
    assert (r / "doc.md").read_text() == "desktop\n"
    copy = "doc.conflict-laptop-20231114-221500-" + v(r, "laptop\n") + ".md"
    assert (r / copy).read_text() == "laptop\n"
    assert git(r, "status", "--porcelain") == ""


def test_integrate_never_overwrites_uncommitted_work(diverged):
    r, a, b = diverged
    git(r, "checkout", "-q", "a")
    (r / "doc.md").write_text("unsaved local edit\n")
    head = git(r, "rev-parse", "HEAD")
    with pytest.raises(Error):
        integrate(Repo(r), b, Config(Repo(r)))
    assert (r / "doc.md").read_text() == "unsaved local edit\n"
    assert git(r, "rev-parse", "HEAD") == head


def test_copy_names_for_dotfiles_and_dirs(make_repo):
    r = make_repo()
    (r / "conf").mkdir()
    (r / "conf" / ".bashrc").write_text("base\n")
    (r / "Makefile").write_text("base\n")
    commit_all(r, "base", 1_700_000_000)
    git(r, "checkout", "-q", "-b", "x")
    (r / "conf" / ".bashrc").write_text("x\n")
    (r / "Makefile").write_text("x\n")
    x = commit_all(r, "edit", 1_700_000_050)
    git(r, "checkout", "-q", "main")
    (r / "conf" / ".bashrc").write_text("y\n")
    (r / "Makefile").write_text("y\n")
    y = commit_all(r, "edit", 1_700_000_060)
    m, _ = merge_commits(Repo(r), x, y)
    names = set(files_at(r, m))
    host = "Test-User"  # no "(host ...)" in the subject: its author names the side
    x_version = v(r, "x\n")
    assert f"conf/.bashrc.conflict-{host}-20231114-221410-{x_version}" in names
    assert f"Makefile.conflict-{host}-20231114-221410-{x_version}" in names


EXAMPLES = itertools.count()
contents = st.sampled_from(["", "a\n", "b\n", "a\nb\n", "line\n" * 3, "\0bin", None])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.dictionaries(st.sampled_from("pqrs"), contents.filter(lambda c: c is not None)),
       left=st.dictionaries(st.sampled_from("pqrs"), contents),
       right=st.dictionaries(st.sampled_from("pqrs"), contents),
       tl=st.integers(1_700_000_001, 1_700_000_100), tr=st.integers(1_700_000_001, 1_700_000_100))
def test_property_symmetric_and_nothing_lost(make_repo, base, left, right, tl, tr):
    """Any two edits of a common base: same merge both ways, every side's content survives."""
    r = make_repo(f"p{next(EXAMPLES)}")  # a fresh repository per example, even a repeated one

    def apply(changes):
        for name, text in changes.items():
            if text is None:
                if (r / name).exists():
                    os.remove(r / name)
            else:
                (r / name).write_text(text)
    apply(base)
    base_c = commit_all(r, "base", 1_700_000_000)
    git(r, "checkout", "-q", "-b", "L")
    apply(left)
    lc = commit_all(r, "autosync: L (host left)", tl)
    git(r, "checkout", "-q", base_c)
    git(r, "checkout", "-q", "-b", "R")
    apply(right)
    rc = commit_all(r, "autosync: R (host right)", tr)
    repo = Repo(r)
    m1, _ = merge_commits(repo, lc, rc)
    m2, _ = merge_commits(repo, rc, lc)
    assert m1 == m2
    merged = files_at(r, m1)
    values = list(merged.values())
    assert not any(v.startswith("<<<<<<<") or "\n=======\n" in v for v in values)
    for side in (lc, rc):
        for name, text in files_at(r, side).items():
            changed = files_at(r, base_c).get(name) != text
            if changed:  # every edit either side made is somewhere in the result
                assert text in values or any(text in v for v in values), (name, text)


def put(r, changes):
    """Write {path: text, None: removed} into work tree r; a file where a directory is
    wanted (or the other way round) is removed first."""
    for name, text in changes.items():
        target = r / name
        for parent in list(target.parents)[::-1]:
            if parent != r and parent.is_relative_to(r) and parent.is_file():
                os.remove(parent)
        if target.is_dir():
            shutil.rmtree(target)
        if text is None:
            if target.exists():
                os.remove(target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


names = st.sampled_from(["p", "q", "d/p", "d/q", "e/p", "p/x"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.dictionaries(names, contents.filter(lambda c: c is not None)),
       left=st.dictionaries(names, contents), right=st.dictionaries(names, contents),
       tl=st.integers(1_700_000_001, 1_700_000_100), tr=st.integers(1_700_000_001, 1_700_000_100))
def test_property_moves_and_directories_lose_nothing(make_repo, base, left, right, tl, tr):
    """Deleting one file and saving another much like it (what git takes for a rename),
    files becoming directories: the merge is the same both ways, has no conflict markers
    and holds every version either side saved (merge-tree alone would take an edit of p
    into q, or write markers into q and call it clean)."""
    r = make_repo(f"m{next(EXAMPLES)}")
    put(r, base)
    base_c = commit_all(r, "base", 1_700_000_000)
    git(r, "checkout", "-q", "-b", "L")
    put(r, left)
    lc = commit_all(r, "autosync: L (host left)", tl)
    git(r, "checkout", "-q", base_c)
    shutil.rmtree(r / "d", ignore_errors=True)  # (what checkout leaves of a directory)
    git(r, "checkout", "-q", "-f", "-b", "R")
    git(r, "clean", "-qfdx")
    put(r, right)
    rc = commit_all(r, "autosync: R (host right)", tr)
    repo = Repo(r)
    m1, _ = merge_commits(repo, lc, rc)
    assert m1 == merge_commits(repo, rc, lc)[0]
    values = list(files_at(r, m1).values())
    assert not any(v.startswith("<<<<<<<") or "\n=======\n" in v for v in values)
    before = files_at(r, base_c)
    for side in (lc, rc):
        for name, text in files_at(r, side).items():
            if before.get(name) != text:
                assert text in values or any(text in v for v in values), (name, text)


def test_a_fold_depends_on_the_tips_alone(make_repo):
    """Three concurrent tips give one octopus merge, whatever the order they arrive in and
    whichever merge of some of them a clone is on already (no merges of merges)."""
    from autosync.merge import fold
    r = make_repo()
    (r / "base.txt").write_text("base\n")
    base = commit_all(r, "base", 1_700_000_000)
    tips = []
    for i, name in enumerate(("x", "y", "z")):
        git(r, "checkout", "-q", "-b", name, base)
        (r / f"{name}.txt").write_text(f"{name}\n")
        tips.append(commit_all(r, f"autosync: add {name}.txt (host {name})", 1_700_000_100 + i))
    repo = Repo(r)
    octopus, conflicts = fold(repo, tips)
    assert conflicts == [] and fold(repo, tips[::-1])[0] == octopus
    assert git(r, "log", "-1", "--format=%P", octopus).split() == sorted(tips)
    git(r, "checkout", "-q", "x")
    partial = integrate(repo, [tips[1]], Config(repo)).head  # x and y only, so far
    assert partial != octopus and git(r, "rev-parse", "HEAD") == partial
    assert integrate(repo, tips, Config(repo)).head == octopus  # not merge(partial, z)
    assert git(r, "rev-list", "--merges", "--count", "HEAD") == "1"
    assert sorted(p.name for p in r.iterdir() if p.suffix == ".txt") == [
        "base.txt", "x.txt", "y.txt", "z.txt"]
