"""Every tunable, its default and its parser: the one place where `autosync.*` keys live.

README.md's configuration table documents the same keys; tests/test_config.py checks
that the two agree.
"""

import os
import re
import shlex
import socket
import stat
import threading
from typing import Any

from .git import Repo
from .util import Error, log

# key (as documented, camelCase) -> (default, kind, one-line description)
KEYS = {
    "autosync.remote": ("origin", "str", "remote to fetch from and push to"),
    "autosync.branch": ("", "str", "branch to sync (empty: the branch checked out)"),
    "autosync.debounce": (1000, "ms", "quiet time before a batch of changes is committed"),
    "autosync.maxDelay": (10000, "ms", "longest wait while changes keep coming"),
    "autosync.push": (True, "bool", "push after committing"),
    "autosync.pull": (True, "bool", "fetch and merge what others pushed"),
    "autosync.channel": ("", "str",
                         "notification channel (empty: the remote's repository name)"),
    "autosync.host": ("", "str", "name of this machine in commit messages (empty: hostname)"),
    "autosync.commitMessage": ("autosync: %(summary) (host %(host))", "str",
                               "commit message template; %(summary), %(host), %(count)"),
    "autosync.maxFileSize": (100 * 1024 * 1024, "size", "larger files are not committed"),
    "autosync.ignore": ([], "list", "extra file name patterns never committed (repeatable)"),
    "autosync.pollInterval": (60, "seconds",
                              "how often to poll the remote when no notification transport"),
    "autosync.notify": (True, "bool", "desktop notifications for conflicts and failures"),
    "autosync.mqtt.url": ("", "str", "broker, mqtt://host:port or mqtts://host:port"),
    "autosync.mqtt.username": ("", "str", "broker user name"),
    "autosync.mqtt.passwordFile": ("", "path", "file holding the broker password"),
    "autosync.mqtt.caFile": ("", "path", "CA certificate for mqtts:// (default: system CAs)"),
    "autosync.mqtt.keepalive": (30, "seconds", "MQTT keepalive interval"),
    "autosync.xmpp.jid": ("", "str", "XMPP account (user@domain) for notifications"),
    "autosync.xmpp.passwordFile": ("", "path", "file holding the XMPP password"),
    "autosync.xmpp.server": ("", "str", "XMPP server host (empty: the JID's domain)"),
    "autosync.xmpp.port": (5222, "int", "XMPP client port"),
    "autosync.xmpp.room": ("", "str", "MUC room JID (empty: the account's own JID)"),
    "autosync.xmpp.caFile": ("", "path", "CA certificate for the XMPP server's STARTTLS"),
    "autosync.xmpp.allowPlaintext": (False, "bool", "allow XMPP without TLS (tests only)"),
    "autosync.xmpp.bridge": (False, "bool", "relay between MQTT and XMPP inside the daemon"),
}


def _parse_bool(value: str, key: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "yes", "on", "1", ""):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    raise Error(f"bad boolean config value '{value}' for '{key}'",
                f"git config {key} true   (or false)")


def _parse_int(value: str, key: str, suffixes: dict[str, int]) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in suffixes:
        raise Error(f"bad numeric config value '{value}' for '{key}'",
                    f"git config {key} {KEYS[key][0]}")
    return int(m.group(1)) * suffixes[m.group(2).lower()]


_SIZE = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_MS = {"": 1, "ms": 1, "s": 1000}
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


