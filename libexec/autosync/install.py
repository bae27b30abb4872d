"""Install git-autosync into one repository, or take it out again.

What install adds, and uninstall removes again:
- a hook shim per hook (work tree: post-commit; bare repository: post-receive) in the
  directory `git rev-parse --git-path hooks` names (so core.hooksPath is honoured). A hook
  that was there before and is not ours is renamed to `<hook>.pre-autosync` and chained:
  the shim's helper runs it with the same argv and stdin;
- `autosync.*` defaults, only for keys that are unset;
- `alias.autosync`, so that `git -C DIR autosync ...` works without PATH changes;
- `fetch.fsckObjects=true` (work tree) or `receive.fsckObjects=true` (bare repository), so
  that objects arriving from peers are checked before they are stored - only when neither
  that key nor `transfer.fsckObjects` is set in any config file (the user's choice wins);
- `receive.advertisePushOptions=true` (bare repository, unless set anywhere), so that a
  clone can tell the post-receive hook that it announced its push itself.
What was added is recorded in $GIT_DIR/autosync/install.json; uninstall reverts exactly
that (a key the user changed since is left alone). Every step is checked first and undone
if a later one fails, so an install is done completely or not at all.

Every repository install touched is also listed, with the toolkit that did it, in
`$XDG_DATA_HOME/git-autosync/repositories.json` (default `~/.local/share/...`; see
Registry). `make uninstall` without REPO runs `autosync-install remove-toolkit LIBEXECDIR`,
which uninstalls from each repository that toolkit was installed in before the toolkit
goes, and refuses (changing nothing) while a daemon runs in one of them.
"""

import argparse
import contextlib
import errno
import fcntl
import functools
import json
import os
import shlex
import stat
from collections.abc import Callable, Iterator
from typing import Any

from . import VERSION, pidfile, systemd
from .config import default_channel
from .git import Repo
from .hook import CHAINED
from .util import HUMAN, RETRY, Error, warn

MARKER = "# managed-by: git-autosync"
HERE = os.path.dirname(os.path.abspath(__file__))
LIBEXEC = os.path.dirname(HERE)


def template_dir() -> str:
    """Hook templates: PREFIX/share/git-autosync/hooks when installed, hooks/ in a checkout."""
    for candidate in (os.path.join(LIBEXEC, os.pardir, os.pardir, "share", "git-autosync",
                                   "hooks"),
                      os.path.join(LIBEXEC, os.pardir, "hooks")):
        if os.path.isfile(os.path.join(candidate, "post-commit")):
            return os.path.normpath(candidate)
    raise Error(f"hook templates not found next to '{LIBEXEC}'", "make install")


def render_hook(name: str) -> str:
    with open(os.path.join(template_dir(), name)) as f:
        text = f.read()
    helper = shlex.quote(os.path.join(LIBEXEC, "autosync-hook"))
    return text.replace("@VERSION@", VERSION).replace("@HOOK_HELPER@", helper)


def is_ours(path: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            return MARKER in f.read(4096)
    except (FileNotFoundError, IsADirectoryError):
        return False


def read_bytes(path: str) -> bytes | None:
    """path's content (through a symbolic link), or None when it is no regular file: a
    FIFO in its place never blocks. OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None


def read_text(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def exists(path: str) -> bool:
    return os.path.lexists(path)


def failed(e: OSError, what: str, *hints: str) -> Error:
    """An OSError met while doing `what` ("cannot write 'PATH'"): a full disk or quota is
    retry later (75) with the fix, anything else needs a human (hints)."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    return Error(f"{what}: {(e.strerror or str(e)).lower()}",
                 *(["free some disk space, then run the same command again"] if full
                   else hints), code=RETRY if full else HUMAN)


def section_of(key: str) -> str | None:
    """'fetch.fsckObjects' -> 'fetch' (only plain sections; a subsection is kept as is)."""
    section, dot, _ = key.partition(".")
    return section if dot and "." not in key[len(section) + 1:] else None


