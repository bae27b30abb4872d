"""`git autosync restore` killed (SIGKILL, GIT_AUTOSYNC_FAULT) at each of its steps, then
recovered by what runs next - another restore, a `sync`, a daemon starting: no temp file is
left in the work tree, the file holds the restored version or the one before (committed),
and no save is lost, including one that landed while restoring. A journal that is garbage
or hostile gets one warning and changes nothing."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import LIBEXEC, git, wait_for
from test_history import run  # `git autosync ...` in the test environment

from autosync import checkout, history, replace, safefs
from autosync.git import Repo
from autosync.util import Error

BIG = "".join(f"line {i} of the first version\n" for i in range(8000)).encode()  # 4 chunks
SECOND = b"the second version\n"
SAVE = b"saved while restoring\n"
KILLED = 137  # git's status when the command it ran died of SIGKILL
STEPS_BEFORE = ["restore-journal", "restore-write:1", "restore-write:3", "restore-written",
                "restore-ready"]  # the path still holds the version before
STEPS_AFTER = ["restore-exchanged", "restore-dropped", "restore-done"]  # the restored one
LEFT = {  # what each kill leaves beside the path: {temp name's start: its size}
    "restore-journal": {}, "restore-write:1": {"restore": 1 << 16},
    "restore-write:3": {"restore": 3 << 16}, "restore-written": {"restore": len(BIG)},
    "restore-ready": {"restored": len(BIG)}, "restore-exchanged": {"restored": len(SECOND)},
    "restore-dropped": {}, "restore-done": {}}


def ok(tenv, *args, cwd, env=None):
    res = run(tenv, *args, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def repo(make_repo, tenv):
    """notes.md committed as BIG (more than one write), then as SECOND."""
    r = make_repo("r")
    for data in (BIG, SECOND):
        (r / "notes.md").write_bytes(data)
        git(r, "add", ".", env=tenv)
        git(r, "commit", "-qm", "notes", env=tenv)
    return r


def killed_restore(tenv, r, fault, *args):
    res = run(tenv, "restore", *args, cwd=r, env=dict(tenv, GIT_AUTOSYNC_FAULT=fault))
    assert res.returncode == KILLED, (res.stdout, res.stderr)
    return res


def temp_files(r):
    return [os.path.join(d, n) for d, dirs, files in os.walk(r)
            for n in files + dirs if ".autosync-restore" in n and ".git" not in d.split("/")]


def journal(r):
    return r / ".git" / "autosync" / replace.JOURNAL


def recover_by(how, tenv, r):
    """What runs next: a sync, another restore, or a daemon starting (then stopping)."""
    if how == "sync":
        ok(tenv, "sync", cwd=r)
    elif how == "restore":
        ok(tenv, "restore", "notes.md", "--at", "HEAD", cwd=r)
    else:
        ok(tenv, "start", cwd=r)
        try:
            wait_for(lambda: not journal(r).exists() and not temp_files(r) and
                     git(r, "status", "--porcelain", env=tenv) == "",
                     timeout=30, what="the daemon's catch-up commit")
        finally:
            ok(tenv, "stop", cwd=r)


def assert_settled(tenv, r):
    assert not temp_files(r), temp_files(r)
    assert not journal(r).exists()
    assert git(r, "status", "--porcelain", env=tenv) == ""  # all of it committed


def all_versions(tenv, r, path="notes.md"):
    """Every version path had in history (bytes)."""
    out = git(r, "log", "--format=%H", "--", path, env=tenv).split()
    return {subprocess.run(["git", "show", f"{c}:{path}"], cwd=r, env=tenv,
                           stdout=subprocess.PIPE).stdout for c in out}


# -- killed at each step ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["sync", "restore"])
@pytest.mark.parametrize("fault", STEPS_BEFORE + STEPS_AFTER)
def test_killed_at_each_step_the_next_command_finishes_it(tenv, repo, fault, how):
    head = git(repo, "rev-parse", "HEAD", env=tenv)
    killed_restore(tenv, repo, fault, "notes.md")
    assert journal(repo).exists() == (fault != "restore-done")
    left = {os.path.basename(p).split(".")[1][len("autosync-"):]: os.path.getsize(p)
            for p in temp_files(repo)}
    assert left == LEFT[fault]
    before = fault in STEPS_BEFORE
    assert (repo / "notes.md").read_bytes() == (SECOND if before else BIG)
    recover_by(how, tenv, repo)
    assert_settled(tenv, repo)
    if how == "sync":
        assert (repo / "notes.md").read_bytes() == (SECOND if before else BIG)
        if before:
            assert git(repo, "rev-parse", "HEAD", env=tenv) == head  # nothing happened
        else:  # the restored version, committed on top
            assert git(repo, "rev-parse", "HEAD^", env=tenv) == head
    else:  # the restore asked again ran as if nothing had happened
        assert (repo / "notes.md").read_bytes() == SECOND
        assert all_versions(tenv, repo) == {BIG, SECOND}


@pytest.mark.parametrize("fault", ["restore-ready", "restore-placed"])
def test_a_deleted_file_killed_while_coming_back(tenv, repo, fault):
    git(repo, "rm", "-q", "notes.md", env=tenv)
    git(repo, "commit", "-qm", "gone", env=tenv)
    killed_restore(tenv, repo, fault, "notes.md")
    ok(tenv, "sync", cwd=repo)
    assert_settled(tenv, repo)
    if fault == "restore-ready":  # not placed yet: still deleted
        assert not (repo / "notes.md").exists()
    else:
        assert (repo / "notes.md").read_bytes() == SECOND


def test_the_daemon_starting_finishes_a_killed_restore(tenv, repo):
    killed_restore(tenv, repo, "restore-exchanged", "notes.md")
    assert journal(repo).exists() and temp_files(repo)
    recover_by("daemon", tenv, repo)
    assert_settled(tenv, repo)
    assert (repo / "notes.md").read_bytes() == BIG


# -- a save landing while restoring, then a kill ---------------------------------------------
SAVE_WHILE_RESTORING = """
import sys
sys.path.insert(0, sys.argv[1])
from autosync import checkout
from autosync.cli import main
from autosync.util import run_main
repo = sys.argv[2]
def save(name, path):
    if name == "restore-ready":  # after every check, just before the swap
        with open(repo + "/notes.md", "wb") as f:  # in place, as editors do
            f.write(%r)
