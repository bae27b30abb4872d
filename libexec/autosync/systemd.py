"""autosync-systemd: sync a repository at login with a systemd user unit, or stop doing so.

    autosync-systemd enable DIR [--timer]    install the units, enable and start them
    autosync-systemd disable DIR [--timer]   stop and disable them
    autosync-systemd name DIR                print the unit's instance name

The instance name is DIR escaped the way `systemd-escape --path` does it. Without a
reachable user manager (no login session, a container) the units are still written and
the exact command to run later is printed.
"""

import argparse
import os
import shutil
import subprocess

from .git import Repo
from .util import Error

HERE = os.path.dirname(os.path.abspath(__file__))
SHARE = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir, os.pardir, "share",
                                      "git-autosync", "systemd"))
SERVICE, SYNC_SERVICE, TIMER = "git-autosync@.service", "git-autosync-sync@.service", \
    "git-autosync-sync@.timer"
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape_path(path: str) -> str:
    """systemd-escape --path, in Python (systemd.unit(5), "String Escaping")."""
    parts = [p for p in os.path.normpath(path).split("/") if p]
    if not parts:
        return "-"
    text = "/".join(parts)
    out = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif ch in SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out)


def instance(path: str) -> str:
    tool = shutil.which("systemd-escape")
    if tool:
        res = subprocess.run([tool, "--path", path], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        if res.returncode == 0:
            return res.stdout.strip()
    return escape_path(path)


def unit_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "systemd", "user")


def user_manager() -> str | None:
    """systemctl --user works here (a login session with a user manager)."""
    tool = shutil.which("systemctl")
    if not tool:
        return None
    res = subprocess.run([tool, "--user", "show-environment"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, timeout=10)
    return tool if res.returncode == 0 else None


def install_units(names: list[str]) -> None:
    os.makedirs(unit_dir(), exist_ok=True)
    for name in names:
        src = os.path.join(SHARE, name)
        if not os.path.isfile(src):
            raise Error(f"unit file '{src}' is missing", "make install")
        shutil.copyfile(src, os.path.join(unit_dir(), name))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="autosync-systemd",
                                 description="Sync a repository at login with a systemd user "
                                             "unit (Type=notify), or stop doing so.")
    ap.add_argument("action", choices=("enable", "disable", "name"))
    ap.add_argument("dir", metavar="DIR")
    ap.add_argument("--timer", action="store_true",
                    help="periodic one-shot sync (every 5 min) instead of the daemon")
    args = ap.parse_args(argv)
    repo = Repo(os.path.expanduser(args.dir))
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository: its hook does the work, "
                    "no unit needed")
    name = instance(repo.cwd)
    if args.action == "name":
        print(name)
        return 0
    units = [SYNC_SERVICE, TIMER] if args.timer else [SERVICE]
    unit = (f"git-autosync-sync@{name}.timer" if args.timer
            else f"git-autosync@{name}.service")
    if args.action == "enable":
        install_units(units)
    systemctl = user_manager()
    verb = ["enable", "--now"] if args.action == "enable" else ["disable", "--now"]
    if systemctl is None:
        print(f"wrote the units to {unit_dir()}; no systemd user manager is reachable here, "
              f"so run this in your login session:\n"
              f"  systemctl --user daemon-reload && systemctl --user {' '.join(verb)} '{unit}'")
        return 0
    for cmd in (["daemon-reload"], [*verb, unit]):
        res = subprocess.run([systemctl, "--user", *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60)
        if res.returncode != 0:
            raise Error(f"'systemctl --user {' '.join(cmd)}' failed: "
                        f"{(res.stdout.strip().splitlines() or [''])[-1]}",
                        f"journalctl --user -u '{unit}'")
    print(f"{args.action}d {unit}")
    return 0