class Registry:
    """The repositories install touched on this machine, for toolkit removal and listing.

    One JSON file, {"version": 1, "repositories": [{"dir": ..., "toolkit": ...}]}, where
    toolkit is the libexec directory whose hooks the repository runs. Every change is made
    under an flock of the directory and written to a temporary file renamed into place, so
    two installs at once never lose an entry and a reader never sees half a file. The file
    goes away with its last entry (and the directory, when empty).
    """

    NAME = "repositories.json"

    def __init__(self, directory: str | None = None) -> None:
        if directory is None:
            data = os.environ.get("XDG_DATA_HOME", "")
            if not os.path.isabs(data):  # unset, or relative: ignored (the XDG spec)
                data = os.path.expanduser("~/.local/share")
            directory = os.path.join(data, "git-autosync")
        self.dir = directory
        self.path = os.path.join(directory, self.NAME)
        self.warned = False

    MAX_SIZE = 16 << 20  # bytes (100,000 repositories)

    def entries(self, strict: bool = False) -> list[dict[str, str]]:
        """The valid entries; none when there is no file. A file that cannot be read or is
        no registry counts as empty (an install writes a new one), or with strict (`git
        autosync list`, which must not say "nothing" when it cannot tell) raises Error.
        Never blocks (a FIFO in its place) nor reads more than MAX_SIZE."""
        try:
            data = json.loads(self._read())
        except FileNotFoundError:
            return []
        except OSError as e:
            if strict:
                said = e.strerror or str(e)
                raise Error(f"cannot read the list of repositories '{self.path}': "
                            f"{said[:1].lower()}{said[1:]}",
                            f"ls -l {shlex.quote(self.path)}   (it must be readable by you)"
                            ) from None
            return []
        except (ValueError, RecursionError):
            data = None
        found = data.get("repositories") if isinstance(data, dict) else None
        if not isinstance(found, list):  # a hand edit, another tool: not a registry
            if strict:
                raise Error(f"'{self.path}' is not a list of repositories",
                            f"mv {shlex.quote(self.path)} {shlex.quote(self.path + '.bad')}"
                            "   (then make install REPO=DIR lists DIR again)")
            if not self.warned:
                self.warned = True
                warn(f"ignoring '{self.path}': it is not a list of repositories (the "
                     "next install writes a new one)")
            return []
        return [e for e in found if isinstance(e, dict)
                and isinstance(e.get("dir"), str) and isinstance(e.get("toolkit"), str)]

    def _read(self) -> bytes:
        """The file's bytes (through a symbolic link: a dotfiles manager's); OSError when
        it is no regular file or larger than MAX_SIZE."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            data = f.read(self.MAX_SIZE + 1)
        if len(data) > self.MAX_SIZE:
            raise OSError(errno.EFBIG, f"larger than {self.MAX_SIZE >> 20} MiB")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, entries: list[dict[str, str]]) -> None:
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"version": 1, "repositories": entries}, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:  # (a full disk): no half-written file left beside it
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def update(self, add: list[dict[str, str]], remove: list[str]) -> None:
        """Add entries (replacing any for the same dir) and drop the dirs in remove."""
        with self._locked():
            gone = set(remove) | {e["dir"] for e in add}
            self._write([e for e in self.entries() if e["dir"] not in gone] + add)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)  # only when nothing is left in it

    def add(self, directory: str, toolkit: str = LIBEXEC) -> None:
        """(by its real path: one entry however a symbolic link spelled it)"""
        real = os.path.realpath(directory)
        self.update([{"dir": real, "toolkit": os.path.realpath(toolkit)}],
                    [e["dir"] for e in self.entries() if e["dir"] != real
                     and os.path.realpath(e["dir"]) == real])

    def remove(self, directory: str) -> None:
        real = os.path.realpath(directory)
        gone = [e["dir"] for e in self.entries()
                if e["dir"] == directory or os.path.realpath(e["dir"]) == real]
        if gone:
            self.update([], gone)

    def of_toolkit(self, toolkit: str) -> list[str]:
        real = os.path.realpath(toolkit)
        return [e["dir"] for e in self.entries() if os.path.realpath(e["toolkit"]) == real]


class Installer:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.manifest_path = os.path.join(repo.state_dir, "install.json")
        self.undo: list[Callable[[], object]] = []  # reverting what was done so far, newest last
        self.changes: list[str] = []

    # -- facts ---------------------------------------------------------------------------
    @property
    def hooks_dir(self) -> str:
        rel = self.repo.out("rev-parse", "--git-path", "hooks")
        return os.path.normpath(os.path.join(self.repo.cwd, rel))

    @property
    def hook_names(self) -> list[str]:
        return ["post-receive"] if self.repo.bare else ["post-commit"]

    def installed(self) -> bool:
        """Whether our hook shim is in place (what an uninstall by hand takes away first)."""
        return any(is_ours(os.path.join(self.hooks_dir, n)) for n in self.hook_names)

    def alias_value(self) -> str:
        return "!" + shlex.quote(os.path.join(LIBEXEC, "git-autosync"))

    def config_get(self, key: str) -> str | None:
        res = self.repo.run("config", "--local", "--get", key, check=False)
        return res.stdout.decode(errors="surrogateescape").rstrip("\n") \
            if res.returncode == 0 else None

    def config_set_anywhere(self, key: str) -> bool:
        """Whether key has a value in any config scope (system, global, local, ...)."""
        return self.repo.ok("config", "--get", key)

    def fsck_key(self) -> str | None:
        """The fsck key for objects this repository receives, or None if the user chose."""
        key = "receive.fsckObjects" if self.repo.bare else "fetch.fsckObjects"
        if self.config_set_anywhere(key) or self.config_set_anywhere("transfer.fsckObjects"):
            return None
        return key

    def defaults(self) -> dict[str, str]:
        """The keys install sets when unset: where to sync and what to call the channel."""
        repo = self.repo
        wanted: dict[str, str] = {}
        if not repo.bare:
            remotes = repo.out("remote").split()
            remote = "origin" if "origin" in remotes else (remotes[0] if len(remotes) == 1
                                                             else None)
            if remote:
                wanted["autosync.remote"] = remote
            branch = repo.current_branch()
            if branch:
                wanted["autosync.branch"] = branch
            url = self.config_get(f"remote.{remote}.url") if remote else None
            wanted["autosync.channel"] = default_channel(repo, url)
        else:
            wanted["autosync.channel"] = default_channel(repo)
        wanted["alias.autosync"] = self.alias_value()
        fsck = self.fsck_key()
        if fsck:
            wanted[fsck] = "true"
        if repo.bare and not self.config_set_anywhere("receive.advertisePushOptions"):
            # a clone pushing with `-o autosync-announced` has announced the push itself;
            # the post-receive hook then stays quiet (one announcement per push)
            wanted["receive.advertisePushOptions"] = "true"
        return wanted

    def load_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(read_bytes(self.manifest_path) or b"")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError, RecursionError):
            return {}

    # -- checks before touching anything -----------------------------------------------
    def preflight(self) -> None:
        hooks = self.hooks_dir
        probe_dir = hooks
        while not os.path.isdir(probe_dir):
            probe_dir = os.path.dirname(probe_dir)
        self.check_writable(probe_dir, "hooks directory")
        for name in self.hook_names:
            path = os.path.join(hooks, name)
            if exists(path) and not is_ours(path) and exists(path + CHAINED):
                raise Error(f"cannot chain '{path}': '{path + CHAINED}' exists already",
                            f"merge the two hooks by hand, then remove '{path + CHAINED}'")
            if os.path.isdir(path):
                raise Error(f"cannot install hook '{path}': it is a directory")
        self.check_writable(self.repo.git_dir, "repository")
        config_file = os.path.join(self.repo.common_dir, "config")
        if exists(config_file) and not os.access(config_file, os.W_OK):
            raise Error(f"cannot write '{config_file}': permission denied")

    @staticmethod
    def check_writable(directory: str, what: str) -> None:
        """A real write test (os.access says yes to root even on immutable directories)."""
        probe = os.path.join(directory, f".autosync-probe-{os.getpid()}")
        try:
            with open(probe, "w"):
                pass
            os.unlink(probe)
        except OSError as e:
            raise Error(f"cannot write to the {what} '{directory}': "
                        f"{(e.strerror or str(e)).lower()}",
                        f"ls -ld '{directory}'   (it must be writable by you)") from e

    # -- steps, each recording its undo ------------------------------------------------
    def write_file(self, path: str, text: str, mode: int) -> None:
        old: tuple[bytes, int] | None = None
        content = read_bytes(path) if exists(path) else None  # (a FIFO: replaced)
        if content is not None:
            old = (content, stat.S_IMODE(os.lstat(path).st_mode))
        tmp = f"{path}.autosync-tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as e:  # (a full disk; the hooks directory may be shared, global)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise failed(e, f"cannot write '{path}'") from None
        self.undo.append(lambda: self._restore(path, old))

    @staticmethod
    def _restore(path: str, old: tuple[bytes, int] | None) -> None:
        if old is None:
            os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(old[0])
            os.chmod(path, old[1])

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)
        self.undo.append(lambda: os.rename(dst, src))

    def set_config(self, key: str, value: str) -> None:
        self.repo.run("config", "--local", key, value)

        def undo() -> None:
            self.repo.run("config", "--local", "--unset", key, check=False)
            self.drop_empty_section(section_of(key))
        self.undo.append(undo)

    def drop_empty_section(self, section: str | None) -> None:
        """git leaves an empty [section] behind after the last --unset; tidy it."""
        if section and not self.repo.ok("config", "--local", "--get-regexp", f"^{section}\\."):
            self.repo.run("config", "--local", "--remove-section", section, check=False)

    def transaction(self, steps: Callable[[], None]) -> None:
        try:
            steps()
        except BaseException as e:
            for undo in reversed(self.undo):
                try:
                    undo()
                except (OSError, Error):
                    pass
            if isinstance(e, OSError) and not isinstance(e, Error):  # one line, not a crash
                raise failed(e, f"cannot change '{e.filename or self.repo.cwd}'") from None
            raise
        finally:
            self.undo = []

    # -- install / uninstall -----------------------------------------------------------
    def install(self) -> list[str]:
        self.preflight()
        manifest = self.load_manifest()
        hooks_done = manifest.get("hooks", {})
        config_done = manifest.get("config", {})

        def steps() -> None:
            os.makedirs(self.hooks_dir, exist_ok=True)
            for name in self.hook_names:
                path = os.path.join(self.hooks_dir, name)
                text = render_hook(name)
                chained = exists(path) and not is_ours(path)
                if chained:
                    self.rename(path, path + CHAINED)
                    self.changes.append(f"chained the existing {name} hook as {name}{CHAINED}")
                if read_text(path) != text:
                    self.write_file(path, text, 0o755)
                    self.changes.append(f"installed the {name} hook")
                record = hooks_done.get(name, {})
                hooks_done[name] = {"path": path,
                                    "chained": bool(record.get("chained") or chained)}
            for key, value in self.defaults().items():
                if self.config_get(key) is None:
                    self.set_config(key, value)
                    config_done[key] = value
                    self.changes.append(f"set {key}={value}")
            self.repo.ensure_state_dir()
            self.write_file(self.manifest_path,
                            json.dumps({"version": VERSION, "hooks": hooks_done,
                                        "config": config_done}, indent=1) + "\n", 0o644)
            self.register()
        self.transaction(steps)
        return self.changes

    def register(self) -> None:
        """List this repository for toolkit removal (undone if the install fails)."""
        registry = Registry()
        try:
            if self.repo.cwd not in registry.of_toolkit(LIBEXEC):
                registry.add(self.repo.cwd)
                self.undo.append(lambda: registry.remove(self.repo.cwd))
        except OSError as e:
            raise failed(e, f"cannot record the repository in '{registry.path}'",
                         f"ls -ld '{registry.dir}'   (it must be writable by you)") from e

    def uninstall(self) -> list[str]:
        pid = pidfile.running_pid(self.repo)
        if pid:
            raise Error(f"the daemon is running for '{self.repo.cwd}' (pid {pid})",
                        f"git -C {shlex.quote(self.repo.cwd)} autosync stop")
        manifest = self.load_manifest()
        hook_paths = {os.path.join(self.hooks_dir, n) for n in self.hook_names}
        hook_paths |= {h["path"] for h in manifest.get("hooks", {}).values()
                       if isinstance(h, dict) and isinstance(h.get("path"), str)}
        emptied: set[str | None] = {"autosync", "alias"}

        def steps() -> None:
            for path in sorted(hook_paths):
                if is_ours(path):
                    with open(path, "rb") as f:
                        saved = f.read()
                    os.unlink(path)
                    self.undo.append(functools.partial(self._restore, path, (saved, 0o755)))
                    self.changes.append(f"removed {path}")
                    if exists(path + CHAINED):
                        self.rename(path + CHAINED, path)
                        self.changes.append(f"restored the chained hook {path}")
            for key, value in manifest.get("config", {}).items():
                if self.config_get(key) == value:
                    self.repo.run("config", "--local", "--unset", key)
                    self.undo.append(functools.partial(self.repo.run, "config", "--local",
                                                       key, value))
                    self.changes.append(f"unset {key}")
                    emptied.add(section_of(key))
            if exists(self.manifest_path):
                os.unlink(self.manifest_path)
        self.transaction(steps)
        for section in sorted(s for s in emptied if s):
            self.drop_empty_section(section)
        with contextlib.suppress(OSError):  # an entry left behind is forgotten later
            Registry().remove(self.repo.cwd)
        for top in systemd.spellings(self.repo.top) if self.repo.top is not None else []:
            if not systemd.enabled(top):  # (by its real path, or the link it was given by)
                continue
            try:  # `git autosync systemd enable` was part of the set-up: undone too
                self.changes += systemd.disable(top)
            except (Error, OSError) as e:
                why = e.message if isinstance(e, Error) else e.strerror or str(e)
                self.changes.append(f"could not disable its systemd units: {why}")
        return self.changes


def remove_toolkit(toolkit: str) -> list[str]:
    """Uninstall from every repository the toolkit in libexec dir `toolkit` was installed in.

    Refuses, changing nothing, while a daemon runs in one of them (it runs the toolkit's
    code). A repository that is gone, or no longer has our install, is only forgotten.
    Returns what was done, one line per repository.
    """
    registry = Registry()
    repos: list[tuple[str, Repo | None]] = []
    for directory in registry.of_toolkit(toolkit):
        try:
            repos.append((directory, Repo(directory)))
        except Error:
            repos.append((directory, None))
    running = [(d, pid) for d, repo in repos if repo and (pid := pidfile.running_pid(repo))]
    if running:
        raise Error("cannot remove the toolkit: its daemon runs in "
                    + ", ".join(f"'{d}' (pid {pid})" for d, pid in running),
                    *(f"git -C {shlex.quote(d)} autosync stop" for d, _ in running),
                    "then run make uninstall again")
    done = []
    for directory, repo in repos:
        if repo is None:
            registry.remove(directory)
            done.append(f"forgot '{directory}' (no longer a repository)")
            continue
        changes = Installer(repo).uninstall()  # also drops it from the registry
        done.append(f"uninstalled from '{directory}'" if changes
                    else f"forgot '{directory}' (nothing of ours left in it)")
    try:  # units enabled with `git autosync systemd enable` outside any install
        done += systemd.disable_toolkit(os.path.join(toolkit, "git-autosync"))
    except (Error, OSError) as e:
        done.append("could not disable the systemd units that run it: "
                    + (e.message if isinstance(e, Error) else e.strerror or str(e)))
    return done


def forget(directory: str) -> bool:
    """Drop a directory that is no repository any more (moved, deleted) from the registry;
    whether it was listed."""
    registry = Registry()
    real, absolute = os.path.realpath(directory), os.path.abspath(directory)
    gone = [e["dir"] for e in registry.entries()
            if e["dir"] == absolute or os.path.realpath(e["dir"]) == real]
    if gone:
        registry.update([], gone)
    return bool(gone)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="autosync-install",
        description="Install git-autosync into a repository (hook shims, default config, "
                    "alias.autosync), or remove exactly what was installed. Idempotent.")
    ap.add_argument("action", choices=("install", "uninstall", "check", "list",
                                       "remove-toolkit"),
                    help="check: only verify that install would succeed; list: the "
                         "repositories install touched on this machine; remove-toolkit: "
                         "uninstall from every repository the toolkit in DIR (its libexec "
                         "directory) was installed in (make uninstall does this first)")
    ap.add_argument("dir", metavar="DIR", nargs="?",
                    help="the repository (work tree or bare)")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--make", action="store_true", help=argparse.SUPPRESS)  # run by make
    args = ap.parse_intermixed_args(argv)
    if args.action == "list":
        for entry in Registry().entries():
            print(f"{entry['dir']}\t{entry['toolkit']}")
        return 0
    if args.dir is None:
        ap.error("DIR is required")
    if args.action == "remove-toolkit":
        for line in remove_toolkit(args.dir):
            if not args.quiet:
                print(f"git-autosync: {line}")
        return 0
    hint = ("or pass a repository with REPO=DIR" if args.make
            else f"or name another: autosync-install {args.action} DIR")
    try:
        repo = Repo(os.path.expanduser(args.dir), hint=hint)
    except Error:
        if args.action != "uninstall" or not forget(os.path.expanduser(args.dir)):
            raise
        if not args.quiet:  # (moved or deleted: `git autosync list` said "missing")
            print(f"uninstall: forgot '{args.dir}' (no longer a repository)")
        return 0
    installer = Installer(repo)
    if args.action == "check":
        installer.preflight()
        return 0
    changes = installer.install() if args.action == "install" else installer.uninstall()
    if not args.quiet:
        where = repo.cwd
        for line in changes:
            print(f"{args.action}: {line}")
        if not changes:
            print(f"git-autosync is already installed in '{where}', up to date"
                  if args.action == "install"
                  else f"git-autosync was not installed in '{where}': nothing to remove")
        elif args.action == "install" and not repo.bare:
            print(f"git-autosync installed in '{where}'; start it with:\n"
                  f"  git -C {shlex.quote(where)} autosync start")
    return 0
