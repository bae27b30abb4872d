"""Attack round on issue 14 parts 1 and 2 (shared settings `.autosync`, `git autosync share`,
`git autosync clone`, `git autosync list` / `status --all`): a peer with push access to the
shared repository, and a user with a messy machine.

Each test is one finding and failed while the bug was there. Commands are run the way a
user runs them: through `git autosync` with the installed toolkit on PATH and, where what
the user sees matters, without GIT_AUTOSYNC_DEBUG (which turns an internal error into a
traceback on purpose).
"""

import os
import resource
import signal
import subprocess
import time

import pytest
from cluster import install as install_into
from conftest import git, mount_tmpfs, wait_for

from autosync import config as config_module
from autosync.config import Config
from autosync.git import Repo


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """.autosync warnings are given once per process: each test starts with none given."""
    monkeypatch.setattr(config_module, "_warned_shared", set())


def user_env(env, **more):
    """What a user has: no GIT_AUTOSYNC_DEBUG (a crash must still read as a message)."""
    e = {k: v for k, v in env.items() if k != "GIT_AUTOSYNC_DEBUG"}
    e.update(more)
    return e


def autosync(env, *args, cwd, timeout=120, **kwargs):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, **kwargs)


def commit_file(repo, name, data, env=None):
    path = repo / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    git(repo, "add", name, env=env)
    git(repo, "commit", "-q", "-m", f"add {name}", env=env)


def warnings(text):
    return [line for line in text.splitlines() if line.startswith("warning: .autosync:")]


@pytest.fixture
def said(capsys, caplog):
    """said() -> the .autosync warnings given so far (stderr, or the log)."""
    def lines():
        return warnings(capsys.readouterr().err + "\n" + "\n".join(caplog.messages))
    return lines


# == 1. reading a peer's .autosync ===============================================================
def amplifier():
    """64 KB that `git config --list` turns into 500 MB: a 30,000-character subsection
    name, then 17,000 bare keys, each listed with the whole section name before it."""
    return ("[autosync \"" + "s" * 30000 + "\"]\n" + "x\n" * 17000).encode()


def test_a_small_file_that_git_lists_as_half_a_gigabyte_is_not_read(make_repo, tenv):
    """The size check (64 KiB) is on the file; what git lists from it was read whole: a
    peer's 64 KB file made every `status`, `start`, `list` and `sync` of every clone read
    510 MB from git and hold 1.5 GB (4 s; an OOM kill on a small machine)."""
    r = make_repo()
    commit_file(r, ".autosync", amplifier() + b"[autosync]\n\tdebounce = 300\n", env=tenv)
    assert len((r / ".autosync").read_bytes()) < config_module.SHARED_MAX_BYTES
    limit = 600 * 1024 * 1024  # address space: plenty for status, not for 1.5 GB

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    res = autosync(user_env(tenv), "status", cwd=r, preexec_fn=cap)
    assert res.returncode == 3, res.stderr  # not running; nothing else went wrong
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert warnings(res.stderr) == [
        "warning: .autosync: not read: git lists more than 256 KiB of settings from it"]


def test_a_bare_server_does_not_read_a_huge_file(make_repo, tmp_path, said):
    """A bare repository has no work tree to lstat: HEAD's .autosync was read whole, at
    every push (the post-receive hook and the publisher each build a Config): 74 MB took
    3.3 s and 563 MB per push, 1 GB would be an OOM kill on the server at every push."""
    seed = make_repo("seed")
    padding = "# " + "x" * 1000 + "\n"
    commit_file(seed, ".autosync", "[autosync]\n\tchannel = big\n" + padding * 2000)
    server = tmp_path / "srv.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    assert Config(Repo(server)).channel == "srv"
    assert said() == ["warning: .autosync: not read: it is larger than 64 KiB"]


