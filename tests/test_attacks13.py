"""Attack round on issue 13 ("A newcomer's first hour"): an unlucky newcomer or a hostile
environment against systemd set-up, error messages and exit codes, misconfiguration
warnings, status push data, the install registry and the demo.

Each test is one finding and fails while the bug is there. Commands are run the way a user
runs them: through `git autosync` with the installed toolkit on PATH and, where what the user
sees matters, without GIT_AUTOSYNC_DEBUG (which turns an internal error into a traceback on
purpose).
"""

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import unicodedata

import pytest
from conftest import ROOT, git, wait_for
from servers import marked

from autosync.systemd import escape_path


# -- helpers -----------------------------------------------------------------------------------
def user_env(env, **more):
    """What a user has: no GIT_AUTOSYNC_DEBUG (a crash must still read as a message)."""
    e = {k: v for k, v in env.items() if k != "GIT_AUTOSYNC_DEBUG"}
    e.update(more)
    return e


def autosync(env, *args, cwd, timeout=120):
    return subprocess.run(["git", "autosync", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def bounded(args, env, cwd, timeout):
    """Run args in a session of their own; (returncode or None if still running at the
    deadline, stdout, stderr). Whatever is left at the deadline is ended (our own group)."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out.decode(errors="replace"), err.decode(errors="replace")


def no_manager_env(tenv, home):
    """No systemd user manager reachable (a container, an ssh session without one)."""
    return dict(tenv, DBUS_SESSION_BUS_ADDRESS="", XDG_RUNTIME_DIR=str(home / "no-runtime"))


def unit_dir(home):
    return home / ".config" / "systemd" / "user"


def enabled_links(home):
    found = []
    for dirpath, _, names in os.walk(unit_dir(home)):
        if dirpath.endswith((".wants", ".requires")):
            found += [os.path.join(dirpath, n) for n in names]
    return found


def controls(text):
    """The control characters (Unicode category Cc: C0, DEL and C1) in text, but newline."""
    return sorted({c for c in text if unicodedata.category(c) == "Cc" and c != "\n"})


def make_install(prefix, env):
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout


# == systemd enable | disable ==================================================================
def test_readme_disable_finds_the_unit_enabled_through_a_symlinked_path(toolkit, tenv,
                                                                        make_repo, tmp_path,
                                                                        home):
    """~/notes is a symbolic link (or /home is one, as on Fedora Silverblue: /var/home).
    `make install-systemd REPO=~/notes` runs `git-autosync -C ~/notes systemd enable`, which
    names the unit after the link; the README's cleanup step `git -C ~/notes autosync systemd
    disable` runs in the physical directory (git chdir()s there) and finds nothing: the
    unit stays enabled and starts at every login."""
    env = no_manager_env(tenv, home)
    real = make_repo("real-notes")
    link = tmp_path / "notes"
    link.symlink_to(real)
    res = subprocess.run([str(toolkit.bin / "git-autosync"), "-C", str(link), "systemd",
                          "enable"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert enabled_links(home)
    res = subprocess.run(["git", "-C", str(link), "autosync", "systemd", "disable"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert enabled_links(home) == [], (res.stdout, enabled_links(home))


def test_disable_works_for_a_directory_that_is_no_longer_a_repository(tenv, make_repo,
                                                                      tmp_path, home):
    """The user stops using git there (rm -rf .git, the files stay) and then cleans up, as
    the README says `-C DIR` does for "a repository, even one deleted already": disable
    refuses with 'not a git repository' (and advises `git init`), the unit stays enabled."""
    env = no_manager_env(tenv, home)
    repo = make_repo("notes")
    assert autosync(env, "systemd", "enable", cwd=repo).returncode == 0
    assert enabled_links(home)
    shutil.rmtree(repo / ".git")
    res = autosync(env, "systemd", "disable", "-C", str(repo), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert enabled_links(home) == []


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_installed_under_a_prefix_with_a_space_can_run(env, tmp_path):
    """The Makefile quotes PREFIX everywhere, but writes it into ExecStart= unquoted:
    systemd splits `/.../my tools/bin/git-autosync` at the space."""
    prefix = tmp_path / "my tools"
    make_install(prefix, env)
    units = prefix / "share" / "git-autosync" / "systemd"
    check = tmp_path / "check"
    check.mkdir()
    for name in ("git-autosync@.service", "git-autosync-sync@.service"):
        shutil.copy(units / name, check / name.replace("@.", "@home-u-notes."))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no",
                          *sorted(str(p) for p in check.iterdir())],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert res.returncode == 0 and "not executable" not in res.stdout, res.stdout


def test_enable_keeps_a_users_edit_of_the_unit_file(tenv, make_repo, home):
    """A user adds what their set-up needs to the unit (the ssh agent for an ssh remote),
    keeping the marker line. Enabling a second repository silently puts the original back
    ('wrote ...'): the first repository's daemon loses its ssh agent at the next login."""
    env = no_manager_env(tenv, home)
    a, b = make_repo("a"), make_repo("b")
    assert autosync(env, "systemd", "enable", cwd=a).returncode == 0
    unit = unit_dir(home) / "git-autosync@.service"
    mine = "Environment=SSH_AUTH_SOCK=%t/ssh-agent.socket"
    unit.write_text(unit.read_text().replace("[Service]\n", f"[Service]\n{mine}\n"))
    res = autosync(env, "systemd", "enable", cwd=b)
    assert res.returncode == 0, res.stderr
    assert mine in unit.read_text(), res.stdout


def test_toolkit_removal_leaves_no_enabled_unit_running_the_removed_toolkit(env, make_repo,
                                                                            tmp_path, home):
    """`git autosync systemd enable` works in any repository once git-autosync is on PATH
    (no `make install REPO=` needed), so the repository is not in the install registry.
    `make uninstall` then removes the toolkit and leaves the unit enabled, its ExecStart=
    naming a program that is gone: it fails at every login."""
    prefix = tmp_path / "prefix"
    make_install(prefix, env)
    e = dict(env, PATH=f"{prefix / 'bin'}{os.pathsep}{env['PATH']}",
             DBUS_SESSION_BUS_ADDRESS="", XDG_RUNTIME_DIR=str(home / "no-runtime"))
    repo = make_repo("notes")
    assert autosync(e, "systemd", "enable", cwd=repo).returncode == 0
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "uninstall", f"PREFIX={prefix}"],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120)
    if res.returncode != 0:  # refusing is fine, if it names the unit and removes nothing
        assert (prefix / "bin" / "git-autosync").exists() and "git-autosync@" in res.stdout, \
            res.stdout
        return
    left = [p for p in enabled_links(home) if str(prefix) in open(p).read()]
    assert left == [], (res.stdout, left)


def test_make_install_systemd_takes_a_repository_with_an_apostrophe(toolkit, env, make_repo,
                                                                    home):
    """`make install-systemd REPO="$HOME/Bob's notes"`: the Makefile puts REPO inside
    single quotes, and the shell stops at the apostrophe (Syntax error: Unterminated quoted
    string); so do `make install REPO=` and `make uninstall REPO=`."""
    repo = make_repo("Bob's notes")
    e = dict(env, DBUS_SESSION_BUS_ADDRESS="", XDG_RUNTIME_DIR=str(home / "no-runtime"))
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install-systemd",
                          f"PREFIX={toolkit.prefix}", f"REPO={repo}"], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert enabled_links(home)


def test_hints_are_commands_that_run_for_a_path_with_an_apostrophe(tenv, make_repo):
    """Hints are "the exact command that fixes it", but they quote paths as '{path}': for
    "Bob's notes" `git -C '/.../Bob's notes' autosync stop` is not a shell command."""
    repo = make_repo("Bob's notes")
    env = user_env(tenv)
    assert autosync(env, "start", cwd=repo).returncode == 0
    try:
        res = autosync(env, "start", cwd=repo)
        assert res.returncode == 1
        hint = next(line for line in res.stderr.splitlines() if line.startswith("hint: "))
        try:
            words = shlex.split(hint[len("hint: "):])
        except ValueError as e:
            raise AssertionError(f"not a shell command: {hint!r} ({e})") from None
        assert words == ["git", "-C", str(repo), "autosync", "stop"], hint
    finally:
        autosync(env, "stop", cwd=repo)


def test_a_relative_xdg_config_home_does_not_put_units_into_the_repository(tenv, make_repo,
                                                                          home):
    """XDG_CONFIG_HOME=.config (relative: the XDG spec says to ignore it, as systemd does).
    unit_dir() uses it as it is, relative to the current directory - the top of the work
    tree, where git runs git-autosync: the unit files and the .wants/ link are written into
    the repository, and the daemon commits and syncs them to every clone."""
    env = dict(no_manager_env(tenv, home), XDG_CONFIG_HOME=".config")
    repo = make_repo("notes")
    res = autosync(env, "systemd", "enable", cwd=repo)
    assert not (repo / ".config").exists(), res.stdout
    assert git(repo, "status", "--porcelain") == ""


def test_instance_name_fallback_takes_a_path_that_is_not_utf8():
    """Without systemd-escape (it is optional) the Python fallback escapes the path; a
    directory named in Latin-1 (b'caf\\xe9') raises UnicodeEncodeError: enable and disable
    end in 'internal error'. systemd-escape --path gives tmp-caf\\xe9\\x20notes."""
    path = os.fsdecode(b"/tmp/caf\xe9 notes")
    try:
        name = escape_path(path)
    except UnicodeError as e:
        raise AssertionError(f"escape_path({path!r}) failed: {e!r}") from None
    assert name == "tmp-caf\\xe9\\x20notes"


# == error messages and exit codes =============================================================
def test_a_hostile_servers_c1_control_characters_never_reach_the_terminal(tenv,
                                                                          server_and_clones):
    """diagnosis() turns C0 controls and DEL into '?', but not the C1 controls (U+0080 to
    U+009F): a pre-receive hook printing U+009B (CSI, in UTF-8 \\xc2\\x9b) gets an escape
    sequence through to the user's terminal (xterm and others act on C1 in UTF-8)."""
    server, clone = server_and_clones
    hook = server / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n"
                    "printf 'rejected \\302\\2332J\\302\\23331mRED \\302\\235 0;title\\302\\234"
                    " \\033[2J\\n' >&2\nexit 1\n")
    hook.chmod(0o755)
    work = clone("work")
    (work / "notes.md").write_text("hello\n")
    res = autosync(user_env(tenv), "sync", cwd=work)
    assert res.returncode == 1, res.stderr
    assert "rejected" in res.stderr
    assert controls(res.stderr) == [], [hex(ord(c)) for c in controls(res.stderr)]


def test_status_never_prints_a_peers_file_name_raw(tenv, server_and_clones):
    """Someone with push access commits a file whose name holds terminal escape sequences
    and has the shape of a conflict copy; after a sync, `git autosync status` prints it raw
    ('conflict copy: ESC]0;...'): it retitles, clears or reprograms the user's terminal.
    (git itself quotes such names: core.quotePath.) The same holds for `sync`'s
    'conflict:' lines and the Refused messages that name a path of a peer's tree."""
    server, clone = server_and_clones
    peer, victim = clone("peer"), clone("victim")
    name = "\x1b]0;owned\x07\x1b[2Jnotes.conflict-laptop-20250101-000000.md"
    (peer / name).write_text("x\n")
    git(peer, "add", "-A")
    git(peer, "commit", "-q", "-m", "a file")
    git(peer, "push", "-q", "origin", "main")
    env = user_env(tenv)
    res = autosync(env, "sync", cwd=victim)
    assert res.returncode == 0, res.stderr
    assert (victim / name).exists()
    res = autosync(env, "status", cwd=victim)
    assert "conflict copy" in res.stdout
    assert controls(res.stdout + res.stderr) == [], res.stdout


def test_a_changed_ssh_host_key_needs_a_human(tenv, make_repo, tmp_path):
    """ssh refuses a host whose key changed ('REMOTE HOST IDENTIFICATION HAS CHANGED! ...
    Host key verification failed.'): nothing changes until a human checks the key (or it
    is an attack). classify() sees git's 'Could not read from remote repository' and says
    retry later (75): sync retries for 15 s, the systemd unit restarts for ever."""
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\ncat >&2 <<'EOF'\n"
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
                    "Host key for example.invalid has changed and you have requested strict "
                    "checking.\nHost key verification failed.\nEOF\nexit 255\n")
    fake.chmod(0o755)
    repo = make_repo("notes")
    git(repo, "remote", "add", "origin", "ssh://git@example.invalid/srv/notes.git")
    git(repo, "config", "core.sshCommand", str(fake))
    res = autosync(user_env(tenv), "sync", cwd=repo)
    assert "Host key verification failed" in res.stderr
    assert res.returncode == 1, res.stderr


