"""Issue 15: a lone save is committed once it is finished, not after the debounce; bursts
stay coalesced. Each editor's save sequence is scripted system call by system call as the
editor makes it (vim's recorded here with strace -f -e trace=file; the others after their
documented save strategies), against a real daemon whose debounce is 30 s: only a save
recognised as finished can be committed within the test's deadline. Each runs with both
watchers (autosync.watcher inotify and poll): polling sees the save's end state (or a step
of it), never its system calls, and must make the same single commit of it."""

import os
import pytest

from cluster import Cluster
from conftest import git, wait_for


def vim_in_place(d, name, text):  # vim (backupcopy=yes, or no backup): write in place
    swap = d / f".{name}.swp"
    swap.write_bytes(b"b0VIM")
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, 0)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.fchmod(fd, 0o644)
    os.close(fd)
    os.chmod(d / name, 0o644)  # (vim's setxattr of the ACL: an ATTRIB after the close)
    swap.unlink()


def vim_rename(d, name, text):  # vim's default where it may: write test, backup by rename
    fd = os.open(d / "4913", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    os.unlink(d / "4913")
    os.rename(d / name, d / f"{name}~")
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.chmod(d / name, 0o644)
    os.unlink(d / f"{name}~")


def vim_backupcopy_yes(d, name, text):  # backupcopy=yes: copy to name~, rewrite in place
    (d / f"{name}~").write_bytes((d / name).read_bytes())
    fd = os.open(d / name, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.unlink(d / f"{name}~")


def emacs(d, name, text):  # lock link .#name, first save backs up by rename, writes anew
    os.symlink("user@host.1234:1700000000", d / f".#{name}")
    os.rename(d / name, d / f"{name}~")
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.unlink(d / f".#{name}")  # (the backup name~ stays, as in emacs)


def nano(d, name, text):  # open O_TRUNC, write, close
    fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.close(fd)


def atomic_rename(d, name, text):  # VS Code with atomic saves, gedit (.goutputstream-*)
    tmp = d / ".goutputstream-ABC123"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, text.encode()[:3])
    os.write(fd, text.encode()[3:])
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, d / name)


def libreoffice(d, name, text):  # lock file, lu*.tmp written, renamed over the document
    lock = d / f".~lock.{name}#"
    lock.write_text(",user,host,26.11.2026 09:00,file:///home/user/.config/libreoffice/4;")
    tmp = d / "lu12345abcd.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.chmod(tmp, 0o644)
    os.rename(tmp, d / name)
    lock.unlink()  # (closing the document)


EDITORS = [vim_in_place, vim_rename, vim_backupcopy_yes, emacs, nano, atomic_rename,
           libreoffice]


def commits(path):
    return int(git(path, "rev-list", "--count", "HEAD"))


@pytest.fixture(params=["inotify", "poll"])
def slow_clone(request, tmp_path, tenv, toolkit):
    """A clone whose daemon has a 30 s debounce (no broker needed), not started yet; with
    each kind of watcher."""
    cl = Cluster(tmp_path, tenv, toolkit, debounce=30000, maxDelay=60000,
                 watcher=request.param)
    yield cl.clone("a", start=False)
    cl.stop()


@pytest.mark.parametrize("save", EDITORS, ids=[e.__name__ for e in EDITORS])
def test_each_editor_save_is_one_commit_of_the_final_content(slow_clone, save):
    a = slow_clone
    name = "doc.odt" if save is libreoffice else "notes.md"
    (a.path / name).write_text("first version\n")
    git(a.path, "add", name, env=a.env)
    git(a.path, "commit", "-qm", "first version", env=a.env)
    a.start()
    before = commits(a.path)
    save(a.path, name, "the final content\nof this save\n")
    wait_for(lambda: commits(a.path) > before
             and git(a.path, "status", "--porcelain", "--", name, env=a.env) == "",
             timeout=10, what=f"{save.__name__}'s save committed without waiting for the "
                              "30 s debounce")
    assert commits(a.path) == before + 1, git(a.path, "log", "--format=%s", "-5")
    assert git(a.path, "show", f"HEAD:{name}") == "the final content\nof this save"
    assert set(git(a.path, "ls-files").splitlines()) == {"README", name}
