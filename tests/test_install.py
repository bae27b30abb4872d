"""make install / uninstall into repositories: shims, chaining, defaults, idempotence, refusals."""

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, git, wait_for

FOREIGN = "#!/bin/sh\necho \"$@\" >> \"$(git rev-parse --absolute-git-dir)/foreign-ran\"\n"


def install(toolkit, env, repo, action="install", check=True):
    res = subprocess.run([toolkit.tool("autosync-install"), action, str(repo)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def snapshot(repo, hooks_dir=None):
    """Everything install may touch: the hook files (name, mode, bytes) and local config."""
    hooks = Path(hooks_dir or git(repo, "rev-parse", "--absolute-git-dir")) / (
        "" if hooks_dir else "hooks")
    files = {}
    if hooks.is_dir():
        for p in sorted(hooks.iterdir()):
            if not p.name.endswith(".sample"):
                files[p.name] = (stat.S_IMODE(p.lstat().st_mode), p.read_bytes())
    return files, git(repo, "config", "--local", "--list")


@pytest.fixture
def clone(server_and_clones):
    return server_and_clones[1]("work")


def test_install_adds_the_shim_defaults_and_alias(toolkit, env, clone):
    res = install(toolkit, env, clone)
    hook = clone / ".git" / "hooks" / "post-commit"
    assert "# managed-by: git-autosync" in hook.read_text()
    assert os.access(hook, os.X_OK)
    assert git(clone, "config", "autosync.remote") == "origin"
    assert git(clone, "config", "autosync.branch") == "main"
    assert git(clone, "config", "autosync.channel") == "notes"
    assert "start it with" in res.stdout
    # the alias works without the toolkit on PATH
    assert str(toolkit.bin) not in env["PATH"]
    status = subprocess.run(["git", "-C", str(clone), "autosync", "status"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert status.returncode == 3, status.stderr
    assert "not running" in status.stdout + status.stderr


def test_install_twice_changes_nothing(toolkit, env, clone):
    install(toolkit, env, clone)
    before = snapshot(clone)
    res = install(toolkit, env, clone)
    assert snapshot(clone) == before
    assert res.stdout == f"git-autosync is already installed in '{clone}', up to date\n"


def test_uninstall_restores_exactly_the_previous_state(toolkit, env, clone):
    hooks = clone / ".git" / "hooks"
    (hooks / "post-commit").write_text(FOREIGN)
    (hooks / "post-commit").chmod(0o750)
    git(clone, "config", "autosync.debounce", "200")  # the user's own key: kept
    before = snapshot(clone)
    install(toolkit, env, clone)
    assert (hooks / "post-commit.pre-autosync").read_text() == FOREIGN
    res = install(toolkit, env, clone, "uninstall")
    assert "restored the chained hook" in res.stdout
    assert snapshot(clone) == before


def test_uninstall_keeps_keys_the_user_changed(toolkit, env, clone):
    install(toolkit, env, clone)
    git(clone, "config", "autosync.channel", "mine")
    install(toolkit, env, clone, "uninstall")
    assert git(clone, "config", "autosync.channel") == "mine"
    assert git(clone, "config", "autosync.remote", check=False) == ""



def config_file(repo):
    return Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")) / "config"


def test_install_turns_on_fsck_of_fetched_and_received_objects(toolkit, env,
                                                                server_and_clones):
    server, make_clone = server_and_clones
    clone = make_clone("work")
    install(toolkit, env, clone)
    install(toolkit, env, server)
    assert git(clone, "config", "--local", "fetch.fsckObjects") == "true"
    assert git(clone, "config", "receive.fsckObjects", check=False) == ""
    assert git(server, "config", "--local", "receive.fsckObjects") == "true"
    assert git(server, "config", "fetch.fsckObjects", check=False) == ""
    assert "fetch.fsckObjects" in install(toolkit, env, clone, "uninstall").stdout
    install(toolkit, env, server, "uninstall")
    assert git(clone, "config", "fetch.fsckObjects", check=False) == ""
    assert git(server, "config", "receive.fsckObjects", check=False) == ""
    # no empty [fetch] / [receive] section is left behind
    assert "[fetch]" not in config_file(clone).read_text()
    assert "[receive]" not in config_file(server).read_text()


@pytest.mark.parametrize("bare", [False, True])
def test_uninstall_with_fsck_restores_exactly_the_previous_state(toolkit, env,
                                                                 server_and_clones, bare):
    server, make_clone = server_and_clones
    repo = server if bare else make_clone("work")
    before = snapshot(repo)
    text_before = config_file(repo).read_text()
    install(toolkit, env, repo)
    assert snapshot(repo) != before
    install(toolkit, env, repo, "uninstall")
    assert snapshot(repo) == before
    assert config_file(repo).read_text() == text_before


@pytest.mark.parametrize("bare", [False, True])
def test_fsck_key_the_user_set_is_not_overwritten(toolkit, env, server_and_clones, bare):
    server, make_clone = server_and_clones
    repo = server if bare else make_clone("work")
    key = "receive.fsckObjects" if bare else "fetch.fsckObjects"
    git(repo, "config", key, "false")
    before = snapshot(repo)
    res = install(toolkit, env, repo)
    assert key not in res.stdout
    assert git(repo, "config", "--local", key) == "false"
    manifest = (Path(git(repo, "rev-parse", "--absolute-git-dir")) / "autosync"
                / "install.json").read_text()
    assert "fsckObjects" not in manifest
    install(toolkit, env, repo, "uninstall")
    assert git(repo, "config", "--local", key) == "false"
    assert snapshot(repo) == before


@pytest.mark.parametrize("key", ["fetch.fsckObjects", "transfer.fsckObjects"])
def test_fsck_choice_in_the_global_config_is_respected(toolkit, env, clone, key):
    git(clone, "config", "--global", key, "false")
    before = snapshot(clone)
    install(toolkit, env, clone)
    assert git(clone, "config", "--local", "fetch.fsckObjects", check=False) == ""
    assert git(clone, "config", "fetch.fsckObjects", check=False) == (
        "false" if key.startswith("fetch") else "")
    install(toolkit, env, clone, "uninstall")
    assert snapshot(clone) == before


def test_uninstall_keeps_a_fsck_value_the_user_changed_since(toolkit, env, clone):
    install(toolkit, env, clone)
    assert git(clone, "config", "fetch.fsckObjects") == "true"
    git(clone, "config", "fetch.fsckObjects", "false")
    res = install(toolkit, env, clone, "uninstall")
    assert "fetch.fsckObjects" not in res.stdout
    assert git(clone, "config", "--local", "fetch.fsckObjects") == "false"
    assert git(clone, "config", "autosync.remote", check=False) == ""


def test_fsck_key_is_kept_in_a_section_with_other_keys(toolkit, env, clone):
    """Uninstall drops only an emptied [fetch]; the user's other fetch keys stay."""
    git(clone, "config", "fetch.prune", "true")
    before = snapshot(clone)
    install(toolkit, env, clone)
    assert git(clone, "config", "fetch.fsckObjects") == "true"
    install(toolkit, env, clone, "uninstall")
    assert git(clone, "config", "fetch.prune") == "true"
    assert snapshot(clone) == before

def test_chained_hook_runs_with_the_same_arguments(toolkit, tenv, clone):
    (clone / ".git" / "hooks" / "post-commit").write_text(FOREIGN)
    (clone / ".git" / "hooks" / "post-commit").chmod(0o755)
    install(toolkit, tenv, clone)
    git(clone, "config", "autosync.push", "false")
    (clone / "f").write_text("x\n")
    git(clone, "add", "f", env=tenv)
    git(clone, "commit", "-q", "-m", "by hand", env=tenv)
    assert (clone / ".git" / "foreign-ran").read_text() == "\n"


def test_post_receive_chained_hook_gets_the_same_stdin(toolkit, tenv, server_and_clones):
    server, make_clone = server_and_clones
    hook = server / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\ncat >> \"$(git rev-parse --absolute-git-dir)/seen\"\n")
    hook.chmod(0o755)
    install(toolkit, tenv, server)
    assert "# managed-by: git-autosync" in hook.read_text()
    assert git(server, "config", "autosync.channel") == "notes"
    plain = make_clone("plain")
    old = git(plain, "rev-parse", "HEAD")
    (plain / "g").write_text("y\n")
    git(plain, "add", "g", env=tenv)
    git(plain, "commit", "-q", "-m", "g", env=tenv)
    new = git(plain, "rev-parse", "HEAD")
    git(plain, "push", "-q", "origin", "main", env=tenv)
    assert (server / "seen").read_text() == f"{old} {new} refs/heads/main\n"


def test_core_hooks_path_is_honoured(toolkit, env, clone, tmp_path):
    shared = tmp_path / "shared-hooks"
    git(clone, "config", "core.hooksPath", str(shared))
    install(toolkit, env, clone)
    assert "# managed-by: git-autosync" in (shared / "post-commit").read_text()
    assert not (clone / ".git" / "hooks" / "post-commit").exists()
    install(toolkit, env, clone, "uninstall")
    assert not (shared / "post-commit").exists()


def test_relative_core_hooks_path(toolkit, env, clone):
    git(clone, "config", "core.hooksPath", ".githooks")
    install(toolkit, env, clone)
    assert (clone / ".githooks" / "post-commit").is_file()


def test_not_a_repository_is_one_clear_line(toolkit, env, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    res = install(toolkit, env, plain, check=False)
    assert res.returncode == 1
    assert res.stderr.splitlines()[0] == f"git-autosync: not a git repository: '{plain}'"
    assert "Traceback" not in res.stderr
    assert list(plain.iterdir()) == []


def test_existing_chained_copy_is_refused(toolkit, env, clone):
    hooks = clone / ".git" / "hooks"
    (hooks / "post-commit").write_text(FOREIGN)
    (hooks / "post-commit.pre-autosync").write_text(FOREIGN + "# older\n")
    before = snapshot(clone)
    res = install(toolkit, env, clone, check=False)
    assert res.returncode == 1 and "cannot chain" in res.stderr
    assert snapshot(clone) == before


@pytest.fixture
def readonly_hooks(clone):
    """The hooks directory made unwritable, even for root (immutable attribute)."""
    hooks = clone / ".git" / "hooks"
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(hooks)], stderr=subprocess.DEVNULL).returncode:
            pytest.skip("cannot make a directory immutable here")
        yield hooks
        subprocess.run(["chattr", "-i", str(hooks)])
    else:
        hooks.chmod(0o555)
        yield hooks
        hooks.chmod(0o755)


def test_read_only_hooks_dir_changes_nothing(toolkit, env, clone, readonly_hooks):
    before = snapshot(clone)
    res = install(toolkit, env, clone, check=False)
    assert res.returncode == 1
    assert res.stderr.startswith(f"git-autosync: cannot write to the hooks directory "
                                 f"'{readonly_hooks}'")
    assert "Traceback" not in res.stderr
    assert snapshot(clone) == before
    assert not (clone / ".git" / "autosync" / "install.json").exists()


def test_make_install_and_uninstall_repo(toolkit, env, clone):
    def make(*args):
        return subprocess.run(["make", "-s", "-C", str(ROOT), *args, f"PREFIX={toolkit.prefix}",
                               f"REPO={clone}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    before = snapshot(clone)
    res = make("install")
    assert res.returncode == 0, res.stderr
    assert (clone / ".git" / "hooks" / "post-commit").exists()
    res = make("uninstall")
    assert res.returncode == 0, res.stderr
    assert snapshot(clone) == before


def test_make_install_with_a_bad_repo_installs_nothing(env, tmp_path):
    prefix = tmp_path / "prefix"
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}",
                          f"REPO={tmp_path / 'missing'}"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert res.returncode != 0
    assert res.stderr.splitlines()[0].startswith("git-autosync: cannot use ")
    assert not prefix.exists()


def test_missing_python_module_is_one_clear_line(env, tmp_path):
    """A python3 without ensurepip (Debian without python3-venv) is refused up front."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text("import sys\nsys.modules['ensurepip'] = None\n")
    prefix = tmp_path / "prefix"
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}"],
                         env=dict(env, PYTHONPATH=str(shadow)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert res.returncode != 0
    assert res.stderr.splitlines()[0] == "git-autosync: python3 module 'ensurepip' is missing"
    assert not prefix.exists()


def test_manual_commit_is_pushed_by_the_hook(toolkit, env, server_and_clones):
    server, make_clone = server_and_clones
    clone = make_clone("manual")
    install(toolkit, env, clone)
    (clone / "note.txt").write_text("by hand\n")
    git(clone, "add", "note.txt", env=env)
    git(clone, "commit", "-q", "-m", "by hand", env=env)
    head = git(clone, "rev-parse", "HEAD")
    wait_for(lambda: git(server, "rev-parse", "main") == head, what="the hook's push")


def test_daemon_commits_do_not_start_a_push_helper(toolkit, env, clone):
    install(toolkit, env, clone)
    (clone / "d.txt").write_text("daemon\n")
    git(clone, "add", "d.txt", env=env)
    git(clone, "commit", "-q", "-m", "as the daemon", env=dict(env, GIT_AUTOSYNC_COMMITTER="1"))
    assert not (clone / ".git" / "autosync" / "push.log").exists()


def make(env, *args):
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def registry(home):
    path = home / ".local" / "share" / "git-autosync" / "repositories.json"
    return json.loads(path.read_text())["repositories"] if path.exists() else []


def test_toolkit_removal_uninstalls_from_every_repository(env, home, server_and_clones,
                                                          tmp_path):
    """A real toolkit under a temp PREFIX: its install output, the list of repositories it
    touched, refusal while a daemon runs, then removal that leaves every repository working."""
    server, make_clone = server_and_clones
    clone = make_clone("work")
    hooks = clone / ".git" / "hooks"
    (hooks / "post-commit").write_text(FOREIGN)
    (hooks / "post-commit").chmod(0o755)
    before = {clone: snapshot(clone), server: snapshot(server)}
    prefix = tmp_path / "prefix"
    res = make(env, "install", f"PREFIX={prefix}")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # what happens while the environment is built, then a summary, not the recipe lines
    assert "building the private python environment" in out and "about 20 s" in out
    assert f"installed the git-autosync toolkit under {prefix}" in out
    assert "install -m" not in out and "install -d" not in out
    assert f"note: {prefix}/bin is not on PATH" in out
    assert f'export PATH="{prefix}/bin:$PATH"' in out
    if shutil.which("manpath"):
        assert f'export MANPATH="{prefix}/share/man:$MANPATH"' in out
    assert res.stderr == ""
    # compiled at install, not by the first daemon (that costs it 2.4 MB for good)
    package = prefix / "libexec" / "git-autosync" / "autosync"
    assert {p.name.split(".")[0] for p in (package / "__pycache__").glob("*.pyc")} == \
        {p.stem for p in package.glob("*.py")}
    res = make(dict(env, PATH=f"{prefix}/bin:{env['PATH']}"), "install", f"PREFIX={prefix}")
    assert "not on PATH" not in res.stdout
    res = make(env, "install", f"PREFIX={prefix}", "V=1")  # every step, on request
    assert "install -m 0644" in res.stdout, res.stdout

    for repo in (clone, server):
        res = make(env, "install", f"PREFIX={prefix}", f"REPO={repo}")
        assert res.returncode == 0, res.stderr
    assert {e["dir"] for e in registry(home)} == {str(clone), str(server)}
    assert all(e["toolkit"] == str(prefix / "libexec" / "git-autosync")
               for e in registry(home))

    # a daemon runs the toolkit's code: refused, nothing changed, the way out named
    git(clone, "config", "autosync.push", "false")
    git(clone, "autosync", "start", env=env)
    try:
        installed = sorted(p for p in prefix.rglob("*"))
        res = make(env, "uninstall", f"PREFIX={prefix}")
        assert res.returncode != 0
        assert res.stderr.startswith("git-autosync: cannot remove the toolkit: its daemon "
                                     f"runs in '{clone}'"), res.stderr
        assert f"hint: git -C {clone} autosync stop" in res.stderr
        assert sorted(p for p in prefix.rglob("*")) == installed
        assert len(registry(home)) == 2
    finally:
        git(clone, "autosync", "stop", env=env)
    git(clone, "config", "--unset", "autosync.push")

    res = make(env, "uninstall", f"PREFIX={prefix}")
    assert res.returncode == 0, res.stderr
    assert f"uninstalled from '{clone}'" in res.stdout
    assert f"uninstalled from '{server}'" in res.stdout
    assert [p for p in prefix.rglob("*") if not p.is_dir()] == []
    assert not (home / ".local" / "share" / "git-autosync").exists()
    for repo, snap in before.items():
        assert snapshot(repo) == snap
    # the repository works as before: its own hook runs, nothing complains
    (clone / "after").write_text("x\n")
    git(clone, "add", "after", env=env)
    res = subprocess.run(["git", "commit", "-q", "-m", "after"], cwd=clone, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == ""
    assert (clone / ".git" / "foreign-ran").read_text() == "\n"


def test_a_hook_whose_helper_is_gone_is_silent_and_still_chains(toolkit, env,
                                                                  server_and_clones, tmp_path):
    """The toolkit deleted by hand (not by make uninstall): the shims say nothing, exit 0,
    and the hooks they chained still run with the same arguments and input."""
    prefix = tmp_path / "gone-prefix"
    shutil.copytree(toolkit.prefix, prefix, symlinks=True)
    tool = str(prefix / "libexec" / "git-autosync" / "autosync-install")
    server, make_clone = server_and_clones
    clone = make_clone("work")
    (clone / ".git" / "hooks" / "post-commit").write_text(FOREIGN)
    (clone / ".git" / "hooks" / "post-commit").chmod(0o755)
    (server / "hooks" / "post-receive").write_text(
        "#!/bin/sh\ncat >> \"$(git rev-parse --absolute-git-dir)/seen\"\n")
    (server / "hooks" / "post-receive").chmod(0o755)
    plain = make_clone("plain")  # pushes without any hook of its own
    for repo in (clone, server, plain):
        subprocess.run([tool, "install", str(repo)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    git(server, "config", "autosync.mqtt.url", "mqtt://127.0.0.1:9")  # would announce
    shutil.rmtree(prefix)

    (clone / "f").write_text("x\n")
    git(clone, "add", "f", env=env)
    res = subprocess.run(["git", "commit", "-q", "-m", "f"], cwd=clone, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert (clone / ".git" / "foreign-ran").read_text() == "\n"

    old = git(plain, "rev-parse", "HEAD")
    (plain / "g").write_text("y\n")
    git(plain, "add", "g", env=env)
    res = subprocess.run(["git", "commit", "-q", "-m", "g"], cwd=plain, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    new = git(plain, "rev-parse", "HEAD")
    res = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=plain, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")  # no "announcing"
    assert (server / "seen").read_text() == f"{old} {new} refs/heads/main\n"


def test_outside_a_repository_the_hint_names_the_callers_way_to_pass_one(toolkit, env,
                                                                         tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    cli = subprocess.run([toolkit.tool("git-autosync"), "status"], cwd=plain, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert cli.stderr.splitlines()[1:] == [
        f"hint: create one with: git init {plain}   (or pass a repository with -C DIR)"]
    direct = install(toolkit, env, plain, check=False)
    assert "REPO=" not in direct.stderr and "autosync-install install DIR" in direct.stderr
    res = make(env, "install", f"PREFIX={toolkit.prefix}", f"REPO={plain}")
    assert res.returncode != 0
    assert "hint: create one with: git init " in res.stderr
    assert "or pass a repository with REPO=DIR" in res.stderr