checkout.step_hook = save
run_main(main, ["-C", repo, "restore", "notes.md"])
""" % SAVE


def restore_with_a_save(env, r, fault):
    """`git autosync restore notes.md` (the same front end) with a save landing just
    before the swap, killed at fault."""
    res = subprocess.run([sys.executable, "-c", SAVE_WHILE_RESTORING, str(LIBEXEC), str(r)],
                         env=dict(env, GIT_AUTOSYNC_FAULT=fault), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr


@pytest.mark.parametrize("how", ["sync", "restore", "daemon"])
@pytest.mark.parametrize("fault", ["restore-exchanged", "restore-swapped-back"])
def test_a_save_that_landed_before_the_swap_is_never_lost(tenv, repo, fault, how):
    restore_with_a_save(tenv, repo, fault)
    # exchanged: the save is out under the temp name; swapped-back: it is back already
    assert (repo / "notes.md").read_bytes() == (BIG if fault == "restore-exchanged" else SAVE)
    assert temp_files(repo)
    recover_by(how, tenv, repo)
    assert_settled(tenv, repo)
    assert SAVE in all_versions(tenv, repo), "the save was lost"
    if how != "restore":
        assert (repo / "notes.md").read_bytes() == SAVE  # the save won its path


@pytest.mark.parametrize("fault", ["restore-swapped-back", "restore-dropped"])
def test_a_recovery_killed_too_is_finished_by_the_next(tenv, repo, fault):
    restore_with_a_save(tenv, repo, "restore-exchanged")
    res = run(tenv, "sync", cwd=repo, env=dict(tenv, GIT_AUTOSYNC_FAULT=fault))
    assert res.returncode == KILLED, res.stderr
    assert journal(repo).exists()
    ok(tenv, "sync", cwd=repo)
    assert_settled(tenv, repo)
    assert (repo / "notes.md").read_bytes() == SAVE


def test_a_second_save_after_the_kill_keeps_both(tenv, repo):
    """Killed with the first save out under the temp name; the user saves again before
    anything recovers: the newer save keeps the path, the older one goes beside it."""
    restore_with_a_save(tenv, repo, "restore-exchanged")
    (repo / "notes.md").write_bytes(b"saved again after the crash\n")
    res = ok(tenv, "sync", cwd=repo)
    assert_settled(tenv, repo)
    assert (repo / "notes.md").read_bytes() == b"saved again after the crash\n"
    copies = [p for p in os.listdir(repo) if p.startswith("notes.conflict-")]
    assert [(repo / c).read_bytes() for c in copies] == [SAVE]
    assert "the older one is kept as" in res.stderr


# -- a journal restore did not write -------------------------------------------------------
def hostile(path, temp=".autosync-restore.tmp.7", ready=".autosync-restored.tmp.7",
            head=True):
    oid = "a" * 40
    return json.dumps({"v": 1, "path": path, "temp": temp, "ready": ready, "mode": "100644",
                       "blob": oid, "head": ["100644", oid] if head else None})


JOURNALS = {
    "garbage": "{not json at all",
    "not utf-8": b"\xff\xfe{}",
    "a list": "[1, 2]",
    "dotdot": hostile("../outside/notes.md"),
    "into .git": hostile(".git/notes.md"),
    "into .GIT": hostile(".GIT/notes.md"),
    "absolute": hostile("/tmp/notes.md"),
    "a temp name not ours": hostile("notes.md", temp="notes.md"),
    "a temp name with a slash": hostile("notes.md", ready="../.autosync-restored.tmp.7"),
    "no blob": json.dumps({"v": 1, "path": "notes.md", "temp": ".autosync-restore.tmp.7",
                           "ready": ".autosync-restored.tmp.7", "mode": "100644"}),
    "a lone surrogate": hostile("notes\ud800.md"),
}


@pytest.mark.parametrize("name", sorted(JOURNALS))
def test_a_journal_restore_did_not_write_changes_nothing(tenv, repo, tmp_path, name):
    content = JOURNALS[name]
    (tmp_path / "outside").mkdir()
    planted = {  # what each journal could name, holding nothing restore wrote
        tmp_path / "outside" / ".autosync-restored.tmp.7": b"outside\n",
        repo / ".git" / ".autosync-restored.tmp.7": b"in .git\n",
        repo / ".autosync-restore.tmp.7": b"",  # (empty: a beginning of anything)
        repo / ".autosync-restored.tmp.7": b"a file of the user's\n",
    }
    for p, data in planted.items():
        p.write_bytes(data)
    where = journal(repo)
    where.parent.mkdir(exist_ok=True)
    where.write_bytes(content if isinstance(content, bytes) else
                      content.encode("utf-8", "surrogatepass"))
    head = git(repo, "rev-parse", "HEAD", env=tenv)
    res = ok(tenv, "sync", cwd=repo)
    said = [line for line in res.stderr.splitlines() if "restore journal" in line]
    assert len(said) == 1 and "ignoring" in said[0], res.stderr
    assert "Traceback" not in res.stderr
    for p, data in planted.items():
        assert p.read_bytes() == data, p
    assert (repo / "notes.md").read_bytes() == SECOND
    assert git(repo, "rev-parse", "HEAD", env=tenv) == head
    assert not where.exists() and where.with_name(where.name + ".bad").exists()


def test_a_journal_naming_a_path_beyond_a_symlink_follows_nothing(tenv, repo, tmp_path):
    (tmp_path / "outside").mkdir()
    outside = tmp_path / "outside" / ".autosync-restored.tmp.7"
    outside.write_bytes(SECOND)  # committed content: dropped, were it in the work tree
    os.symlink(tmp_path / "outside", repo / "sub")
    journal(repo).parent.mkdir(exist_ok=True)
    journal(repo).write_text(hostile("sub/notes.md"))
    ok(tenv, "restore", "notes.md", cwd=repo)
    assert outside.read_bytes() == SECOND
    assert not journal(repo).exists()
    assert (repo / "notes.md").read_bytes() == BIG


def test_temp_files_that_are_not_what_restore_wrote_stay(tenv, repo):
    """A sound journal, but under its temp names something restore did not write: left."""
    blob = git(repo, "rev-parse", "HEAD~1:notes.md", env=tenv)
    head = git(repo, "rev-parse", "HEAD:notes.md", env=tenv)
    job = replace.Job("notes.md", ".autosync-restore.tmp.7", ".autosync-restored.tmp.7",
                      "100644", blob, ("100644", head))
    journal(repo).parent.mkdir(exist_ok=True)
    journal(repo).write_text(job.to_json())
    (repo / job.temp).write_bytes(b"not a beginning of it\n")
    (repo / job.ready).mkdir()
    (repo / job.ready / "f").write_bytes(b"x\n")
    res = ok(tenv, "sync", cwd=repo)
    assert (repo / job.temp).read_bytes() == b"not a beginning of it\n"
    assert (repo / job.ready / "f").read_bytes() == b"x\n"
    assert "leaving" in res.stderr and not journal(repo).exists()


# -- in process ----------------------------------------------------------------------------
def test_a_file_an_older_version_left_under_the_temp_name_is_not_deleted(tenv, repo):
    """Before the journal, a restore began by deleting its own pid's temp name - maybe a
    save that landed during an earlier restore with that pid. It is now left alone."""
    left = repo / replace.TEMP.format(os.getpid())
    left.write_bytes(SAVE)
    history.restore(Repo(str(repo), env=tenv), "notes.md")
    assert left.read_bytes() == SAVE
    assert (repo / "notes.md").read_bytes() == BIG
    assert [p for p in os.listdir(repo) if ".autosync-restore" in p] == [left.name]


def test_without_rename_exchange_a_save_during_the_restore_wins(tenv, repo, monkeypatch):
    monkeypatch.setattr(safefs, "_exchange_works", [False])

    def save(name, path):
        if name == "restore-ready":
            (repo / "notes.md").write_bytes(SAVE)
    monkeypatch.setattr(checkout, "step_hook", save)
    with pytest.raises(Error, match="was saved while it was being restored"):
        history.restore(Repo(str(repo), env=tenv), "notes.md")
    monkeypatch.setattr(checkout, "step_hook", None)
    assert (repo / "notes.md").read_bytes() == SAVE
    assert not temp_files(repo) and not journal(repo).exists()
    history.restore(Repo(str(repo), env=tenv), "notes.md")  # the save first, then restored
    assert (repo / "notes.md").read_bytes() == SECOND  # (the version before the save)
    assert all_versions(tenv, repo) == {BIG, SECOND, SAVE}
