"""`git autosync list` (= `status --all`): every repository install recorded on this machine,
one line each, against real repositories installed with the real installer and real daemons.
"""

import json
import os
import pty
import shutil
import socket
import subprocess
import time

import pytest

from cluster import Cluster, install
from conftest import git, wait_for


def autosync(tenv, *args, cwd=None, timeout=60):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=tenv,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def listed(tenv, cwd, *extra):
    """(exit status, {path: entry}) of `git autosync list --json`."""
    res = autosync(tenv, "list", "--json", *extra, cwd=cwd)
    assert "Traceback" not in res.stderr, res.stderr
    entries = json.loads(res.stdout)
    assert isinstance(entries, list)
    return res.returncode, {e["path"]: e for e in entries}


def registry_file(tenv):
    return os.path.join(tenv["HOME"], ".local", "share", "git-autosync", "repositories.json")


@pytest.fixture
def cluster(tmp_path, tenv, toolkit):
    c = Cluster(tmp_path, tenv, toolkit)
    try:
        yield c
    finally:  # (the ones a test moved away or deleted run no daemon)
        c.clones = [x for x in c.clones if (x.path / ".git").is_dir()]
        c.stop()


def test_running_and_stopped_clones_and_the_server(cluster, tenv, tmp_path):
    a = cluster.clone("a")  # started
    b = cluster.clone("b", start=False)
    (b.path / "draft.txt").write_text("not committed yet\n")
    (b.path / "more.txt").write_text("neither\n")
    a.write("from-a.txt", "saved on a\n")
    # the daemon commits and pushes the save: its line says so, with nothing pending
    code, found = wait_for(
        lambda: (r := listed(tenv, tmp_path)) and r[1][str(a.path)]["last_sync"]
        and r[1][str(a.path)]["pending"] == 0 and r[1][str(a.path)]["unpushed"] == 0
        and cluster.server_head() == a.head() and r,
        timeout=30, what="a's save to be pushed")
    assert code == 0
    assert set(found) == {str(a.path), str(b.path), str(cluster.server)}
    ea, eb, es = found[str(a.path)], found[str(b.path)], found[str(cluster.server)]
    assert ea["state"] == "running" and ea["running"] is True and ea["pid"] == a.pid
    assert ea["conflict_copies"] == [] and ea["warning"] is None and not ea["attention"]
    assert abs(ea["last_sync"] - time.time()) < 60
    assert eb["state"] == "stopped" and eb["running"] is False and eb["pid"] is None
    assert eb["pending"] == 2 and eb["unpushed"] == 0 and not eb["attention"]
    assert es["state"] == "bare" and es["pending"] is None and not es["attention"]
    assert ea["watcher"].startswith("inotify") and eb["watcher"] is es["watcher"] is None
    for e in found.values():
        assert set(e) == {"path", "state", "running", "toolkit", "pid", "last_sync",
                          "pending", "unpushed", "conflict_copies", "warning", "hint",
                          "attention", "watcher"}
        assert e["toolkit"] == str(cluster.toolkit.libexec)

    # for scripts (not a terminal): one tab-separated line per repository, by path
    res = autosync(tenv, "list", cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    lines = res.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == sorted(found)
    line_a = next(line for line in lines if line.startswith(f"{a.path}\t")).split("\t")
    assert line_a[1] == f"running (pid {a.pid})"
    assert line_a[2].startswith("synced ") and line_a[2].endswith(" ago")
    assert line_a[3:6] == ["0 pending", "0 unpushed", "0 conflict copies"]
    line_b = next(line for line in lines if line.startswith(f"{b.path}\t")).split("\t")
    assert line_b[1:] == ["stopped", "never synced", "2 pending", "0 unpushed",
                          "0 conflict copies"]

    # status --all is the same command, in any directory (a repository's -C is not needed)
    res_all = autosync(tenv, "status", "--all", "--json", cwd=b.path)
    def steady(entries):  # (the daemon may pull again in between: its time moves)
        return [dict(e, last_sync=None) for e in entries]
    assert res_all.returncode == 0
    assert steady(json.loads(res_all.stdout)) == steady(found.values())
    res_all = autosync(tenv, "status", "--all", cwd=tmp_path)
    again = autosync(tenv, "list", cwd=tmp_path)
    assert res_all.returncode == 0
    assert [line.split("\t")[:2] + line.split("\t")[3:] for line in res_all.stdout.splitlines()] \
        == [line.split("\t")[:2] + line.split("\t")[3:] for line in again.stdout.splitlines()]

    # a warning status would show first is on the line, and is no reason to fail
    git(b.path, "remote", "remove", "origin", env=tenv)
    code, found = listed(tenv, tmp_path)
    assert code == 0
    assert found[str(b.path)]["warning"].startswith("no remote 'origin': nothing is pushed")
    assert found[str(b.path)]["hint"].startswith("git remote add origin URL")
    assert found[str(b.path)]["unpushed"] is None
    status = autosync(tenv, "status", cwd=b.path).stdout
    assert f"warning:       {found[str(b.path)]['warning']}" in status


def test_a_terminal_gets_aligned_columns(cluster, tenv, tmp_path):
    cluster.clone("first-clone", start=False)
    cluster.clone("b", start=False)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(["git", "autosync", "list"], cwd=tmp_path, env=tenv,
                                stdin=subprocess.DEVNULL, stdout=terminal,
                                stderr=subprocess.PIPE)
        os.close(terminal)
        out = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        proc.stderr.close()
    finally:
        os.close(controller)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert len(lines) == 3 and "\t" not in out.decode()
    starts = {line.index("stopped") if "stopped" in line else line.index("bare")
              for line in lines}
    assert len(starts) == 1  # the second column starts at one place on every line
    assert len({line.index(" pending") for line in lines if " pending" in line}) == 1


def test_moved_deleted_and_hand_uninstalled_repositories(cluster, tenv, tmp_path):
    ok = cluster.clone("ok", start=False)
    gone = cluster.clone("gone", start=False)
    moved = cluster.clone("moved", start=False)
    plain = cluster.clone("plain", start=False)
    hand = cluster.clone("hand", start=False)
    shutil.rmtree(gone.path)
    os.rename(moved.path, tmp_path / "elsewhere")
    shutil.rmtree(plain.path / ".git")  # a directory still, no repository any more
    hand.start()
    (hand.path / ".git" / "hooks" / "post-commit").unlink()  # uninstalled by hand
    res = autosync(tenv, "list", cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr and res.stderr == ""
    assert len(res.stdout.splitlines()) == 6  # one line each, the server's too
    code, found = listed(tenv, tmp_path)
    assert code == 1
    assert str(tmp_path / "elsewhere") not in found  # (nothing installed it there)
    states = {p: (e["state"], e["attention"]) for p, e in found.items()}
    assert states == {str(ok.path): ("stopped", False), str(cluster.server): ("bare", False),
                      str(gone.path): ("missing", True), str(moved.path): ("missing", True),
                      str(plain.path): ("not a git repository", True),
                      str(hand.path): ("not installed", True)}
    tool = str(cluster.toolkit.libexec / "autosync-install")
    for e in (found[str(gone.path)], found[str(plain.path)]):
        assert e["warning"] and e["hint"].startswith(f"{tool} uninstall {e['path']}")
        assert e["running"] is False and e["pending"] is None
    assert found[str(hand.path)]["hint"].startswith(f"{tool} install {hand.path}")
    assert found[str(hand.path)]["warning"].endswith(f"its daemon still runs, pid {hand.pid})")
    hand.stop()
    lines = {line.split("\t")[0]: line.split("\t") for line in res.stdout.splitlines()}
    assert lines[str(gone.path)][1:3] == ["missing", "-"]
    assert lines[str(plain.path)][1] == "not a git repository"
    assert lines[str(hand.path)][1] == "not installed"

    # the hints work: the missing ones forgotten, the moved one installed where it is now,
    # the hand-uninstalled one installed again; then all is well
    for path in (gone.path, moved.path, plain.path):
        res = subprocess.run([tool, "uninstall", str(path)], env=tenv, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert res.returncode == 0 and "forgot" in res.stdout, res.stderr
    install(cluster.toolkit, tmp_path / "elsewhere", tenv)
    install(cluster.toolkit, hand.path, tenv)
    code, found = listed(tenv, tmp_path)
    assert code == 0
    assert sorted(found) == sorted([str(ok.path), str(cluster.server), str(hand.path),
                                    str(tmp_path / "elsewhere")])
    assert {e["state"] for e in found.values()} == {"stopped", "bare"}
    # forgetting a directory that was never listed is still an error
    res = subprocess.run([tool, "uninstall", str(tmp_path / "never")], env=tenv, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 1 and res.stderr.startswith("git-autosync: cannot use")


def test_conflict_copies_and_unpushed_commits_need_attention(cluster, tenv, tmp_path):
    c = cluster.clone("c", start=False)
    c.config(push="false")  # the hook's push helper pushes nothing
    copy = "notes.conflict-laptop-20261125-101010-1a2b3c.md"
    (c.path / copy).write_text("the other version\n")
    (c.path / "notes.md").write_text("this version\n")
    git(c.path, "add", ".", env=tenv)
    git(c.path, "commit", "-qm", "both versions", env=tenv)
    (c.path / "notes.md").write_text("edited again\n")
    git(c.path, "commit", "-qam", "again", env=tenv)
    code, found = listed(tenv, tmp_path)
    assert code == 1
    e = found[str(c.path)]
    assert e["conflict_copies"] == [copy] and e["unpushed"] == 2 and e["attention"]
    assert e["state"] == "stopped" and e["pending"] == 0
    line = next(line for line in autosync(tenv, "list", cwd=tmp_path).stdout.splitlines()
                if line.startswith(f"{c.path}\t")).split("\t")
    assert line[3:6] == ["0 pending", "2 unpushed", "1 conflict copy"]
    res = autosync(tenv, "status", "--all", "--json", cwd=tmp_path)
    assert res.returncode == 1 and json.loads(res.stdout) == sorted(
        found.values(), key=lambda e: e["path"])
    # status says the same of the one repository
    status = autosync(tenv, "status", cwd=c.path).stdout
    assert f"conflict copy: {copy}" in status and "unpushed:      2 commits" in status
    # once the copy is gone and the commits are pushed, all is well again
    git(c.path, "rm", "-q", copy, env=tenv)
    git(c.path, "commit", "-qm", "merged by hand", env=tenv)
    git(c.path, "push", "-q", "origin", "main", env=tenv)
    code, found = listed(tenv, tmp_path)
    assert code == 0 and found[str(c.path)]["unpushed"] == 0
    assert found[str(c.path)]["conflict_copies"] == []


def test_a_dead_server_does_not_slow_it_down(cluster, tenv, tmp_path):
    """No network: a remote that accepts connections and never answers changes nothing."""
    c = cluster.clone("c", start=False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        git(c.path, "remote", "set-url", "origin", f"http://127.0.0.1:{port}/notes.git",
            env=tenv)
        started = time.monotonic()
        code, found = listed(tenv, tmp_path)
        assert time.monotonic() - started < 20
    assert code == 0 and found[str(c.path)]["state"] == "stopped"
    assert found[str(c.path)]["unpushed"] == 0


def test_nothing_installed(tenv, tmp_path):
    res = autosync(tenv, "list", cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    res = autosync(tenv, "list", "--json", cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout) == []


def test_an_unreadable_registry_is_one_line_with_a_hint(cluster, tenv, tmp_path):
    path = registry_file(tenv)
    assert os.path.exists(path)
    with open(path, "w") as f:
        f.write('{"version": 1, "repositories": ')  # cut short
    for args in (["list"], ["list", "--json"], ["status", "--all"]):
        res = autosync(tenv, *args, cwd=tmp_path)
        assert res.returncode == 1 and res.stdout == ""
        lines = res.stderr.splitlines()
        assert lines[0] == f"git-autosync: '{path}' is not a list of repositories", lines
        assert len(lines) == 2 and lines[1].startswith(f"hint: mv {path} {path}.bad")
    if os.geteuid() != 0:  # (root reads it anyway)
        os.chmod(path, 0)
        try:
            res = autosync(tenv, "list", cwd=tmp_path)
        finally:
            os.chmod(path, 0o644)
        assert res.returncode == 1 and res.stderr.startswith(
            f"git-autosync: cannot read the list of repositories '{path}': permission denied")
        assert res.stderr.splitlines()[1].startswith("hint: ls -l ")


def test_list_and_status_all_help(tenv, tmp_path):
    res = autosync(tenv, "list", "-h", cwd=tmp_path)
    assert res.returncode == 0 and "git autosync list" in res.stdout
    res = autosync(tenv, "-h", cwd=tmp_path)
    assert "list" in res.stdout and "status --all" in res.stdout
    assert "--all" in autosync(tenv, "status", "-h", cwd=tmp_path).stdout
