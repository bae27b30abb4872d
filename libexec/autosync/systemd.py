"""autosync-systemd: sync a repository at login with a systemd user unit, or stop doing so.

    git autosync systemd enable [--timer]    (or: autosync-systemd enable DIR [--timer])
    git autosync systemd disable [--timer]   (or: autosync-systemd disable DIR [--timer])
    autosync-systemd name DIR                print the unit's instance name

`enable` writes the template units into the user's unit directory
($XDG_CONFIG_HOME/systemd/user) and enables the repository's instance - the daemon,
git-autosync@INSTANCE.service, or with --timer the periodic one-shot sync,
git-autosync-sync@INSTANCE.timer - and starts it. The instance name is DIR escaped the
way `systemd-escape --path` does it. Without a reachable user manager (no login session,
a container) it makes the link `systemctl enable` makes, so the unit starts at the next
login, and prints the command that starts it now.

`disable` stops the repository's units (both kinds; --timer: the timer only), removes
their links, and removes the template units no other repository's instance uses; it
prints every file it removed. Only files carrying our marker line are written over or
removed.
"""

import argparse
import fnmatch
import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from . import pidfile
from .git import Repo, diagnosis
from .util import OK, Error

HERE = os.path.dirname(os.path.abspath(__file__))
SHARE = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir, os.pardir, "share",
                                      "git-autosync", "systemd"))
SERVICE, SYNC_SERVICE, TIMER = "git-autosync@.service", "git-autosync-sync@.service", \
    "git-autosync-sync@.timer"