def test_a_bare_server_does_not_read_a_symbolic_link(make_repo, tmp_path, said):
    """A committed symbolic link .autosync is not read by the clones (README), but the bare
    server read its target text as the file: the server's channel was the link's."""
    seed = make_repo("seed")
    os.symlink("[autosync]\n\tchannel = link\n", seed / ".autosync")
    git(seed, "add", ".autosync")
    git(seed, "commit", "-q", "-m", "a link")
    assert Config(Repo(seed)).channel == "seed"  # a clone: not read
    server = tmp_path / "srv.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    assert Config(Repo(server)).channel == "srv"
    assert said() == ["warning: .autosync: not read: it is not a regular file"]


def test_a_channel_no_notification_can_carry_is_refused(make_repo, said):
    """Notifications name channels of at most 128 characters; the shared file's channel
    was only checked for its characters: a 200-character one was taken by every clone,
    whose transport then refused it, so no clone sent or got a notification again (each
    polled every minute, with a 'not a plain name' warning about the plain name)."""
    r = make_repo()
    commit_file(r, ".autosync", f"[autosync]\n\tchannel = {'a' * 200}\n\tdebounce = 300\n")
    c = Config(Repo(r))
    assert c.channel == "repo" and c["debounce"] == 300
    lines = said()
    assert len(lines) == 1 and lines[0].startswith(
        "warning: .autosync: ignoring autosync.channel: ")


def test_thousands_of_shared_ignore_patterns_are_refused(make_repo, said):
    """Every changed path is matched against every autosync.ignore pattern (twice: the
    watcher, then the commit): 3,000 patterns in a 57 KB file cost 3.5 ms per path, 70 s
    of CPU for a 10,000-file unpack, on every clone."""
    r = make_repo()
    commit_file(r, ".autosync", "[autosync]\n\tdebounce = 300\n"
                + "".join(f"\tignore = p{i}*.x\n" for i in range(3000)))
    c = Config(Repo(r))
    assert c.shared_ignore == [] and c["debounce"] == 300
    lines = said()
    assert len(lines) == 1 and lines[0].startswith(
        "warning: .autosync: ignoring autosync.ignore: 3000 patterns")
    commit_file(r, ".autosync", "[autosync]\n" + "".join(
        f"\tignore = p{i}*.x\n" for i in range(config_module.SHARED_MAX_PATTERNS)))
    assert len(Config(Repo(r)).shared_ignore) == config_module.SHARED_MAX_PATTERNS


