"""The commit helper against real repositories: exact staging, odd names, locks, refusals."""

import os
import subprocess
import sys
import threading

import pytest

from conftest import git, wait_for
from autosync import commit as commit_mod
from autosync.commit import commit_changes
from autosync.config import Config
from autosync.git import Repo
from autosync.util import Error, Retry


def do_commit(path, paths=None):
    repo = Repo(path)
    return commit_changes(repo, Config(repo), paths)


def tree(path, rev="HEAD"):
    """{path: mode} of a commit, names decoded as git stores them."""
    out = git(path, "ls-tree", "-r", "-z", rev)
    result = {}
    for item in out.split("\0"):
        if item:
            meta, _, name = item.partition("\t")
            result[name] = meta.split()[0]
    return result


def test_one_edit_commits_exactly_that_path_with_a_summary(make_repo):
    r = make_repo()
    git(r, "config", "autosync.host", "laptop")
    (r / "README").write_text("changed\n")
    (r / "other").write_text("not named in the batch\n")
    res = do_commit(r, ["README"])
    assert res.commit == git(r, "rev-parse", "HEAD")
    assert git(r, "log", "-1", "--format=%s") == "autosync: edit README (host laptop)"
    assert "other" not in tree(r)  # only the named path was staged
    assert git(r, "status", "--porcelain") == "?? other"


def test_summary_counts_and_template(make_repo):
    r = make_repo()
    git(r, "config", "autosync.host", "desk")
    git(r, "config", "autosync.commitMessage", "sync %(count) files from %(host): %(summary)")
    for n in ("a", "b"):
        (r / n).write_text(n)
    (r / "README").write_text("x\n")
    do_commit(r)
    assert git(r, "log", "-1", "--format=%s") == "sync 3 files from desk: edit README, add 2 files"
    os.remove(r / "a")
    os.rename(r / "b", r / "c")
    do_commit(r)
    assert git(r, "log", "-1", "--format=%s") == "sync 2 files from desk: delete a, rename b to c"


def git_calls(monkeypatch):
    """The git subcommands the commit path runs, as a list filled while it runs."""
    calls = []
    run = Repo.run

    def recording(self, *args, **kw):
        calls.append(next(a for a in args if not a.startswith("-") and "=" not in a))
        return run(self, *args, **kw)
    monkeypatch.setattr(Repo, "run", recording)
    return calls


def test_an_edit_is_worded_from_what_status_said(make_repo, monkeypatch):
    r = make_repo()
    git(r, "config", "autosync.host", "desk")
    (r / "first.md").write_text("first\n")
    do_commit(r, ["first.md"])  # a save before: the index is as this commit left it
    (r / "README").write_text("changed\n")
    calls = git_calls(monkeypatch)
    do_commit(r, ["README"])
    assert git(r, "log", "-1", "--format=%s") == "autosync: edit README (host desk)"
    assert calls.count("diff") == 0 and calls.count("status") == 1, calls
    (r / "README").unlink()
    (r / "new.md").write_text("new\n")
    calls.clear()
    do_commit(r, ["README", "new.md"])  # adds and deletes: git is asked for renames
    assert git(r, "log", "-1", "--format=%s") == \
        "autosync: add new.md, delete README (host desk)", calls
    assert calls.count("diff") == 1


def test_a_change_staged_then_undone_by_hand_makes_no_commit(make_repo):
    r = make_repo()
    head = git(r, "rev-parse", "HEAD")
    (r / "x.md").write_text("x\n")
    git(r, "add", "x.md")  # staged by hand, then removed
    (r / "x.md").unlink()
    assert do_commit(r, ["x.md"]).commit is None
    assert git(r, "rev-parse", "HEAD") == head


def test_nothing_changed_makes_no_commit(make_repo):
    r = make_repo()
    head = git(r, "rev-parse", "HEAD")
    (r / "README").write_text("hello\n")  # same content
    (r / "empty-dir").mkdir()  # git does not track empty directories
    assert do_commit(r, ["README", "empty-dir"]).commit is None
    assert do_commit(r).commit is None
    assert git(r, "rev-parse", "HEAD") == head


@pytest.mark.parametrize("name", ["with space.txt", "new\nline.txt", "ünïcödé-日本.md",
                                  "-leading-dash", "--output=x", "tab\there", "*star?",
                                  "a/b/c/deep.txt", ":(glob)magic"])
