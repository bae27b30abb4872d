"""What the hook shims run: the chained hook first, then autosync's part, never blocking git.

post-commit (work tree): ask the running daemon to push (SIGUSR1), or start a detached
    push helper when no daemon runs. Commits the daemon made itself are pushed by the
    daemon; commits made during a rebase or on another branch are left alone.
post-receive (bare server): start a detached publisher announcing every updated branch.
Both return at once: the push or publish goes on in the background with its output in
$GIT_DIR/autosync/, so a slow network or a dead broker never slows down git.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import IO

from . import pidfile
from .config import Config
from .git import Repo, clean_env, own_git_path
from .message import PUSH_OPTION
from .publish import updates_from_lines
from .transport import kind
from .util import Error, log, setup_logging, warn

CHAINED = ".pre-autosync"  # the suffix of a hook this one runs after itself (install)

LIBEXEC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDIN_HOOKS = ("post-receive", "pre-receive", "pre-push", "post-rewrite")


def run_chained(name: str, args: list[str], stdin: bytes | None) -> int:
    """Run the hook that was there before autosync, exactly as git would have."""
    hooks = own_git_path("hooks") or "hooks"
    chained = os.path.abspath(os.path.join(hooks, name + CHAINED))
    if not os.path.isfile(chained) or not os.access(chained, os.X_OK):
        return 0
    return subprocess.run([chained, *args], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL).returncode


def spawn(repo: Repo, argv: list[str], logname: str) -> None:
    """Start argv detached from the hook: own session, output to a log, not to git."""
    out: IO[bytes] | int
    try:
        out = open(os.path.join(repo.ensure_state_dir(), logname), "ab")
    except OSError:
        out = subprocess.DEVNULL
    try:
        subprocess.Popen(argv, cwd=repo.cwd, env=clean_env(), stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out, start_new_session=True, close_fds=True)
    finally:
        if not isinstance(out, int):  # not subprocess.DEVNULL
            out.close()


def installed_here(repo: Repo) -> bool:
    """Whether autosync was installed in this repository (install's manifest is there): a
    hooks directory that other repositories share (a global core.hooksPath) runs the
    shim for each of them, and those only run the hook it chained."""
    return os.path.isfile(os.path.join(repo.state_dir, "install.json"))


def post_commit(args: list[str], stdin: bytes | None) -> None:
    if os.environ.get("GIT_AUTOSYNC_COMMITTER"):
        return  # the daemon's own commit: it pushes by itself
    repo = Repo(".")
    if not installed_here(repo):
        return
    config = Config(repo, shared=False)  # (push, remote, branch: none is a shared key)
    if not config["push"] or not config.has_remote or repo.operation_in_progress():
        return
    if repo.current_branch() != config.branch:
        return
    pid = pidfile.running_pid(repo)
    if pid and pid > 0:
        try:
            os.kill(pid, signal.SIGUSR1)
            return
        except OSError:
            pass  # it just went away: push ourselves
    spawn(repo, [os.path.join(LIBEXEC, "autosync-push"), "-C", repo.cwd], "push.log")


def post_receive(args: list[str], stdin: bytes | None) -> None:
    repo = Repo(".")
    if not installed_here(repo):
        return
    # decoded as autosync-publish --stdin does: a ref name that is not UTF-8 reaches the
    # publisher byte for byte (and is dropped there), never as a look-alike name
    lines = (stdin or b"").decode("utf-8", "surrogateescape").splitlines()
    count = os.environ.get("GIT_PUSH_OPTION_COUNT", "0")
    options = {os.environ.get(f"GIT_PUSH_OPTION_{i}")
               for i in range(min(100, int(count) if count.isdigit() else 0))}
    if PUSH_OPTION in options:
        return  # a clone pushed this and announced it itself
    updates = [word for pair in updates_from_lines(lines, repo) for word in pair]
    if updates and kind(Config(repo)) is not None:
        # branch names are pushers' data: after `--`, so that `-h` or `--git-dir=...` is a
        # name (the publisher drops it with one log line), never an option
        spawn(repo, [os.path.join(LIBEXEC, "autosync-publish"), f"--git-dir={repo.git_dir}",
                     "--", *updates], "publish.log")


Handler = Callable[[list[str], bytes | None], None]  # (hook arguments, its stdin)
HANDLERS: dict[str, Handler] = {"post-commit": post_commit, "post-receive": post_receive}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in HANDLERS:
        print("usage: autosync-hook {%s} [ARGS...]   (run by git's hook shims)"
              % ",".join(HANDLERS), file=sys.stderr)
        return 2
    name, args = argv[0], argv[1:]
    setup_logging()
    stdin = sys.stdin.buffer.read() if name in STDIN_HOOKS else None
    code = run_chained(name, args, stdin)
    try:
        HANDLERS[name](args, stdin)
    except Error as e:  # a hook never fails the user's commit or push over autosync
        warn(f"{name} hook: {e.message}")
    except OSError as e:
        log.warning("%s hook: %s", name, e)
    return code
