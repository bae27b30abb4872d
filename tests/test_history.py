"""`git autosync history PATH` and `git autosync restore PATH [--at WHEN|COMMIT]`, against
real repositories: two hosts syncing through a bare server, renames, conflict copies,
deletions; restores by commit, by date, of a deleted file, over a local edit, through
running daemons and a real broker; and what is refused."""

import json
import os
import subprocess

from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import install, wait_converged
from conftest import git, wait_for

from autosync.copies import is_conflict_copy

DAY = "2026-01-0{} {:02d}:00:00 +0000"


def run(tenv, *args, cwd, env=None):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env or tenv,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def ok(tenv, *args, cwd, env=None):
    res = run(tenv, *args, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


def at(tenv, hour, day=1):
    """tenv with author and committer dates fixed (commits an hour apart sort plainly)."""
    date = DAY.format(day, hour)
    return dict(tenv, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)


def history(tenv, path, cwd):
    return json.loads(ok(tenv, "history", "--json", path, cwd=cwd))


def refused(res, text):
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert lines[0].startswith("git-autosync: ") and text in lines[0], res.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), res.stderr
    assert "Traceback" not in res.stderr


def two_hosts(tenv, server_and_clones):
    """alpha and beta clones; notes.md added by alpha, edited by both (one after the
    other), then by both at once (a conflict copy), then renamed to doc.md and edited."""
    _, clone = server_and_clones
    a, b = clone("alpha"), clone("beta")
    (a / "notes.md").write_text("one\n")
    ok(tenv, "sync", cwd=a, env=at(tenv, 1))
    ok(tenv, "sync", cwd=b, env=at(tenv, 1))
    (b / "notes.md").write_text("two, from beta\n")
    ok(tenv, "sync", cwd=b, env=at(tenv, 2))
    ok(tenv, "sync", cwd=a, env=at(tenv, 2))
    (a / "notes.md").write_text("three, alpha\n")
    ok(tenv, "sync", cwd=a, env=at(tenv, 3))
    (b / "notes.md").write_text("three, beta's\n")
    ok(tenv, "sync", cwd=b, env=at(tenv, 4))  # conflict: beta's is newer and stays
    ok(tenv, "sync", cwd=a, env=at(tenv, 4))
    assert (a / "notes.md").read_text() == "three, beta's\n"
    git(a, "mv", "notes.md", "doc.md", env=tenv)
    git(a, "commit", "-qm", "rename by hand", env=at(tenv, 5))
    (a / "doc.md").write_text("four\n")
    ok(tenv, "sync", cwd=a, env=at(tenv, 6))
    ok(tenv, "sync", cwd=b, env=at(tenv, 6))
    return a, b


def test_history_across_two_hosts_a_rename_and_a_conflict_copy(tenv, server_and_clones):
    a, b = two_hosts(tenv, server_and_clones)
    found = history(tenv, "doc.md", b)
    copies = [v for v in found if v["kind"] == "conflict copy"]
    assert len(copies) == 1 and is_conflict_copy(copies[0]["path"])
    assert copies[0]["path"].startswith("notes.conflict-alpha-")  # alpha's version lost
    assert copies[0]["host"] == "alpha" and copies[0]["size"] == len("three, alpha\n")
    assert (b / copies[0]["path"]).read_text() == "three, alpha\n"
    rows = [(v["kind"], v["host"], v["path"], v["size"]) for v in found
            if v["kind"] != "conflict copy"]
    assert rows == [("edited", "alpha", "doc.md", 5),
                    ("renamed", "Test-User", "doc.md", 14),
                    ("edited", "beta", "notes.md", 14),
                    ("edited", "alpha", "notes.md", 13),
                    ("edited", "beta", "notes.md", 15),
                    ("added", "alpha", "notes.md", 4)]
    assert [v["current"] for v in found] == [True] + [False] * (len(found) - 1)
    assert [v["time"] for v in found] == sorted((v["time"] for v in found), reverse=True)
    assert found[0]["date"].startswith("2026-01-01T06:00:00")
    assert found[0]["commit"] == git(b, "rev-parse", "HEAD", env=tenv)
    # the copy row names the commit that made the version it holds
    assert git(b, "show", f"{copies[0]['commit']}:notes.md", env=tenv) == "three, alpha"
    # the text: one line per version, newest first, local time, host, size, short commit
    text = ok(tenv, "history", "doc.md", cwd=b).splitlines()
    assert len(text) == len(found)
    assert text[0].split()[:6] == ["2026-01-01", "06:00:00", "alpha", "5", "B",
                                   found[0]["commit"][:10]]
    assert text[0].endswith("edited, current")
    assert any(line.endswith("renamed from notes.md") for line in text)
    assert any("conflict copy: notes.conflict-alpha-" in line for line in text)
    assert any(line.endswith("added (as notes.md)") for line in text)