def test_odd_file_names(make_repo, name):
    r = make_repo()
    p = r / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"content\n")
    do_commit(r, [name])
    assert name in tree(r)
    p.unlink()
    do_commit(r, [name])
    assert name not in tree(r)


def test_invalid_utf8_name(make_repo):
    r = make_repo()
    raw = b"caf\xe9.txt"
    with open(os.path.join(os.fsencode(r), raw), "wb") as f:
        f.write(b"x")
    do_commit(r, [os.fsdecode(raw)])
    names = subprocess.run(["git", "ls-tree", "-z", "--name-only", "HEAD"], cwd=r,
                           stdout=subprocess.PIPE).stdout.split(b"\0")
    assert raw in names


def test_symlinks_are_committed_as_symlinks(make_repo, tmp_path):
    r = make_repo()
    os.symlink("README", r / "link")
    os.symlink(str(tmp_path), r / "outside")  # a directory outside the tree: not followed
    do_commit(r)
    t = tree(r)
    assert t["link"] == "120000" and t["outside"] == "120000"
    assert git(r, "cat-file", "-p", "HEAD:outside") == str(tmp_path)


def test_executable_bit_is_committed(make_repo):
    r = make_repo()
    os.chmod(r / "README", 0o755)
    do_commit(r, ["README"])
    assert tree(r)["README"] == "100755"


def test_temp_files_and_extra_patterns_are_never_committed(make_repo):
    r = make_repo()
    git(r, "config", "--add", "autosync.ignore", "*.bak")
    names = [".notes.md.swp", "4913", "notes.md~", "#notes.md#", ".#notes.md",
             ".~lock.report.odt#", "x.bak", "real.md"]
    for n in names:
        (r / n).write_text("x")
    do_commit(r, names)
    assert set(tree(r)) == {"README", "real.md"}
    do_commit(r)  # the whole-tree path filters the same way
    assert set(tree(r)) == {"README", "real.md"}


def test_gitignored_paths_are_not_committed_even_when_named(make_repo):
    r = make_repo()
    (r / ".gitignore").write_text("*.log\nbuild/\n")
    (r / "build").mkdir()
    (r / "build" / "out.o").write_text("x")
    (r / "a.log").write_text("x")
    do_commit(r, [".gitignore", "a.log", "build/out.o", "build"])
    assert set(tree(r)) == {"README", ".gitignore"}


def test_nested_repository_is_left_alone(make_repo):
    r = make_repo()
    inner = r / "vendor" / "lib"
    inner.mkdir(parents=True)
    git(inner, "init", "-q")
    (inner / "f").write_text("x")
    (r / "top.txt").write_text("y")
    res = do_commit(r)
    assert res.nested == ["vendor/lib"]
    t = tree(r)
    assert "top.txt" in t and not any(k.startswith("vendor") for k in t)
    assert "160000" not in t.values()  # never a (broken) gitlink
    res = do_commit(r, ["vendor/lib/f", "vendor/lib"])
    assert not any(k.startswith("vendor") for k in tree(r))


def test_files_above_max_size_are_skipped_with_a_warning(make_repo, capsys):
    r = make_repo()
    git(r, "config", "autosync.maxFileSize", "1k")
    (r / "big.bin").write_bytes(b"x" * 2048)
    (r / "small.txt").write_text("ok")
    res = do_commit(r)
    assert res.skipped_large == ["big.bin"]
    assert set(tree(r)) == {"README", "small.txt"}
    err = capsys.readouterr().err
    assert "warning: not committing 'big.bin'" in err and "autosync.maxFileSize" in err


@pytest.mark.parametrize("marker,op", [("MERGE_HEAD", "merge"), ("rebase-merge", "rebase"),
                                       ("CHERRY_PICK_HEAD", "cherry-pick"), ("BISECT_LOG", "bisect")])
def test_refuses_while_the_user_is_in_the_middle_of_something(make_repo, marker, op):
    r = make_repo()
    target = r / ".git" / marker
    if marker == "rebase-merge":
        target.mkdir()
    else:
        target.write_text(git(r, "rev-parse", "HEAD") + "\n")
    (r / "README").write_text("changed\n")
    head = git(r, "rev-parse", "HEAD")
    with pytest.raises(Error) as e:
        do_commit(r)
    assert f"in the middle of a {op} started by hand" in e.value.message
    assert git(r, "rev-parse", "HEAD") == head
    assert git(r, "diff", "--cached", "--name-only") == ""  # nothing staged either