# == 2. git autosync clone ========================================================================
def test_the_hint_of_a_failed_clone_never_runs_the_url_as_an_option(tenv, tmp_path,
                                                                    server_and_clones):
    """`git autosync clone -- '--upload-pack=CMD'` failed safely, then said `hint: check the
    URL: git ls-remote '--upload-pack=CMD'`: pasted into a clone (the user checks the URL
    there), that ran CMD."""
    _, clone = server_and_clones
    work = clone("work")
    pwned = tmp_path / "pwned"
    url = f"--upload-pack=touch {pwned};false"
    res = autosync(tenv, "clone", "--", url, "copy", cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    hint = res.stderr.splitlines()[-1]
    assert hint.startswith("hint: check the URL: ")
    command = hint[len("hint: check the URL: "):]
    subprocess.run(["sh", "-c", command], cwd=work, env=tenv, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    assert not pwned.exists()
    assert not (tmp_path / "copy").exists()


def full(directory):
    """Fill the file system holding directory (a small tmpfs) to the last byte."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):  # (ENOSPC ends it: a tmpfs is bounded)
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (root only; skipped elsewhere)."""
    mount = mount_tmpfs(tmp_path / "small", "512k")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_a_clone_that_fills_the_disk_says_so_and_exits_75(tenv, tmp_path, make_repo,
                                                        small_disk):
    """git clone failing with 'No space left on device' was exit 1 ('needs a human') with
    `hint: check the URL`: the URL is fine, and README's exit code for a full disk is 75."""
    seed = make_repo("seed")
    commit_file(seed, "big", os.urandom(1024 * 1024))
    res = autosync(user_env(tenv), "clone", str(seed), str(small_disk / "copy"), cwd=tmp_path)
    assert res.returncode == 75, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"git-autosync: cannot clone '{seed}': ")
    assert "No space left on device" in lines[0]
    assert lines[1:] == ["hint: free some disk space, then run the same command again"]
    assert os.listdir(small_disk) == []


def test_a_full_disk_outside_dir_leaves_no_temporary_file_there(tenv, tmp_path,
                                                               server_and_clones,
                                                               small_disk):
    """The clone is fine, the install fails on a full disk outside DIR: the registry's
    `repositories.json.PID.tmp` (in ~/.local/share) and, with a global core.hooksPath, the
    hook's `post-commit.autosync-tmp` were left there; the latter said `internal error:
    OSError`, the former 'it must be writable by you' (exit 1; a full disk is 75)."""
    server, _ = server_and_clones
    data = small_disk / "data"
    (data / "git-autosync").mkdir(parents=True)
    full(small_disk)
    env = user_env(tenv, XDG_DATA_HOME=str(data))
    res = autosync(env, "clone", str(server), "copy", cwd=tmp_path)
    assert res.returncode == 75, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("git-autosync: cannot record the repository in ")
    assert lines[0].endswith(": no space left on device")
    assert lines[1:] == ["hint: free some disk space, then run the same command again"]
    assert os.listdir(data / "git-autosync") == []
    assert not (tmp_path / "copy").exists()

    os.unlink(small_disk / "filler")
    hooks = small_disk / "hooks"
    hooks.mkdir()
    full(small_disk)
    git(tmp_path, "config", "--global", "core.hooksPath", str(hooks), env=tenv)
    res = autosync(user_env(tenv), "clone", str(server), "copy", cwd=tmp_path)
    assert res.returncode == 75, res.stderr
    assert "internal error" not in res.stderr
    assert res.stderr.startswith(f"git-autosync: cannot write '{hooks / 'post-commit'}': ")
    assert os.listdir(hooks) == []
    assert not (tmp_path / "copy").exists()


def slow_upload(tmp_path, env):
    """Make every file:// fetch wait for tmp_path/go (at most a minute) once it has
    started (tmp_path/started); pack-objects runs through this hook (global config)."""
    hook = tmp_path / "pack-hook"
    hook.write_text(f"#!/bin/sh\ntouch '{tmp_path}/started'\ni=0\n"
                    f"while [ ! -e '{tmp_path}/go' ] && [ $i -lt 1200 ]; do\n"
                    "  sleep 0.05; i=$((i+1))\ndone\nexec \"$@\"\n")
    hook.chmod(0o755)
    git(tmp_path, "config", "--global", "uploadpack.packObjectsHook", str(hook), env=env)


def running_with(text):
    """Whether a process on this machine has text in its command line."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def test_a_clone_killed_with_sigkill_does_not_finish_in_the_background(
        tenv, tmp_path, server_and_clones, toolkit):
    """kill -9 of `git autosync clone` while git clone runs: git clone went on alone and
    left a whole repository in DIR without autosync (its next try: 'already exists')."""
    server, _ = server_and_clones
    slow_upload(tmp_path, tenv)
    target = tmp_path / "copy"
    proc = subprocess.Popen([str(toolkit.bin / "git-autosync"), "clone", f"file://{server}",
                             str(target)], cwd=tmp_path, env=tenv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), what="git clone to fetch")
        proc.kill()
        proc.wait()
    finally:
        (tmp_path / "go").touch()
    wait_for(lambda: not running_with(str(target)), timeout=60, what="git clone to end")
    assert not target.exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_clone_ended_by_a_signal_removes_what_it_made(tenv, tmp_path, server_and_clones,
                                                      toolkit, sig):
    """SIGTERM (`timeout`, systemd, a shutdown) or SIGHUP (the terminal closed) ended
    `git autosync clone` with no clean-up: the directories it made before DIR stayed."""
    server, _ = server_and_clones
    slow_upload(tmp_path, tenv)
    # (a run under nohup, or started with & by a shell, passes SIGHUP or SIGINT on
    # ignored: the clone must meet the signal as a terminal's user would)
    proc = subprocess.Popen([str(toolkit.bin / "git-autosync"), "clone", f"file://{server}",
                             "deep/er/copy"], cwd=tmp_path, env=user_env(tenv),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(getattr(signal, sig),
                                                             signal.SIG_DFL))
    try:
        wait_for(lambda: (tmp_path / "started").exists(), what="git clone to fetch")
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        (tmp_path / "go").touch()
    assert "Traceback" not in err and out == ""
    assert proc.returncode != 0
    wait_for(lambda: not running_with(str(tmp_path / "deep")), timeout=60,
             what="git clone to end")
    assert not (tmp_path / "deep").exists()


def test_a_global_hooks_directory_does_not_make_every_repository_push(tenv, tmp_path,
                                                                      server_and_clones,
                                                                      make_repo):
    """With a global core.hooksPath (pre-commit tooling, git-secrets), clone (as make
    install) puts its post-commit shim there, for every repository of the user: a plain
    commit in any unrelated repository with an origin was then pushed by autosync's push
    helper. The shim only acts where autosync is installed; the user's own global hook,
    chained, still runs everywhere."""
    server, _ = server_and_clones
    work = make_repo("work")  # an unrelated repository, pushing to its own remote
    remote = tmp_path / "work-remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(remote))
    git(work, "remote", "add", "origin", str(remote))
    hooks = tmp_path / "global-hooks"
    hooks.mkdir()
    (hooks / "post-commit").write_text("#!/bin/sh\necho ran >> \"$(git rev-parse "
                                       "--git-dir)/user-hook-ran\"\n")
    (hooks / "post-commit").chmod(0o755)
    git(tmp_path, "config", "--global", "core.hooksPath", str(hooks), env=tenv)
    res = autosync(tenv, "clone", str(server), "copy", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (hooks / "post-commit.pre-autosync").exists()  # chained, as README says

    (work / "private.txt").write_text("not for the remote yet\n")
    git(work, "add", "private.txt", env=tenv)
    git(work, "commit", "-q", "-m", "local only", env=tenv)
    assert (work / ".git" / "user-hook-ran").read_text() == "ran\n"
    assert not (work / ".git" / "autosync").exists()  # no push helper was started
    assert git(remote, "rev-parse", "main") != git(work, "rev-parse", "main")


# == 3. git autosync list / status --all ==========================================================
def bounded(args, env, cwd, timeout):
    """Run args in a session of their own; (returncode or None if still running at the
    deadline, stdout, stderr, seconds taken). Whatever is left at the deadline is ended."""
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return code, out.decode(errors="replace"), err.decode(errors="replace"), \
        time.monotonic() - started


def in_use(path):
    """Whether a process on this machine works in path (its current directory)."""
    for pid in os.listdir("/proc"):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(path):
                return True
        except OSError:
            continue
    return False


def test_list_answers_although_one_repository_never_does(tenv, tmp_path, server_and_clones,
                                                        toolkit):
    """A repository on a network mount that went away blocks every process that touches
    it (here: its config includes a FIFO, so every git in it waits forever): `git autosync
    list` printed nothing at all and never returned, for the 199 other repositories too.
    Now its line says it does not answer, and no git is left waiting in it."""
    _, clone = server_and_clones
    ok, stuck = clone("ok"), clone("stuck")
    for r in (ok, stuck):
        install_into(toolkit, r, tenv)
    fifo = tmp_path / "dead-mount"
    os.mkfifo(fifo)
    with open(stuck / ".git" / "config", "a") as f:
        f.write(f"[include]\n\tpath = {fifo}\n")
    code, out, err, took = bounded([str(toolkit.bin / "git-autosync"), "list"], tenv,
                                   tmp_path, timeout=90)
    assert code == 1, (code, out, err)
    assert took < 45 and "Traceback" not in err
    lines = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    assert lines[str(ok)][0] == "stopped"
    assert lines[str(stuck)][0] == "not responding"
    assert lines[str(stuck)][-1].startswith("no answer within ")
    wait_for(lambda: not in_use(stuck), timeout=30, what="no process left in it")


def test_a_fifo_as_pid_file_hangs_nothing(tenv, tmp_path, server_and_clones, toolkit):
    """Whoever can write .git/autosync (as for state.json, read as hostile) could make
    daemon.pid a FIFO: status, start, stop and list opened it and waited forever."""
    _, clone = server_and_clones
    r = clone("r")
    install_into(toolkit, r, tenv)
    (r / ".git" / "autosync").mkdir(exist_ok=True)
    os.mkfifo(r / ".git" / "autosync" / "daemon.pid")
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "status"], tenv, r,
                                timeout=60)
    assert code == 3, (code, out, err)
    assert out.startswith("git-autosync: not running in ")
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "list"], tenv, tmp_path,
                                timeout=60)
    assert code == 0 and out.split("\t")[1] == "stopped", (code, out, err)


def registry(tenv):
    return os.path.join(tenv["HOME"], ".local", "share", "git-autosync", "repositories.json")


def test_a_registry_that_is_a_fifo_or_huge_is_one_line(tenv, tmp_path, server_and_clones,
                                                      toolkit):
    """The registry was read with open() and json.load: a FIFO in its place hung `list`
    for ever, a 100 MB file took seconds and a GB of memory. A symbolic link to a regular
    file (a dotfiles manager's) is still read."""
    _, clone = server_and_clones
    r = clone("r")
    install_into(toolkit, r, tenv)
    path = registry(tenv)
    kept = tmp_path / "kept.json"
    os.replace(path, kept)
    os.symlink(kept, path)
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "list"], tenv, tmp_path,
                                timeout=60)
    assert code == 0 and out.startswith(f"{r}\tstopped"), (code, out, err)
    os.unlink(path)
    os.mkfifo(path)
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "list"], tenv, tmp_path,
                                timeout=60)
    assert code == 1 and out == "", (code, out, err)
    assert err.splitlines()[0] == (f"git-autosync: cannot read the list of repositories "
                                   f"'{path}': not a regular file")
    os.unlink(path)
    with open(path, "w") as f:
        f.write('{"version": 1, "repositories": [' + " " * (20 << 20) + "]}")
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "list"], tenv, tmp_path,
                                timeout=60)
    assert code == 1 and out == "", (code, out, err)
    assert err.splitlines()[0] == (f"git-autosync: cannot read the list of repositories "
                                   f"'{path}': larger than 16 MiB")