class Config:
    """Typed view of a repository's `autosync.*` keys, with defaults."""

    def __init__(self, repo: Repo, raw: dict[str, list[str]] | None = None) -> None:
        self.repo = repo
        self.raw = repo.config_all() if raw is None else raw
        self.values: dict[str, Any] = {}  # the type follows the key's kind in KEYS
        for key, (default, kind, _doc) in KEYS.items():
            found = self.raw.get(key.lower())
            self.values[key] = default if not found else self._parse(key, kind, found)

    def _parse(self, key: str, kind: str, found: list[str]) -> Any:
        last = found[-1]
        if kind == "bool":
            return _parse_bool(last, key)
        if kind == "ms":
            return _parse_int(last, key, _MS)
        if kind == "int":
            return _parse_int(last, key, {"": 1})
        if kind == "seconds":
            return _parse_int(last, key, _SECONDS)
        if kind == "size":
            return _parse_int(last, key, _SIZE)
        if kind == "list":
            return [v for v in found if v]
        if kind == "path":
            return os.path.expanduser(last)
        return last

    def __getitem__(self, short: str) -> Any:
        return self.values["autosync." + short]

    def other(self, key: str, default: str | None = None) -> str | None:
        """A non-autosync key (e.g. remote.origin.url), last value wins."""
        found = self.raw.get(key.lower()) or self.raw.get(key)
        return found[-1] if found else default

    # -- derived values ------------------------------------------------------------
    @property
    def host(self) -> str:
        return self["host"] or socket.gethostname().split(".")[0] or "localhost"

    @property
    def branch(self) -> str:
        b = self["branch"] or self.repo.current_branch()
        if not b:
            raise Error("HEAD is detached and autosync.branch is not set",
                        f"git -C {shlex.quote(self.repo.cwd)} switch main   "
                        "(or git config autosync.branch NAME)")
        return b

    @property
    def remote(self) -> str:
        return self["remote"]

    def remote_url(self) -> str | None:
        return self.other(f"remote.{self.remote}.url")

    @property
    def channel(self) -> str:
        return self["channel"] or default_channel(self.repo, self.remote_url())

    @property
    def has_remote(self) -> bool:
        return bool(self.remote_url())


_warned_secrets: set[str] = set()  # password files already warned about in this process
_warned_lock = threading.Lock()  # publish_once and the bridge read secrets in threads


def read_secret(path: str, key: str, what: str) -> bytes:
    """The password in file `path` (autosync.<key>), without its final newline, as bytes.

    `what` names the service in the one-line error ("broker", "xmpp"). A file that its
    group or others may read is used all the same, with one warning per process (as ssh
    does for keys, but without refusing): the fix is one chmod."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # the file read, whatever a symlink says
            secret = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise Error(f"cannot read the {what} password file '{path}': "
                    f"{(e.strerror or str(e)).lower()}",
                    f"git config {key} ~/.config/git-autosync/{what}-password") from e
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warn_readable_secret(path)
    return secret


def warn_readable_secret(path: str | os.PathLike[str]) -> None:
    """`warning: '<file>' is readable by others; hint: chmod 600 '<file>'`, once per file.

    One line (the daemon's log is one line per event), so the fix is never separated
    from the warning whichever log it lands in."""
    path = os.fspath(path)
    seen = os.path.abspath(path)
    with _warned_lock:
        if seen in _warned_secrets:
            return
        _warned_secrets.add(seen)
    quoted = "'" + path.replace("'", "'\\''") + "'"  # as typed into a shell, always quoted
    log.warning("warning: '%s' is readable by others; hint: chmod 600 %s", path, quoted)


def default_channel(repo: Repo, remote_url: str | None = None) -> str:
    """The repository's name: `notes` for `/srv/notes.git` and for its clones.

    A clone takes the name from its remote's URL so that it matches the server's
    name even when the clone's directory is called something else.
    """
    if repo.bare:
        base = os.path.basename(repo.common_dir.rstrip("/"))
        if base == ".git":
            base = os.path.basename(os.path.dirname(repo.common_dir.rstrip("/")))
    elif remote_url:
        base = re.split(r"[/:\\]", remote_url.rstrip("/"))[-1]
    else:
        base = os.path.basename(repo.cwd)  # the work tree (top)
    base = base[:-4] if base.endswith(".git") else base
    return sanitize_channel(base) or "default"


def sanitize_channel(name: str) -> str:
    """Channel names are MQTT topic levels: no wildcards, no empty levels."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("_")