def test_history_of_a_deleted_file_says_when_it_was_deleted(tenv, server_and_clones):
    _, clone = server_and_clones
    a = clone("alpha")
    (a / "gone.txt").write_text("here\n")
    ok(tenv, "sync", cwd=a, env=at(tenv, 1))
    os.unlink(a / "gone.txt")
    ok(tenv, "sync", cwd=a, env=at(tenv, 2))
    found = history(tenv, "gone.txt", a)
    assert [(v["kind"], v["size"], v["current"]) for v in found] == [
        ("deleted", None, False), ("added", 5, False)]
    assert found[0]["date"].startswith("2026-01-01T02:00:00")
    text = ok(tenv, "history", "gone.txt", cwd=a).splitlines()
    assert text[0].startswith("2026-01-01 02:00:00  alpha") and text[0].endswith("deleted")


def test_paths_are_relative_to_the_current_directory_and_literal(tenv, tmp_path, env,
                                                                  toolkit, make_repo):
    repo = make_repo("r")
    (repo / "sub").mkdir()
    (repo / "sub" / "a[1].txt").write_text("x\n")
    (repo / "sub" / "a1.txt").write_text("y\n")
    git(repo, "add", ".", env=tenv)
    git(repo, "commit", "-qm", "two", env=tenv)
    found = history(tenv, "a[1].txt", repo / "sub")
    assert [v["path"] for v in found] == ["sub/a[1].txt"]  # not a pattern matching a1.txt
    refused(run(tenv, "history", "a*.txt", cwd=repo / "sub"), "has no history")
    # through the alias install sets (git runs it at the top, GIT_PREFIX says where from)
    install(toolkit, repo, env)
    res = subprocess.run(["git", "autosync", "history", "--json", "a1.txt"], cwd=repo / "sub",
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 0, res.stderr
    assert [v["path"] for v in json.loads(res.stdout)] == ["sub/a1.txt"]
    assert ok(tenv, "-C", "sub", "history", "--json", "a1.txt", cwd=repo)


def test_restore_by_commit_is_a_new_commit(tenv, server_and_clones):
    a, b = two_hosts(tenv, server_and_clones)
    old = next(v for v in history(tenv, "doc.md", b) if v["kind"] == "added")
    head = git(b, "rev-parse", "HEAD", env=tenv)
    out = ok(tenv, "restore", "doc.md", "--at", old["commit"][:12], cwd=b)
    assert f"as of {old['commit'][:10]}" in out and "git autosync sync" in out
    assert (b / "doc.md").read_text() == "one\n"
    assert git(b, "rev-parse", "HEAD^", env=tenv) == head  # on top: nothing rewritten
    assert git(b, "log", "-1", "--format=%s", env=tenv) == \
        f"autosync: restore doc.md as of {old['commit'][:10]} (host beta)"
    assert git(b, "status", "--porcelain", env=tenv) == ""
    found = history(tenv, "doc.md", b)
    assert found[0]["current"] and found[0]["size"] == 4 and found[0]["host"] == "beta"
    # with no --at: the version before the current one
    ok(tenv, "restore", "doc.md", cwd=b)
    assert (b / "doc.md").read_text() == "four\n"
    ok(tenv, "sync", cwd=b)
    ok(tenv, "sync", cwd=a)
    assert (a / "doc.md").read_text() == "four\n"


def test_restore_at_a_date(tenv, server_and_clones):
    _, clone = server_and_clones
    a = clone("alpha")
    for hour, text in ((1, "monday\n"), (2, "tuesday\n"), (3, "wednesday\n")):
        (a / "day.txt").write_text(text)
        ok(tenv, "sync", cwd=a, env=at(tenv, hour))
    out = ok(tenv, "restore", "day.txt", "--at", "2026-01-01 02:30 +0000", cwd=a)
    assert (a / "day.txt").read_text() == "tuesday\n"
    assert "2026-01-01 02:00:00, host alpha" in out
    ok(tenv, "restore", "day.txt", "--at", "2026-01-01T01:15:00Z", cwd=a)
    assert (a / "day.txt").read_text() == "monday\n"
    # a relative date: the two restores were made just now, the rest months ago
    ok(tenv, "restore", "day.txt", "--at", "1 hour ago", cwd=a)
    assert (a / "day.txt").read_text() == "wednesday\n"
    refused(run(tenv, "restore", "day.txt", "--at", "2025-12-31", cwd=a),
            "no commit is older than '2025-12-31'")
    refused(run(tenv, "restore", "day.txt", "--at", "next blursday", cwd=a),
            "is neither a commit nor a date git understands")
    refused(run(tenv, "history", "day.txt", "--json", cwd=a / ".git"), "inside .git")


def test_restore_a_deleted_file_keeps_its_mode(tenv, make_repo):
    repo = make_repo("r")
    (repo / "bin").mkdir()
    (repo / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "bin" / "run.sh", 0o755)
    os.symlink("run.sh", repo / "bin" / "link")
    git(repo, "add", ".", env=tenv)
    git(repo, "commit", "-qm", "tools", env=tenv)
    git(repo, "rm", "-rq", "bin", env=tenv)
    git(repo, "commit", "-qm", "gone", env=tenv)
    assert not (repo / "bin").exists()
    out = ok(tenv, "restore", "bin/run.sh", cwd=repo)
    assert "restored bin/run.sh" in out and "git autosync sync" not in out  # no remote
    assert (repo / "bin" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.stat(repo / "bin" / "run.sh").st_mode & 0o111
    ok(tenv, "restore", "bin/link", cwd=repo)
    assert os.readlink(repo / "bin" / "link") == "run.sh"
    assert git(repo, "ls-tree", "HEAD", "bin/", env=tenv).split()[::4] == ["120000", "100755"]
    assert git(repo, "status", "--porcelain", env=tenv) == ""
    assert [v["kind"] for v in history(tenv, "bin/link", repo)] == ["added", "deleted",
                                                                   "added"]


def test_restore_over_an_uncommitted_edit_keeps_both(tenv, make_repo):
    repo = make_repo("r")
    (repo / "notes.md").write_text("good\n")
    git(repo, "add", ".", env=tenv)
    git(repo, "commit", "-qm", "good", env=tenv)
    (repo / "notes.md").write_text("unsaved work\n")  # not committed: no daemon runs
    out = ok(tenv, "restore", "notes.md", cwd=repo)
    assert "committed the local edit of notes.md first" in out
    assert (repo / "notes.md").read_text() == "good\n"
    assert git(repo, "show", "HEAD^:notes.md", env=tenv) == "unsaved work"
    assert git(repo, "show", "HEAD:notes.md", env=tenv) == "good"
    assert git(repo, "log", "--format=%s", "-2", env=tenv).splitlines()[1].startswith(
        "autosync: edit notes.md")
    ok(tenv, "restore", "notes.md", cwd=repo)  # and the edit back: the version before
    assert (repo / "notes.md").read_text() == "unsaved work\n"
    # an edit autosync never commits (larger than autosync.maxFileSize) is not overwritten
    git(repo, "config", "autosync.maxFileSize", "8", env=tenv)
    (repo / "notes.md").write_text("a long unsaved edit\n")
    res = run(tenv, "restore", "notes.md", cwd=repo)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "larger than autosync.maxFileSize" in res.stderr
    assert "git-autosync: 'notes.md' holds changes autosync does not commit" in res.stderr
    assert (repo / "notes.md").read_text() == "a long unsaved edit\n"


def test_refusals_are_one_line(tenv, make_repo, tmp_path):
    repo = make_repo("r")
    (repo / "dir").mkdir()
    (repo / "dir" / "f").write_text("x\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("outside\n")
    os.symlink(tmp_path / "elsewhere", repo / "link")
    git(repo, "add", ".", env=tenv)
    git(repo, "commit", "-qm", "x", env=tenv)
    head = git(repo, "rev-parse", "HEAD", env=tenv)
    for command in (["history"], ["restore"], ["restore", "--at", "HEAD"]):
        refused(run(tenv, *command, "../elsewhere/f", cwd=repo), "is outside the work tree")
        refused(run(tenv, *command, str(tmp_path / "elsewhere" / "f"), cwd=repo),
                "is outside the work tree")
        refused(run(tenv, *command, ".git/config", cwd=repo), "is inside .git")
        refused(run(tenv, *command, ".GIT/HEAD", cwd=repo), "is inside .git")
        refused(run(tenv, *command, "dir", cwd=repo), "is a directory")
        refused(run(tenv, *command, ".", cwd=repo / "dir"), "is a directory")
        refused(run(tenv, *command, "link/f", cwd=repo), "is beyond a symbolic link")
        refused(run(tenv, *command, "nothing-here", cwd=repo), "has no history")
    refused(run(tenv, "restore", "dir/f", "--at", "no-such-branch~3", cwd=repo),
            "'no-such-branch~3' names no commit here")
    refused(run(tenv, "restore", "dir/f", "--at", "deadbeef12", cwd=repo), "names no commit")
    refused(run(tenv, "restore", "dir/f", "--at", "garbage", cwd=repo),
            "'garbage' is neither a commit nor a date git understands")
    refused(run(tenv, "restore", "dir/f", "--at", "", cwd=repo), "neither a commit nor a date")
    refused(run(tenv, "restore", "dir/f", cwd=repo), "has no earlier version")
    refused(run(tenv, "restore", "dir/f", "--at", "HEAD~1", cwd=repo), "did not exist as of")
    assert (tmp_path / "elsewhere" / "f").read_text() == "outside\n"
    assert git(repo, "rev-parse", "HEAD", env=tenv) == head
    # a symbolic link put where a directory of the path was, after the fact
    git(repo, "rm", "-rq", "dir", env=tenv)
    git(repo, "commit", "-qm", "no dir", env=tenv)
    os.symlink(tmp_path / "elsewhere", repo / "dir")
    refused(run(tenv, "restore", "dir/f", cwd=repo), "is beyond a symbolic link")
    assert (tmp_path / "elsewhere" / "f").read_text() == "outside\n"


def test_restore_reaches_another_clone_through_running_daemons(cluster):  # noqa: F811
    a, b = cluster.clone("a"), cluster.clone("b")
    a.write("plan.md", "first plan\n")
    wait_for(lambda: b.read("plan.md") == "first plan\n", timeout=30, what="the first plan")
    a.write("plan.md", "second plan\n")
    wait_for(lambda: b.read("plan.md") == "second plan\n", timeout=30, what="the second")
    wait_converged([a, b], cluster.server)
    res = a.autosync("restore", "plan.md")
    assert "the daemon (pid" in res.stdout and "pushes it" in res.stdout
    assert a.read("plan.md") == "first plan\n"
    wait_for(lambda: b.read("plan.md") == "first plan\n", timeout=30,
             what="the restored version on the other clone")
    wait_converged([a, b], cluster.server)
    found = json.loads(b.autosync("history", "--json", "plan.md").stdout)
    assert [v["host"] for v in found[:3]] == ["a", "a", "a"] and found[0]["current"]
    assert git(b.path, "log", "-1", "--format=%s", "--no-merges", env=b.env).startswith(
        "autosync: restore plan.md as of ")


def test_help_names_both_commands(tenv, tmp_path):
    assert "history" in ok(tenv, "-h", cwd=tmp_path) and "restore" in ok(tenv, "-h",
                                                                        cwd=tmp_path)
    for command in ("history", "restore"):
        assert f"git autosync {command}" in ok(tenv, command, "-h", cwd=tmp_path)


def test_a_save_landing_while_restoring_wins_and_nothing_is_restored(tenv, make_repo,
                                                                      monkeypatch):
    """restore commits a local edit, then writes the old version beside the file and swaps
    it in: a save landing between the two (an editor's autosave) must come out of the swap
    as not HEAD's version and go back - never overwritten, never lost."""
    import pytest

    from autosync import history, safefs
    from autosync.git import Repo
    from autosync.util import Error
    repo = make_repo("r")
    for text in ("first\n", "second\n"):
        (repo / "notes.md").write_text(text)
        git(repo, "add", ".", env=tenv)
        git(repo, "commit", "-qm", text.strip(), env=tenv)
    head = git(repo, "rev-parse", "HEAD", env=tenv)
    real = safefs.exchange

    def save_first(*args):
        monkeypatch.setattr(safefs, "exchange", real)  # (the swap back is real)
        (repo / "notes.md").write_text("saved meanwhile\n")  # in place, as editors do
        return real(*args)

    monkeypatch.setattr(safefs, "exchange", save_first)
    with pytest.raises(Error, match="was saved while it was being restored"):
        history.restore(Repo(str(repo), env=tenv), "notes.md")
    assert (repo / "notes.md").read_text() == "saved meanwhile\n"
    assert git(repo, "rev-parse", "HEAD", env=tenv) == head  # nothing committed
    assert sorted(os.listdir(repo)) == [".git", "README", "notes.md"]  # no temp file left
    ok(tenv, "restore", "notes.md", "--at", head, cwd=repo)  # again: the save first
    assert git(repo, "show", "HEAD^:notes.md", env=tenv) == "saved meanwhile"
    assert (repo / "notes.md").read_text() == "second\n"