# == 1b. what a peer's .autosync may keep out ====================================================
def test_a_peers_ignore_patterns_never_stop_edits_of_tracked_files(tenv, server_and_clones,
                                                                   toolkit):
    """`ignore = *` in a peer's .autosync: every clone silently stopped committing every
    edit (`sync` said 'up to date', status said nothing), its own work no longer backed up
    or synced. Shared patterns now keep out only files not tracked yet, as a .gitignore
    does (the power a peer has anyway); edits of tracked files are committed."""
    server, clone = server_and_clones
    peer, victim = clone("peer"), clone("victim")
    commit_file(peer, ".autosync", "[autosync]\n\tignore = *\n", env=tenv)
    git(peer, "push", "-q", "origin", "main", env=tenv)
    git(victim, "pull", "-q", env=tenv)
    install_into(toolkit, victim, tenv)
    (victim / "README").write_text("my edit\n")
    (victim / "new.txt").write_text("new, untracked: kept out as a .gitignore would\n")
    res = autosync(tenv, "sync", cwd=victim)
    assert res.returncode == 0, res.stderr
    assert git(victim, "show", "HEAD:README") == "my edit"
    assert git(server, "show", "main:README") == "my edit"
    assert git(victim, "status", "--porcelain") == "?? new.txt"

    autosync(tenv, "start", cwd=victim)  # the daemon's watcher too
    try:
        (victim / "README").write_text("a later edit\n")
        wait_for(lambda: git(server, "show", "main:README") == "a later edit", timeout=30,
                 what="the daemon to commit and push the edit")
    finally:
        autosync(tenv, "stop", cwd=victim)


