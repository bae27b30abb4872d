"""Attack round on the last hour's changes: a copy of a clone draws a name of its own
(930991b, clone-id with the clone's place), a push that moved B but lost this clone's ref
(35af989), merges held for a lone new file (77ced99, 25d7047) and the polling watcher
imported only where it polls (5c874a9) - as an unlucky user or a hostile peer would.

Each test is one finding and failed while the bug was there.
"""

import os
import shutil
import subprocess
import sys

from autosync import message
from autosync.git import Repo
from conftest import LIBEXEC

DIGEST = ("import sys; from autosync.git import Repo; from autosync.message import "
          "repo_digest; print(repo_digest(Repo(sys.argv[1])))")


def digest_in_a_process(repo, env):
    return subprocess.run([sys.executable, "-c", DIGEST, str(repo)], check=True,
                          env=dict(env, PYTHONPATH=str(LIBEXEC)), stdout=subprocess.PIPE,
                          text=True, timeout=60).stdout.strip()


# -- a state directory whose path is not UTF-8, or holds a newline ---------------------------
# .git/autosync is a symbolic link to a directory named in Latin-1 (or holding a newline):
# clone-id was written in text mode with the path in it, and a path that is not UTF-8 made
# the write raise UnicodeEncodeError - not an OSError: it went out of repo_digest, and every
# command (start, sync, the push helper) died of a traceback. A path with a newline was
# written without its place: every process rewrote the file, and a copy kept the name.
# What must hold: the clone has a name, kept, the file written once, with its place.
def test_a_state_dir_path_of_any_bytes_names_the_clone_once(make_repo, tmp_path, env):
    for i, odd in enumerate((b"state\xff\xfe", b"state\nnewline")):
        r = make_repo(f"r{i}")
        target = os.path.join(os.fsencode(tmp_path), odd)
        os.mkdir(target)
        os.symlink(target, os.fsencode(r / ".git" / "autosync"))
        name = digest_in_a_process(r, env)
        assert len(name) == 8, name
        idfile = r / ".git" / "autosync" / "clone-id"
        written = os.stat(idfile).st_ino
        assert digest_in_a_process(r, env) == name
        assert os.stat(idfile).st_ino == written, "clone-id rewritten by the next process"
        assert len(idfile.read_bytes().split(b"\n")) == 4, idfile.read_bytes()


# -- two processes find a fresh copy at once -------------------------------------------------
# The copy is started (git autosync start) while a sync runs in it: each read the copied
# clone-id, drew a random name and renamed it over the file. One that read the file back
# before the other's rename went by a name the file no longer says: the daemon pushed to a
# ref and sent as a sender that every later command (and its next start) knew nothing of.
# Here the interleaving is made certain: a process reads the copied file, another names
# the copy meanwhile. What must hold: both go by the name the file says.
def test_two_processes_naming_a_copy_at_once_take_one_name(make_repo, tmp_path, env,
                                                            monkeypatch):
    orig = make_repo("orig")
    name = message.repo_digest(Repo(orig))
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy, symlinks=True)
    read = message._read_id
    other = []

    def read_then_another_process_names_it(path):
        found = read(path)
        if not other:  # (the first read only: the copied file)
            other.append(digest_in_a_process(copy, env))
        return found
    monkeypatch.setattr(message, "_read_id", read_then_another_process_names_it)
    mine = message.repo_digest(Repo(copy))
    monkeypatch.setattr(message, "_read_id", read)
    said = message.repo_digest(Repo(copy))
    assert mine != name and other[0] != name
    assert mine == other[0] == said, (mine, other, said)
