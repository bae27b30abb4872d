"""Errors show git's diagnosis in full, on one line, and say whether to retry (issue 13.5).

With real git: a missing identity (git's `git config --global user.email` advice is the
diagnosis), a signed commit whose gpg program fails (whatever git says of it, and how to
see gpg's own reason, which git 2.39 keeps to itself), a remote path or file://
URL that does not exist (needs a human: exit 1, at once), an ssh:// remote on a host that
does not resolve (ssh's reason; retry later: exit 75).
"""

import os
import shutil
import subprocess
import time

import pytest

from autosync.git import MAX_DIAGNOSIS, GitFailed, Repo, diagnosis
from autosync.sync import classify
from autosync.util import HUMAN, RETRY, Retry
from conftest import IDENTITY, git

IDENTITY_ADVICE = """\
Author identity unknown

*** Please tell me who you are.

Run

  git config --global user.email "you@example.com"
  git config --global user.name "Your Name"

to set your account's default identity.
Omit --global to set the identity only in this repository.

fatal: no email was given and auto-detection is disabled
"""


def run(env, *args, cwd):
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)


def says_all_git_said(git_stderr, line):
    """Every line of git's own stderr (but its hints) is in line, in git's order."""
    at = 0
    for raw in git_stderr.splitlines():
        text = " ".join(raw.split()).lstrip("* ").rstrip(".")
        if not text or text.startswith("hint:"):
            continue
        found = line.find(text, at)
        assert found >= 0, f"{text!r} (from git) is not in {line!r}"
        at = found + len(text)


def one_error(stderr):
    """The error line of a failed command (its last `git-autosync:` line; the log lines of
    what it did before come first): one line, then only hints, no traceback."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    at = max((i for i, line in enumerate(lines) if line.startswith("git-autosync: ")),
             default=None)
    assert at is not None, stderr
    assert all(line.startswith("hint: ") for line in lines[at + 1:]), stderr
    return lines[at]


# -- the one-line form ---------------------------------------------------------------------------
def test_diagnosis_keeps_every_line_but_hints():
    said = diagnosis(IDENTITY_ADVICE)
    assert "\n" not in said
    assert 'git config --global user.email "you@example.com"' in said
    assert said.startswith("Author identity unknown; Please tell me who you are; Run: git config")
    assert said.endswith("fatal: no email was given and auto-detection is disabled")
    ssh = ("ssh: Could not resolve hostname nohost.invalid: Name or service not known\n"
           "fatal: Could not read from remote repository.\n\n"
           "Please make sure you have the correct access rights\nand the repository exists.\n")
    assert diagnosis(ssh) == (
        "ssh: Could not resolve hostname nohost.invalid: Name or service not known; "
        "fatal: Could not read from remote repository; Please make sure you have the "
        "correct access rights and the repository exists")
    gpg = ("error: gpg failed to sign the data:\n[GNUPG:] KEY_CONSIDERED X 2\n"
           "gpg: signing failed: No secret key\n[GNUPG:] FAILURE sign 17\n"
           "fatal: failed to write commit object\n")
    assert diagnosis(gpg) == ("error: gpg failed to sign the data: gpg: signing failed: No "
                              "secret key; fatal: failed to write commit object")
    assert diagnosis("error: x\nhint: do this\nhint: and that\n") == "error: x"
    assert diagnosis("") == ""


def test_diagnosis_is_bounded_and_shows_no_control_characters():
    hostile = "remote: " + "\x1b[2J\x07" * 10 + "A" * 100_000 + "\nfatal: the end\n"
    said = diagnosis(hostile)
    assert len(said) <= MAX_DIAGNOSIS + 10
    assert said.endswith("fatal: the end") and said.startswith("remote: ?[2J?")
    assert not any(ord(c) < 0x20 for c in said)


@pytest.mark.parametrize("stderr, retry", [
    ("fatal: '/srv/x.git' does not appear to be a git repository\n"
     "fatal: Could not read from remote repository.\n", False),
    ("remote: Repository not found.\nfatal: repository 'https://h/x.git/' not found\n", False),
    ("fatal: unable to access 'https://h/x.git/': The requested URL returned error: 404\n",
     False),
    ("ssh: connect to host h port 22: Connection refused\n"
     "fatal: Could not read from remote repository.\n", True),
    ("ssh: Could not resolve hostname h: Temporary failure in name resolution\n"
     "fatal: Could not read from remote repository.\n", True),
    ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.\n",
     False),
    ("error: remote unpack failed: unable to create temporary object directory\n", True),
    ("", True),
])
def test_classify_sorts_failures_and_keeps_the_cause(stderr, retry):
    e = classify("fetch from", "origin", stderr)
    assert isinstance(e, Retry) == retry and e.code == (RETRY if retry else HUMAN)
    first = stderr.splitlines()[0] if stderr else "failed"
    assert first.rstrip(".") in e.message and e.message.startswith("cannot fetch from 'origin'")


# -- with real git ---------------------------------------------------------------------------------
@pytest.fixture
def no_identity(tenv, home):
    """HOME without user.email (and no system config): git has no identity to commit with.
    user.useConfigOnly stops git guessing one from the host name, which works on some
    machines and not on others."""
    env = {k: v for k, v in tenv.items() if k not in IDENTITY}
    (home / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    assert "GIT_CONFIG_NOSYSTEM" in env
    return env


def test_missing_identity_shows_the_command_that_sets_it(no_identity, make_repo):
    repo = make_repo("notes")
    (repo / "new.txt").write_text("x\n")
    res = run(no_identity, "git", "autosync", "sync", cwd=repo)
    assert res.returncode == 1, res.stderr
    line = one_error(res.stderr)
    plain = run(no_identity, "git", "commit", "--allow-empty", "-qm", "by hand", cwd=repo)
    assert plain.returncode != 0
    says_all_git_said(plain.stderr, line)
    assert line.startswith(f"git-autosync: cannot commit in '{repo}': Author identity unknown")
    assert 'git config --global user.email "you@example.com"' in line
    assert "no email was given" in line


@pytest.fixture
def failing_gpg(tmp_path):
    script = tmp_path / "fake-gpg"
    script.write_text("#!/bin/sh\ncat >/dev/null\n"
                      "echo 'gpg: signing failed: Inappropriate ioctl for device' >&2\n"
                      "echo '[GNUPG:] FAILURE sign 83918950' >&2\nexit 2\n")
    script.chmod(0o755)
    return script


def test_failed_signature_shows_all_git_says(tenv, make_repo, failing_gpg):
    """git 2.39 keeps gpg's own words to itself ("error: gpg failed to sign the data",
    then "fatal: failed to write commit object"); later versions add them. Whatever git
    says is shown, not only its last line, and the hint says how to see gpg's reason."""
    repo = make_repo("notes")
    git(repo, "config", "commit.gpgSign", "true", env=tenv)
    git(repo, "config", "gpg.program", str(failing_gpg), env=tenv)
    plain = run(tenv, "git", "commit", "--allow-empty", "-qm", "by hand", cwd=repo)
    assert plain.returncode != 0 and "gpg failed to sign the data" in plain.stderr
    (repo / "new.txt").write_text("x\n")
    res = run(tenv, "git", "autosync", "sync", cwd=repo)
    assert res.returncode == 1, res.stderr
    line = one_error(res.stderr)
    says_all_git_said(plain.stderr, line)
    assert "failed to write commit object" in line
    assert "[GNUPG:]" not in line
    assert f"hint: echo test | {failing_gpg} --clearsign" in res.stderr