def test_a_directory_with_a_newline_is_refused_before_cloning(tenv, tmp_path,
                                                              server_and_clones):
    """DIR with a newline: git clone made it, then the repository could not be read back
    (rev-parse's lines split at the newline) and the user read 'git-autosync: git is not
    installed or not on PATH'. Every command in such a directory said the same."""
    server, _ = server_and_clones
    res = autosync(user_env(tenv), "clone", str(server), "new\nline", cwd=tmp_path)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0] == (f"git-autosync: cannot use \"{tmp_path}/new\\nline\": a newline in "
                        "a repository's path is not supported")
    assert lines[1].startswith("hint: git autosync clone ") and len(lines) == 2
    assert not (tmp_path / "new\nline").exists()
    os.mkdir(tmp_path / "new\nline")
    git(tmp_path / "new\nline", "init", "-q")
    res = autosync(user_env(tenv), "status", cwd=tmp_path / "new\nline")
    assert res.returncode == 1 and res.stderr.startswith(
        f"git-autosync: cannot use \"{tmp_path}/new\\nline\": a newline")


def test_a_fifo_as_install_manifest_hangs_nothing(tenv, tmp_path, server_and_clones,
                                                  toolkit):
    """As daemon.pid: install.json is read to tell whether the channel is install's
    default (when .autosync names a channel), and by every install and uninstall: a FIFO
    there hung status, start, sync and list (list: 'not responding' at best)."""
    _, clone = server_and_clones
    r = clone("r")
    install_into(toolkit, r, tenv)
    commit_file(r, ".autosync", "[autosync]\n\tchannel = team\n", env=tenv)
    manifest = r / ".git" / "autosync" / "install.json"
    os.replace(manifest, tmp_path / "install.json")
    os.mkfifo(manifest)
    code, out, err, _ = bounded([str(toolkit.bin / "git-autosync"), "status"], tenv, r,
                                timeout=60)
    assert code == 3, (code, out, err)
    assert "(channel notes)" in out  # (install's default unknown: it counts as chosen here)
    code, out, err, _ = bounded([toolkit.tool("autosync-install"), "install", str(r)], tenv,
                                r, timeout=60)
    assert code == 0, (code, out, err)


def test_a_broker_url_with_control_characters_is_no_url(make_repo, tenv, said):
    """A peer's `url = "mqtt://a<ESC>cb:1883"` (ESC c resets the terminal; or a bidi
    override, a space) passed
    the broker URL check (urlsplit takes any host name): every clone took it, and `git
    autosync share` (the next user to share) wrote its escape sequences to the terminal,
    and shared them on."""
    r = make_repo()
    for host in ("a\x1bcb", "a\u202eb", "a b"):
        config_module._warned_shared.clear()
        commit_file(r, ".autosync", f"[autosync]\n\tdebounce = 300\n[autosync \"mqtt\"]\n"
                                    f"\turl = \"mqtt://{host}:1883\"\n".encode(), env=tenv)
        c = Config(Repo(r))
        assert c["mqtt.url"] == "" and c["debounce"] == 300
        assert said()[-1].startswith(
            "warning: .autosync: ignoring autosync.mqtt.url: bad broker URL 'mqtt://a")
        res = autosync(tenv, "share", "--dry-run", cwd=r)
        assert res.returncode == 0, res.stderr
        assert all(line.replace("\t", " ").isprintable()
                   for line in (res.stdout + res.stderr).splitlines()), \
            res.stdout + res.stderr