MARKER = "managed-by: git-autosync"  # the first line of every unit file we install
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape_path(path: str) -> str:
    """systemd-escape --path, in Python (systemd.unit(5), "String Escaping")."""
    parts = [p for p in os.path.normpath(path).split("/") if p]
    if not parts:
        return "-"
    raw = os.fsencode("/".join(parts))  # (a name that is not UTF-8: its own bytes)
    out = []
    for i, b in enumerate(raw):
        ch = chr(b)
        if ch == "/":
            out.append("-")
        elif b < 0x80 and ch in SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def instance(path: str) -> str:
    tool = shutil.which("systemd-escape")
    if tool:
        res = subprocess.run([tool, "--path", path], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        if res.returncode == 0:
            return res.stdout.strip()
    return escape_path(path)


@dataclass(frozen=True)
class Kind:
    """One way of running autosync under systemd: its template files, the unit enabled per
    repository (from the template `link_to`), and the target whose .wants/ holds its link."""
    templates: tuple[str, ...]
    unit: str  # with {} for the instance name
    link_to: str
    wants: str


DAEMON = Kind((SERVICE,), "git-autosync@{}.service", SERVICE, "default.target.wants")
PERIODIC = Kind((SYNC_SERVICE, TIMER), "git-autosync-sync@{}.timer", TIMER,
                "timers.target.wants")


def unit_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: ignored (the XDG spec; systemd does)
        base = os.path.expanduser("~/.config")
    return os.path.join(base, "systemd", "user")


def link_path(kind: Kind, name: str) -> str:
    """Where `systemctl --user enable` puts the link that starts the unit at login."""
    return os.path.join(unit_dir(), kind.wants, kind.unit.format(name))


def user_manager() -> str | None:
    """systemctl --user works here (a login session with a user manager)."""
    tool = shutil.which("systemctl")
    if not tool:
        return None
    try:
        res = subprocess.run([tool, "--user", "show-environment"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tool if res.returncode == 0 else None


def _ours(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


HASHES = ".git-autosync.sha256"  # in the unit directory: what we wrote last, per unit file


def _hashes() -> dict[str, str]:
    """{unit file name: sha256 of what we wrote there last} (sha256sum's format)."""
    found: dict[str, str] = {}
    try:
        with open(os.path.join(unit_dir(), HASHES)) as f:
            for line in f:
                digest, _, name = line.rstrip("\n").partition("  ")
                if name:
                    found[name] = digest
    except (OSError, ValueError):
        pass
    return found


def _save_hashes(hashes: dict[str, str]) -> None:
    path = os.path.join(unit_dir(), HASHES)
    try:
        if not hashes:
            if os.path.exists(path):
                os.unlink(path)
            return
        with open(path + ".tmp", "w") as f:
            f.writelines(f"{d}  {n}\n" for n, d in sorted(hashes.items()))
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # (then an edit made later is taken for ours: written over, as before)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _edited(name: str, data: bytes | None, hashes: dict[str, str]) -> bool:
    """Whether the user changed a unit file we wrote (it is not what we wrote last)."""
    return data is not None and name in hashes and _digest(data) != hashes[name]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def install_units(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Write the template units (those not there, or ours and out of date): (the paths
    written, the paths kept because their user changed them). A file of that name that
    is not ours is never written over, nor one of ours that its user edited."""
    os.makedirs(unit_dir(), exist_ok=True)
    written: list[str] = []
    kept: list[str] = []
    hashes = _hashes()
    for name in names:
        src = os.path.join(SHARE, name)
        try:
            with open(src, "rb") as f:
                text = f.read()
        except OSError:
            raise Error(f"unit file '{src}' is missing",
                        "make install   (in the git-autosync source tree)") from None
        dst = os.path.join(unit_dir(), name)
        try:
            with open(dst, "rb") as f:
                old: bytes | None = f.read()
        except FileNotFoundError:
            old = None
        except OSError as e:
            raise Error(f"cannot read '{dst}': {(e.strerror or str(e)).lower()}") from None
        if old == text:
            if hashes.get(name) != _digest(text):
                hashes[name] = _digest(text)
                _save_hashes(hashes)
            continue
        if old is not None and MARKER.encode() not in old:
            raise Error(f"'{dst}' exists and is not git-autosync's; not writing over it",
                        f"mv {shlex.quote(dst)} {shlex.quote(dst + '.mine')}   "
                        "(then run this again)")
        if _edited(name, old, hashes):
            kept.append(dst)
            continue
        tmp = dst + ".autosync-tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        except OSError as e:
            raise Error(f"cannot write '{dst}': {(e.strerror or str(e)).lower()}") from None
        written.append(dst)
        hashes[name] = _digest(text)
        _save_hashes(hashes)
    return written, kept


def _link(kind: Kind, name: str) -> bool:
    """Enable by hand, as `systemctl --user enable` does: a symbolic link to the template
    in the target's .wants/ directory. True when it was made now."""
    link, target = link_path(kind, name), os.path.join(unit_dir(), kind.link_to)
    if os.path.islink(link):
        if os.readlink(link) == target:
            return False
        _remove(link)
    elif os.path.lexists(link):
        raise Error(f"'{link}' is not a symbolic link; not touching it")
    try:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, link)
    except OSError as e:
        raise Error(f"cannot make '{link}': {(e.strerror or str(e)).lower()}") from None
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise Error(f"cannot remove '{path}': {(e.strerror or str(e)).lower()}") from None


def _in_use(kind: Kind) -> bool:
    """Whether any repository's instance of kind is enabled (a link in a .wants/ or
    .requires/ directory of the unit directory)."""
    pattern = kind.unit.format("*")
    try:
        dirs = [d for d in os.listdir(unit_dir()) if d.endswith((".wants", ".requires"))]
    except OSError:
        return False
    for d in dirs:
        try:
            names = os.listdir(os.path.join(unit_dir(), d))
        except OSError:
            continue
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return True
    return False


def _systemctl(systemctl: str, args: list[str], unit: str, check: bool = True) -> bool:
    try:
        res = subprocess.run([systemctl, "--user", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise Error(f"'systemctl --user {' '.join(args)}' did not finish within 60 s",
                    f"journalctl --user -u '{unit}'") from None
    if check and res.returncode != 0:
        raise Error(f"'systemctl --user {' '.join(args)}' failed: "
                    f"{diagnosis(res.stdout) or f'exit status {res.returncode}'}",
                    f"journalctl --user -u '{unit}'")
    return res.returncode == 0


def repository(path: str, action: str) -> str:
    """The work tree whose units `action` is about, by its real path (the one git works
    in, whatever symbolic link led there). A directory that is gone or no longer a
    repository (a repository deleted before its unit was disabled) can still be
    disabled, by its path."""
    path = os.path.abspath(os.path.expanduser(path))
    if action == "disable":
        try:
            repo = Repo(path)
        except Error:
            return os.path.realpath(path)
    else:
        repo = Repo(path)
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository: its hook does the work, "
                    "no unit needed")
    return os.path.realpath(repo.work_tree)


def spellings(path: str) -> list[str]:
    """The paths a unit for the repository at path may have been named after: its real
    path, and the path as given when a symbolic link leads there (older versions named
    the unit after that)."""
    given = os.path.abspath(os.path.expanduser(path))
    try:
        top = Repo(given).top or given
    except Error:
        top = given
    return list(dict.fromkeys([os.path.realpath(top), top, given]))


def disable_all(path: str, top: str, timer: bool = False) -> list[str]:
    """disable() for top and for every other spelling of path that has a unit enabled."""
    lines = disable(top, timer)
    for other in spellings(path):
        if other != top and enabled(other):
            more = disable(other, timer)
            lines = [line for line in lines if not line.endswith("nothing to remove")] + more
    return lines


def enable(top: str, timer: bool = False) -> list[str]:
    """Install and enable the unit for the work tree top (the daemon, or the timer) and
    start it; the lines to print. While a daemon started by hand (`git autosync start`)
    runs there, the daemon's unit is enabled for the next login but not started now."""
    running = bool(pidfile.running_pid(Repo(top)))
    kind = PERIODIC if timer else DAEMON
    name = instance(top)
    unit = kind.unit.format(name)
    written, kept = install_units(kind.templates)
    systemctl = user_manager()
    lines: list[str] = []
    if systemctl is not None:
        _systemctl(systemctl, ["daemon-reload"], unit)
        now = timer or not running or _systemctl(systemctl, ["is-active", "--quiet", unit],
                                                 unit, check=False)
        _systemctl(systemctl, ["enable", *(["--now"] if now else []), unit], unit)
        lines.append(f"enabled {unit}: " + ("started now and at every login" if now else
                     "it starts at the next login (a daemon started by hand runs now; "
                     f"to hand over: git -C {shlex.quote(top)} autosync stop && "
                     f"systemctl --user start {shlex.quote(unit)})"))
    else:
        made = _link(kind, name)
        lines.append(f"enabled {unit} for your next login "
                     f"({'made' if made else 'kept'} {link_path(kind, name)}); no systemd "
                     "user manager is reachable here to start it now, so run this in your "
                     "login session:")
        lines.append(f"  systemctl --user daemon-reload && systemctl --user enable --now "
                     f"{shlex.quote(unit)}")
    if written:
        lines.append("wrote " + ", ".join(written))
    for path in kept:
        lines.append(f"kept {path}: you changed it, so this version's is not written over "
                     f"it (to take it: rm {shlex.quote(path)}, then enable again)")
    return lines


def enabled(top: str) -> bool:
    """Whether a unit of either kind is enabled for the work tree top."""
    return any(os.path.islink(link_path(kind, instance(top))) for kind in (DAEMON, PERIODIC))


def unescape_path(name: str) -> str:
    """The path an instance name was made from (escape_path undone)."""
    raw = bytearray()
    i = 0
    while i < len(name):
        if name.startswith("\\x", i) and len(name) >= i + 4:
            try:
                raw.append(int(name[i + 2:i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        raw += b"/" if name[i] == "-" else name[i].encode()
        i += 1
    return "/" + os.fsdecode(bytes(raw)).lstrip("/")


def _exec_start(path: str) -> str | None:
    """The program a unit file's ExecStart= runs, or None."""
    data = _read(path)
    for line in (data or b"").decode(errors="surrogateescape").splitlines():
        if line.startswith("ExecStart="):
            try:
                words = shlex.split(line[len("ExecStart="):].replace("%%", "%"))
            except ValueError:
                return None
            return words[0].lstrip("-@:+!") if words else None
    return None


def disable_toolkit(program: str) -> list[str]:
    """Disable every repository's unit whose template runs program (a toolkit that is
    being removed: its units would fail at every login), whether or not the repository
    is in the install registry; the lines to print."""
    real = os.path.realpath(program)
    lines: list[str] = []
    for kind in (DAEMON, PERIODIC):
        ran = _exec_start(os.path.join(unit_dir(), kind.templates[0]))
        if ran is None or os.path.realpath(ran) != real:
            continue
        prefix, suffix = kind.unit.split("{}")
        try:
            links = os.listdir(os.path.join(unit_dir(), kind.wants))
        except OSError:
            continue
        for link in sorted(links):
            if link.startswith(prefix) and link.endswith(suffix) and \
                    len(link) > len(prefix) + len(suffix):
                name = link[len(prefix):-len(suffix)]
                lines += disable(unescape_path(name), kind is PERIODIC, name=name)
    return lines


def disable(top: str, timer: bool = False, name: str | None = None) -> list[str]:
    """Stop and disable the work tree top's units (both kinds; timer: the timer only),
    then remove the template units no repository's instance uses any more: what enable
    wrote. The lines to print, naming every file removed. name: the instance name, when
    it is known already."""
    kinds = [PERIODIC] if timer else [DAEMON, PERIODIC]
    name = name or instance(top)
    systemctl = user_manager()
    disabled: list[str] = []
    removed: list[str] = []
    for kind in kinds:
        unit, link = kind.unit.format(name), link_path(kind, name)
        enabled = os.path.islink(link)
        template = os.path.join(unit_dir(), kind.link_to)
        if systemctl is not None and os.path.exists(template) and (
                enabled or _systemctl(systemctl, ["is-active", "--quiet", unit], unit,
                                      check=False)):
            _systemctl(systemctl, ["disable", "--now", unit], unit)  # stops it too
        if os.path.islink(link):  # no manager (or it left the link): as it would do
            _remove(link)
        if enabled:
            disabled.append(unit)
            removed.append(link)
        try:
            os.rmdir(os.path.dirname(link))  # only when empty
        except OSError:
            pass
    hashes = _hashes()
    kept: list[str] = []
    for kind in kinds:
        if _in_use(kind):
            continue
        for t in kind.templates:
            path = os.path.join(unit_dir(), t)
            if _edited(t, _read(path), hashes):
                kept.append(path)
            elif _ours(path):
                _remove(path)
                removed.append(path)
                hashes.pop(t, None)
    _save_hashes(hashes)
    if systemctl is not None and removed:
        _systemctl(systemctl, ["daemon-reload"], kinds[0].unit.format(name))
    if not removed:
        return [f"no git-autosync unit is enabled for '{top}'; nothing to remove"]
    lines = [f"disabled {', '.join(disabled)}" if disabled else
             f"no git-autosync unit was enabled for '{top}'"]
    lines += [f"removed {p}" for p in removed]
    lines += [f"kept {p}: you changed it (rm {shlex.quote(p)} removes it)" for p in kept]
    return lines


def cmd_systemd(args: argparse.Namespace) -> int:
    path = getattr(args, "dir", None) or os.getcwd()
    top = repository(path, args.action)
    if args.action == "enable":
        lines = enable(top, args.timer)
    else:
        lines = disable_all(path, top, args.timer)
    print("\n".join(lines))
    return OK


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="autosync-systemd",
                                 description="Sync a repository at login with a systemd user "
                                             "unit (Type=notify), or stop doing so. The same "
                                             "as 'git -C DIR autosync systemd enable|disable'.")
    ap.add_argument("action", choices=("enable", "disable", "name"))
    ap.add_argument("dir", metavar="DIR")
    ap.add_argument("--timer", action="store_true",
                    help="periodic one-shot sync (every 5 min) instead of the daemon "
                         "(disable: the timer only)")
    args = ap.parse_args(argv)
    top = repository(args.dir, args.action)
    if args.action == "name":
        print(instance(top))
        return 0
    lines = enable(top, args.timer) if args.action == "enable" else \
        disable_all(args.dir, top, args.timer)
    print("\n".join(lines))
    return 0
