"""A second device in one command: `git autosync share` and `git autosync clone`.

share writes the committed settings file `.autosync` (config.SHARED_KEYS, README "Shared
settings") from this clone's settings and commits it like any save, so the daemon pushes
it. clone makes a new device: `git clone`, the install `make install REPO=DIR` does (the
same Installer), then the daemon (--start) or its systemd user unit (--systemd); the
shared settings in the clone apply by themselves, read by Config.
"""

import argparse
import contextlib
import ctypes
import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

from . import hook, systemd
from .cli import cmd_start
from .config import KEYS, SHARED_FILE, SHARED_KEYS, Config, check_shared
from .git import NEWLINE, Repo, clean_env, diagnosis
from .install import Installer
from .sync import Engine
from .util import HUMAN, OK, RETRY, Error, printable
from .util import shown as quoted

HEADER = ("# git-autosync shared settings (written by `git autosync share`): every clone "
          "reads the\n# committed version; its own `git config` wins. Only these keys are "
          "read: see man git-autosync.\n")


# -- share ------------------------------------------------------------------------------------
def quote(value: str) -> str:
    """value as a git config file value: bare when that reads back the same, else quoted."""
    if value and re.fullmatch(r"[^\s\"\\#;]([^\"\\#;\n\t]*[^\s\"\\#;])?", value):
        return value
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def render(values: dict[str, list[str]]) -> str:
    """The file: the header, then one section per subsection, keys sorted."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(values, key=str.lower):
        section, _, name = key.rpartition(".")
        sections.setdefault(section, []).extend((name, v) for v in values[key])
    out = [HEADER.rstrip("\n")]
    for section in sorted(sections):
        sub = section.partition(".")[2]
        out.append("[autosync]" if not sub else f'[autosync "{sub}"]')
        out += [f"\t{name} = {quote(v)}" for name, v in sections[section]]
    return "\n".join(out) + "\n"


def shared_values(config: Config) -> tuple[dict[str, list[str]], list[str]]:
    """({key: values} to share: this clone's value of each shareable key that is set, in
    git config or by the current .autosync), [lines about values other clones would
    refuse, left out])."""
    values: dict[str, list[str]] = {}
    left_out = []
    for key in SHARED_KEYS:
        found = config.raw.get(key.lower())
        if key in config.shared and not config.is_local(key):
            found = config.shared[key]
        if not found:
            continue
        try:
            check_shared(key, config.values[key])
        except Error as e:
            left_out.append(f"warning: not sharing {key}: {printable(e.message)} (other "
                            "clones would ignore it)")
            continue
        values[key] = [v for v in found if v] if KEYS[key][1] == "list" else [found[-1]]
    return {k: v for k, v in values.items() if v}, left_out


def cmd_share(repo: Repo, args: argparse.Namespace) -> int:
    if repo.top is None:
        raise Error(f"'{repo.cwd}' is a bare repository; share from a clone with a work tree",
                    "git -C CLONE autosync share")
    top = repo.top
    path = os.path.join(top, SHARED_FILE)
    where = shlex.quote(top)
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            raise Error(f"cannot write '{SHARED_FILE}': it is a directory",
                        f"git -C {where} mv {SHARED_FILE} OTHER-NAME")
    if repo.out("status", "--porcelain", "-z", "--untracked-files=all", "--",
                f":(top,literal){SHARED_FILE}"):
        raise Error(f"'{SHARED_FILE}' has uncommitted changes",
                    f"git -C {where} diff -- {SHARED_FILE}   (then commit them, or drop them: "
                    f"git -C {where} checkout -- {SHARED_FILE})")
    config = Config(repo)
    values, left_out = shared_values(config)
    for line in left_out:
        print(line, file=sys.stderr)
    text = render(values)
    sys.stdout.write(text)
    if args.dry_run:
        print(f"(dry run: '{SHARED_FILE}' not written)")
        return OK
    old = repo.run("cat-file", "blob", f"HEAD:{SHARED_FILE}", check=False)
    if old.returncode == 0 and old.stdout == text.encode():
        print(f"'{SHARED_FILE}' already says this: nothing to commit")
        return OK
    write(repo, path, text)
    result = Engine(repo, config).commit([SHARED_FILE])
    if result.commit:
        print(f"[{result.commit[:10]}] {result.message}")
        hook.post_commit([], None)  # the daemon is told to push it (or the push helper runs)
    elif repo.run("cat-file", "blob", f"HEAD:{SHARED_FILE}", check=False).stdout \
            == text.encode():
        print(f"committed '{SHARED_FILE}' (the running daemon did)")
    else:
        raise Error(f"'{SHARED_FILE}' was written but not committed (is it ignored?)",
                    f"git -C {where} check-ignore -v {SHARED_FILE}")
    return OK


def write(repo: Repo, path: str, text: str) -> None:
    """text into path, whole or not at all: made beside the git dir (never a temp file in
    the work tree) and renamed into place; a symbolic link there is replaced, not followed."""
    tmp = os.path.join(repo.ensure_state_dir(), f"share.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.replace(tmp, path)
        except OSError as e:
            if e.errno != errno.EXDEV:  # the git dir on another file system: write in place
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            with os.fdopen(fd, "w") as f:
                f.write(text)
    except OSError as e:
        raise Error(f"cannot write '{path}': {(e.strerror or str(e)).lower()}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# -- clone ------------------------------------------------------------------------------------
def humanish(url: str) -> str:
    """The directory git clone would make for url: its last component without .git."""
    name = url.rstrip("/")
    if name.endswith("/.git"):
        name = name[:-5].rstrip("/")
    name = re.split(r"[/:\\]", name)[-1]
    for suffix in (".git", ".bundle"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    return "" if name in (".", "..") else name


def cmd_clone(args: argparse.Namespace) -> int:
    url: str = args.url
    if not url.strip() or not url.isprintable():
        raise Error(f"bad repository URL '{printable(url)}'",
                    "git autosync clone URL [DIR]   (URL as for git clone)")
    name = args.directory or humanish(url)
    # (after `--`: a URL that starts with '-' is no option of the command pasted)
    again = "git autosync clone " + ("-- " if url.startswith("-") else "") + shlex.quote(url)
    if not name:
        raise Error(f"cannot tell a directory name from '{url}'", f"{again} DIR")
    target = os.path.abspath(os.path.join(args.dir or os.getcwd(), os.path.expanduser(name)))
    if "\n" in target:  # (refused before anything is made)
        raise Error(f"cannot use {quoted(target)}: {NEWLINE}", f"{again} OTHER-DIR")
    shown = shlex.quote(target)
    if os.path.lexists(target) and (not os.path.isdir(target) or os.path.islink(target)
                                    or os.listdir(target)):
        raise Error(f"destination path '{target}' already exists and is not an empty "
                    "directory", f"{again} OTHER-DIR")
    made = _first_missing(target)  # what this command creates (None: an empty DIR)
    try:
        with _signals_interrupt():
            res = subprocess.run(["git", "clone", "-q", "--", url, target], env=clean_env(),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, preexec_fn=_ends_with_us())
            if res.returncode != 0:
                err = res.stderr.decode(errors="replace")
                full = "no space left on device" in err.lower() or "quota" in err.lower()
                raise Error(f"cannot clone '{printable(url)}': "
                            + (diagnosis(err) or f"git clone exited {res.returncode}"),
                            "free some disk space, then run the same command again" if full
                            else "check the URL: git ls-remote -- " + shlex.quote(url),
                            code=RETRY if full else HUMAN)
            repo = Repo(target)
            changes = Installer(repo).install()  # what `make install REPO=DIR` does
    except BaseException:
        _remove(made, target)
        raise
    print(f"cloned '{printable(url)}' into '{target}'")
    for line in changes:
        print(f"install: {line}")
    config = Config(repo)  # (its warnings about .autosync are shown now)
    if config.shared:
        print(f"shared settings from {SHARED_FILE}: " + ", ".join(
            f"{k}={printable(','.join(v))}" for k, v in sorted(config.shared.items())))
    if args.start:
        return cmd_start(repo, args)
    if args.systemd:
        print("\n".join(systemd.enable(target)))
        return OK
    print(f"start it with:\n  git -C {shown} autosync start")
    return OK


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end what runs inside as Ctrl-C does, so that
    a clone stopped half-way is removed (one that ignores SIGHUP, under nohup, still
    does)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            old[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _ends_with_us() -> Callable[[], None] | None:
    """A preexec_fn that has the child sent SIGTERM when this process dies, even of
    SIGKILL: a git clone then removes what it made instead of finishing alone into a
    directory without autosync (Linux's PR_SET_PDEATHSIG; None elsewhere)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_up() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # this process died before that
            os.kill(os.getpid(), signal.SIGTERM)
    return set_up


def _first_missing(path: str) -> str | None:
    """The topmost directory of path that does not exist yet (git clone makes them all)."""
    missing = None
    while not os.path.lexists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove(made: str | None, target: str) -> None:
    """Undo a failed clone: what this command created, and nothing else."""
    with contextlib.suppress(OSError):
        if made is not None:
            shutil.rmtree(made)
        else:  # DIR was there, empty: it stays, emptied again
            for entry in os.listdir(target):
                full = os.path.join(target, entry)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