def test_sync_clears_a_stale_index_lock(tenv, make_repo):
    """A git that crashed left .git/index.lock. autosync removes a lock no git process uses
    (after 2 s), but `git autosync sync` finds one that does: the `git` that runs
    git-autosync as its subcommand, waiting in the repository. So the documented command
    waits 30 s, exits 75 and blames "another git process", every time; `git-autosync sync`
    (no git in front) removes the same lock at once."""
    repo = make_repo("notes")
    (repo / ".git" / "index.lock").write_bytes(b"")
    (repo / "README").write_text("changed\n")
    code, out, err = bounded(["git", "autosync", "sync"], user_env(tenv), repo, timeout=15)
    assert code == 0, (code, err)
    assert git(repo, "status", "--porcelain") == ""


def test_no_traceback_on_the_terminal_when_sync_fails_inside(tenv, make_repo):
    """run_main prints a traceback through log.exception() whenever logging is set up,
    to keep it "only in the log"; but `sync` (and the push helper, and `run` in a terminal)
    log to stderr: a file in the way of .git/autosync gives the user a full traceback."""
    repo = make_repo("notes")
    (repo / ".git" / "autosync").write_text("in the way\n")
    (repo / "README").write_text("changed\n")
    res = autosync(user_env(tenv), "sync", cwd=repo)
    assert "Traceback" not in res.stderr, res.stderr


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MiB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stdout}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def fill(directory):
    with open(os.path.join(directory, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    # what is left in the last partial page
    try:
        with open(os.path.join(directory, "filler2"), "wb") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass


def test_the_daemon_on_a_full_disk_waits_or_says_retry_later(tenv, full_disk, tmp_path):
    """README: a full disk is 75, retry later ('autosync retries by itself once there is
    space', status says). The daemon cannot write its pid file, dies of OSError: 'internal
    error', exit 1 - and the systemd unit has RestartPreventExitStatus=1: once the disk has
    space again, nothing starts it. `start` says 'the daemon did not start (exit 1): no log'."""
    repo = full_disk / "notes"
    git(full_disk, "init", "-q", "-b", "main", str(repo))
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "init")
    (repo / "README").write_text("an edit made before the disk filled up\n")
    fill(full_disk)
    env = user_env(tenv)
    code, out, err = bounded(["git", "autosync", "run"], env, repo, timeout=8)
    try:
        if code is None:
            return  # still running: it waits for space (and says so in status) - fine
        assert code == 75 and "internal error" not in err, (code, err)
    finally:
        for name in ("filler", "filler2"):
            (full_disk / name).unlink(missing_ok=True)
        autosync(env, "stop", cwd=repo, timeout=60)


# == misconfiguration warnings =================================================================
@pytest.mark.parametrize("url", [
    "mqtt//laptop:s3cretpw@broker.example.org:1883",  # the issue's own typo, with credentials
    "mqtt://laptop:s3cret/pw@broker.example.org:1883",  # a password with a slash
    "laptop:s3cretpw@broker.example.org:1883",  # no scheme at all
])
def test_a_broker_password_in_the_url_is_never_echoed(tenv, make_repo, url):
    """parse_url masks '://user:PASSWORD@' only when the URL has '://' and the password has
    no '/' or '@': otherwise start, the log and status print the password."""
    repo = make_repo("notes")
    git(repo, "config", "autosync.mqtt.url", url)
    res = autosync(user_env(tenv), "status", cwd=repo)
    assert "bad broker URL" in res.stdout, res.stdout
    assert "s3cret" not in res.stdout + res.stderr, res.stdout


def test_a_remote_without_a_url_gets_a_warning_that_makes_sense(tenv, make_repo):
    """`git remote add origin "$URL"` with URL unset: git makes remote 'origin' with an
    empty URL. status says: autosync.remote is 'origin', but there is no remote of that
    name (there is 'origin') - hint: git config autosync.remote origin (changes nothing)."""
    repo = make_repo("notes")
    git(repo, "remote", "add", "origin", "")
    res = autosync(user_env(tenv), "status", cwd=repo)
    assert "warning" in res.stdout, res.stdout
    assert "there is 'origin'" not in res.stdout, res.stdout
    assert "git config autosync.remote origin" not in res.stdout, res.stdout


# == status push data ==========================================================================
def test_status_survives_a_state_file_with_wrong_types(tenv, make_repo):
    """State.read() takes any JSON value for a key; status then computes with it:
    {"last_pull": "yesterday"} -> internal error: TypeError, exit 1 (not 3)."""
    repo = make_repo("notes")
    state = repo / ".git" / "autosync"
    state.mkdir()
    (state / "state.json").write_text('{"last_pull": "yesterday"}\n')
    res = autosync(user_env(tenv), "status", cwd=repo)
    assert "internal error" not in res.stderr, res.stderr
    assert res.returncode == 3, res.stderr


@pytest.mark.parametrize("name", ["last-push.json", "state.json"])
def test_status_does_not_hang_on_a_fifo(tenv, make_repo, name):
    """last() refuses symbolic links and big files but opens a FIFO without O_NONBLOCK (and
    State.read opens state.json plainly): status blocks for ever, waiting for a writer."""
    repo = make_repo("notes")
    state = repo / ".git" / "autosync"
    state.mkdir()
    os.mkfifo(state / name)
    code, out, err = bounded(["git", "autosync", "status"], user_env(tenv), repo, timeout=10)
    assert code == 3, (code, out, err)


def race_two_pushers(env, server_and_clones, tmp_path):
    """One clone, two pushers: `git autosync sync` pushes X and its push returns late (the
    server's post-receive hook is slow); meanwhile Y (on top of X) is committed and a second
    `git autosync sync` pushes it. Returns (work, x, y, status --json) once both are done;
    the remote has Y."""
    server, clone = server_and_clones
    work = clone("work")
    gate, entered, release = tmp_path / "gate", tmp_path / "entered", tmp_path / "release"
    hook = server / "hooks" / "post-receive"
    hook.write_text(f"""#!/bin/sh
if [ -e '{gate}' ]; then
    rm -f '{gate}'; : > '{entered}'; i=0
    while [ ! -e '{release}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
fi
exit 0
""")
    hook.chmod(0o755)
    (work / "x.md").write_text("x\n")
    git(work, "add", "x.md")
    git(work, "commit", "-q", "-m", "x")
    x = git(work, "rev-parse", "HEAD")
    gate.touch()
    slow = subprocess.Popen(["git", "autosync", "sync"], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: entered.exists() or slow.poll() is not None, timeout=60,
                 what="the first push to reach the server's hook")
        assert entered.exists(), slow.communicate()
        (work / "y.md").write_text("y\n")
        git(work, "add", "y.md")
        git(work, "commit", "-q", "-m", "y")
        y = git(work, "rev-parse", "HEAD")
        res = autosync(env, "sync", cwd=work)
        assert res.returncode == 0, res.stderr
    finally:
        release.touch()
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, (out, err)
    assert git(server, "rev-parse", "main") == y
    assert git(server, "for-each-ref", "--format=%(objectname)", "refs/autosync/") == y
    return work, x, y, json.loads(autosync(env, "status", "--json", cwd=work).stdout)


def test_last_push_shown_is_the_newest_when_two_pushers_race(tenv, server_and_clones,
                                                            tmp_path):
    """pushlog.record() takes an flock but never looks at what is recorded: the last
    writer wins. The push of X that returns late records X after Y was pushed and recorded:
    status shows X as the last push although the remote has Y (issue 13.3's symptom)."""
    work, x, y, info = race_two_pushers(user_env(tenv), server_and_clones, tmp_path)
    assert info["last_push"]["commit"] == y, (f"status shows {info['last_push']['commit'][:10]}"
                                              f" (x={x[:10]}); the remote has y={y[:10]}")


def test_unpushed_is_zero_when_two_pushers_race(tenv, server_and_clones, tmp_path):
    """The same race, in the local copies of the remote's refs: after its late push the
    slow pusher runs `update-ref` with no old value, moving refs/remotes/origin/main and this
    clone's refs/autosync/remotes/... back from Y to X. status says 'unpushed: 1' while the
    remote has every commit (until the next fetch)."""
    work, x, y, info = race_two_pushers(user_env(tenv), server_and_clones, tmp_path)
    assert git(work, "rev-parse", "refs/remotes/origin/main") == y
    assert info["unpushed"] == 0, info


# == the install registry ======================================================================
def test_a_garbage_registry_does_not_break_install(toolkit, tenv, make_repo, tmp_path):
    """repositories.json whose "repositories" is not a list (a hand edit, another tool):
    entries() iterates it - 'internal error: TypeError: int object is not iterable' from
    `make install REPO=`, `autosync-install list` and `make uninstall` (which then cannot
    remove the toolkit at all)."""
    data = tmp_path / "data"
    (data / "git-autosync").mkdir(parents=True)
    (data / "git-autosync" / "repositories.json").write_text(
        '{"version": 1, "repositories": 5}\n')
    env = user_env(tenv, XDG_DATA_HOME=str(data))
    repo = make_repo("notes")
    res = subprocess.run([toolkit.tool("autosync-install"), "install", str(repo)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert "internal error" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr


# == make demo =================================================================================
def test_an_interrupted_demo_leaves_nothing_running(env, tmp_path):
    """The newcomer presses Ctrl-C while `make demo` is still showing edits: its daemons and
    broker (own sessions, so the terminal's SIGINT does not reach them) were started, but
    the timer that stops them, and the halt/stop scripts, come only at the very end. They
    run for ever, with no script to stop them."""
    mark = secrets.token_hex(6)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    e = dict(env, TMPDIR=str(tmp), DEMO_MINUTES="0.05", ATTACK13_DEMO=mark)

    def left():
        return marked(mark, var="ATTACK13_DEMO")

    proc = subprocess.Popen([sys.executable, str(ROOT / "share" / "demo.py")], env=e,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("4. editing" in line for line in lines) or proc.poll() is not None,
                 timeout=150, what="the demo to start its daemons")
        assert proc.poll() is None, "".join(lines)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
        proc.wait(timeout=60)
        try:
            wait_for(lambda: not left(), timeout=30,
                     what="the interrupted demo's daemons and broker to stop")
        except AssertionError:
            running = []
            for pid in left():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        running.append(f.read().replace(b"\0", b" ").decode()[:120])
                except OSError:
                    pass
            raise AssertionError(f"still running 30 s after Ctrl-C: {running}\n"
                                 + "".join(lines)) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # what it left: we started it
            for pid in left():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while left() and time.monotonic() < deadline:
                time.sleep(0.05)