def test_gitfailed_carries_the_whole_diagnosis(env, make_repo, failing_gpg):
    path = make_repo("notes")
    git(path, "config", "commit.gpgSign", "true", env=env)
    git(path, "config", "gpg.program", str(failing_gpg), env=env)
    with pytest.raises(GitFailed) as caught:
        Repo(str(path)).run("commit", "--allow-empty", "-qm", "signed")
    e = caught.value
    assert e.code == HUMAN and e.message.startswith("'git commit --allow-empty' failed: ")
    says_all_git_said(e.stderr, e.message)
    assert "gpg failed to sign the data" in e.message
    assert "failed to write commit object" in e.message


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_remote_that_does_not_exist_needs_a_human(tenv, toolkit, server_and_clones, tmp_path,
                                                    scheme):
    _, clone = server_and_clones
    repo = clone("c")
    missing = tmp_path / "no-such-dir" / "notes.git"
    git(repo, "config", "remote.origin.url", scheme + str(missing), env=tenv)
    (repo / "new.txt").write_text("x\n")
    started = time.monotonic()
    res = run(tenv, "git", "autosync", "sync", cwd=repo)
    assert res.returncode == 1, res.stderr  # not 75: waiting does not make it appear
    assert time.monotonic() - started < 10, "retried as if it were the network"
    line = one_error(res.stderr)
    plain = run(tenv, "git", "fetch", "origin", cwd=repo)
    says_all_git_said(plain.stderr, line)
    assert f"'{missing}' does not appear to be a git repository" in line
    assert "Could not read from remote repository" in line
    assert "hint: git remote set-url origin URL" in res.stderr
    res = run(tenv, toolkit.tool("autosync-push"), "-C", str(repo), cwd=repo)
    assert res.returncode == 1, res.stderr
    assert "does not appear to be a git repository" in res.stderr


@pytest.mark.skipif(not shutil.which("ssh"), reason="ssh not installed")
def test_an_unresolvable_ssh_host_is_retry_later_with_sshs_reason(tenv, toolkit,
                                                                 server_and_clones):
    _, clone = server_and_clones
    repo = clone("c")
    git(repo, "config", "remote.origin.url", "ssh://autosync-test.invalid/srv/notes.git",
        env=tenv)
    env = dict(tenv, GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=5 "
                                     f"-F {os.devnull}")
    res = run(env, toolkit.tool("autosync-push"), "-C", str(repo), "--attempts", "1",
              cwd=repo)
    assert res.returncode == 75, res.stderr
    assert "Traceback" not in res.stderr
    failure = next(line for line in res.stderr.splitlines()
                   if line.startswith("git-autosync: cannot"))
    says_all_git_said(run(env, "git", "fetch", "origin", cwd=repo).stderr, failure)
    assert "ssh: Could not resolve hostname autosync-test.invalid" in failure
    assert "Could not read from remote repository" in failure