def test_refuses_to_commit_unmerged_entries(make_repo):
    r = make_repo()
    git(r, "checkout", "-q", "-b", "side")
    (r / "README").write_text("side\n")
    git(r, "commit", "-qam", "side")
    git(r, "checkout", "-q", "main")
    (r / "README").write_text("main\n")
    git(r, "commit", "-qam", "main")
    git(r, "stash", "list")
    git(r, "cherry-pick", "side", check=False)
    os.remove(r / ".git" / "CHERRY_PICK_HEAD")  # unmerged entries without an operation marker
    with pytest.raises(Error) as e:
        do_commit(r, ["README"])
    assert "unresolved merge conflicts" in e.value.message
    assert "<<<<<<<" not in git(r, "show", "HEAD:README")


def test_stale_index_lock_is_removed(make_repo, monkeypatch):
    r = make_repo()
    monkeypatch.setattr(commit_mod, "STALE_LOCK_SECONDS", 0.2)
    (r / ".git" / "index.lock").write_text("")
    (r / "README").write_text("changed\n")
    assert do_commit(r, ["README"]).commit
    assert not (r / ".git" / "index.lock").exists()


def test_index_lock_held_by_a_git_process_is_waited_for(make_repo, monkeypatch, tmp_path):
    r = make_repo()
    monkeypatch.setattr(commit_mod, "STALE_LOCK_SECONDS", 0.2)
    release = tmp_path / "release"
    editor = tmp_path / "editor.py"
    # an editor that keeps `git commit` (and so index.lock) busy until told to finish
    editor.write_text(
        "import os, sys, time\n"
        f"deadline = time.time() + 60\n"
        f"while not os.path.exists({str(release)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "open(sys.argv[1], 'w').write('user commit\\n')\n")
    (r / "user.txt").write_text("u")
    git(r, "add", "user.txt")  # `commit -a` holds index.lock while the editor runs
    user = subprocess.Popen(["git", "commit", "-q", "-a"], cwd=r,
                            env=dict(os.environ, GIT_EDITOR=f"{sys.executable} {editor}"))
    try:
        wait_for(lambda: (r / ".git" / "index.lock").exists(), what="git commit to take the lock")
        (r / "README").write_text("changed\n")
        done = threading.Event()
        result = {}

        def run():
            result["r"] = do_commit(r, ["README"])
            done.set()
        t = threading.Thread(target=run)
        t.start()
        assert not done.wait(1.0)  # waiting, well past the stale threshold
        assert (r / ".git" / "index.lock").exists()
        release.write_text("go")
        assert user.wait(timeout=30) == 0
        t.join(timeout=30)
        assert result["r"].commit
        assert git(r, "log", "-2", "--format=%s").splitlines()[1] == "user commit"
    finally:
        release.write_text("go")
        user.wait(timeout=30)


def test_index_lock_wait_is_bounded(make_repo, monkeypatch):
    r = make_repo()
    monkeypatch.setattr(commit_mod, "git_running_in", lambda repo: True)
    (r / ".git" / "index.lock").write_text("")
    (r / "README").write_text("changed\n")
    repo = Repo(r)
    monkeypatch.setattr(commit_mod, "LOCK_WAIT_SECONDS", 0.3)
    with pytest.raises(Retry):
        commit_mod.wait_for_index_lock(repo, timeout=0.3)


def test_many_paths_use_one_whole_tree_status(make_repo):
    r = make_repo()
    names = [f"d{i % 10}/f{i}" for i in range(commit_mod.MAX_PATHSPECS + 50)]
    for n in names:
        (r / n).parent.mkdir(exist_ok=True)
        (r / n).write_text(n)
    (r / "unnamed").write_text("also picked up by the whole-tree status")
    do_commit(r, names)
    assert set(names) <= set(tree(r))


def test_cli_commit_prints_the_commit(make_repo, env):
    r = make_repo()
    (r / "a b").write_text("x")
    res = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..",
                                                       "libexec", "autosync-commit"),
                          "-C", str(r), "a b"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "autosync: add a b" in res.stdout
    bad = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..",
                                                       "libexec", "autosync-commit"),
                          "-C", str(r.parent / "nope")], stderr=subprocess.PIPE, text=True,
                         env=env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("git-autosync: cannot use ") and "Traceback" not in bad.stderr
