"""Every tunable, its default and its parser: the one place where `autosync.*` keys live.

README.md's configuration table documents the same keys; tests/test_config.py checks
that the two agree.
"""

import json
import logging
import os
import re
import shlex
import socket
import stat
import sys
import threading
from typing import Any

from .git import Repo, diagnosis, parse_config_list
from .util import Error, log, printable, read_regular

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
                              "how often to poll the remote when no notification transport "
                              "is connected (five times as seldom when one is)"),
    "autosync.notify": (True, "bool", "desktop notifications for conflicts and failures"),
    "autosync.watcher": ("auto", "choice",
                         "how changes are seen: inotify, poll, or auto (poll on a network or "
                         "FUSE file system)"),
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


# The keys a committed `.autosync` file may set for every clone (README "Shared settings"):
# none names a command, a path, a secret or where this clone pushes. Everything else in the
# file is ignored with one warning; so is a value that does not parse or is out of range.
SHARED_FILE = ".autosync"
SHARED_KEYS = ("autosync.channel", "autosync.mqtt.url", "autosync.mqtt.keepalive",
               "autosync.xmpp.server", "autosync.xmpp.port", "autosync.xmpp.room",
               "autosync.debounce", "autosync.maxDelay", "autosync.ignore",
               "autosync.maxFileSize", "autosync.pollInterval", "autosync.commitMessage")
SHARED_MAX_BYTES = 64 * 1024  # a larger .autosync is not read (a peer wrote it)
# what `git config --list` may say of it: a long subsection name is repeated in every key
# listed, so that 64 KB can list as 500 MB (legitimate files list as less than 2x)
SHARED_MAX_LISTED = 4 * SHARED_MAX_BYTES
SHARED_MAX_PATTERNS = 100  # autosync.ignore patterns (each changed path is matched to all)
# the range a shared number must be in: a peer's file must not make a clone poll its
# remote every second, wait for hours before committing, or commit no file at all
SHARED_RANGE = {"autosync.debounce": (0, 60_000), "autosync.maxDelay": (0, 600_000),
                "autosync.pollInterval": (10, 86_400), "autosync.mqtt.keepalive": (5, 3600),
                "autosync.xmpp.port": (1, 65_535), "autosync.maxFileSize": (1024, 1 << 40)}
# the range a number of this machine's own config must be in: pollInterval 0 had the
# daemon ask the remote in a loop without end (a core's worth of git ls-remote), and one
# past threading.TIMEOUT_MAX (292 years) killed its network thread: it synced no more
LOCAL_RANGE = {"autosync.pollInterval": (1, 366 * 86_400)}
# a shared server is not used when this machine's own config holds a credential for it and
# does not name that server itself: the password would go where a peer chose
CREDENTIALS = {"autosync.mqtt.url": ("autosync.mqtt.username", "autosync.mqtt.passwordFile"),
               "autosync.xmpp.server": ("autosync.xmpp.passwordFile",),
               "autosync.xmpp.port": ("autosync.xmpp.passwordFile",)}


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


# the values a "choice" key takes, the first its default
CHOICES = {"autosync.watcher": ("auto", "inotify", "poll")}


def _parse_choice(value: str, key: str) -> str:
    v = value.strip().lower()
    if v not in CHOICES[key]:
        *first, last = CHOICES[key]
        raise Error(f"bad config value '{value}' for '{key}' (it is {', '.join(first)} "
                    f"or {last})", f"git config {key} {CHOICES[key][0]}")
    return v


_SIZE = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_MS = {"": 1, "ms": 1, "s": 1000}
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


class Config:
    """Typed view of a repository's `autosync.*` keys, with defaults."""

    def __init__(self, repo: Repo, raw: dict[str, list[str]] | None = None,
                 shared: bool = True) -> None:
        """raw: the `git config` entries (default: read them). shared: also read the
        committed `.autosync` (one git process when the work tree has that file, none
        when not); a `git config` value of any scope wins over it."""
        self.repo = repo
        self.raw = repo.config_all() if raw is None else raw
        self.values: dict[str, Any] = {}  # the type follows the key's kind in KEYS
        # what .autosync set that is used here: {key: its values as written in the file}
        self.shared: dict[str, list[str]] = {}
        parsed: dict[str, Any] = {}
        if shared and raw is None:
            parsed = self._read_shared()
        # .autosync's ignore patterns keep out only files not tracked yet, as a .gitignore
        # does: a peer cannot stop this clone's edits of its files from being committed.
        # self["ignore"] is this machine's own (git config), for every file.
        self.shared_ignore: list[str] = parsed.pop("autosync.ignore", [])
        for key, (default, kind, _doc) in KEYS.items():
            found = None if key in parsed else self.raw.get(key.lower())
            self.values[key] = (self._parse(key, kind, found) if found
                                else parsed.get(key, default))
            bounds = LOCAL_RANGE.get(key)
            if found and bounds and not bounds[0] <= self.values[key] <= bounds[1]:
                raise Error(f"config value '{found[-1]}' for '{key}' is not in "
                            f"{bounds[0]}..{bounds[1]} {kind}", f"git config {key} {default}")

    def is_local(self, key: str) -> bool:
        """Whether `git config` sets key (an autosync.channel install wrote as its
        default, still unchanged, does not count: a shared channel replaces it)."""
        found = self.raw.get(key.lower())
        return bool(found) and not (key == "autosync.channel" and found is not None
                                    and found[-1] == _installed_default(self.repo, key))

    def _read_shared(self) -> dict[str, Any]:
        """{key: parsed value} of the entries of HEAD:.autosync that are allowed, valid
        and not set by `git config`; fills self.shared. Warns about the others."""
        entries = read_shared_file(self.repo)
        if not entries:
            return {}
        names = {k.lower(): k for k in KEYS}
        allowed = {k.lower() for k in SHARED_KEYS}
        refused = [names.get(k, k) for k in entries if k not in allowed]
        if refused:
            shown = ", ".join(printable(k[:80]) for k in refused[:8])
            more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
            warn_shared(f"ignoring {shown}{more} (only "
                        f"{', '.join(k[len('autosync.'):] for k in SHARED_KEYS)} are shared)")
        parsed: dict[str, Any] = {}
        for key in SHARED_KEYS:
            found = entries.get(key.lower())
            if not found or self.is_local(key):
                continue
            try:
                value = self._parse(key, KEYS[key][1], found)
                check_shared(key, value)
            except Error as e:
                warn_shared(f"ignoring {key}: {printable(e.message[:200])}")
                continue
            creds = [c for c in CREDENTIALS.get(key, ()) if self.raw.get(c.lower())]
            if creds:
                warn_shared(f"ignoring {key}: {creds[0]} is set here, and this machine's "
                            f"credentials go only to a server its own git config names "
                            f"(hint: git config {key} VALUE)")
                continue
            self.shared[key] = list(found) if KEYS[key][1] == "list" else [found[-1]]
            parsed[key] = value
        return parsed

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
        if kind == "choice":
            return _parse_choice(last, key)
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


def _installed_default(repo: Repo, key: str) -> str | None:
    """The value install set key to because it was unset (its manifest), or None."""
    try:  # (never blocking: whoever can write .git/autosync could put a FIFO there)
        data = json.loads(read_regular(os.path.join(repo.state_dir, "install.json"), 1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    found = data.get("config") if isinstance(data, dict) else None
    value = found.get(key) if isinstance(found, dict) else None
    return value if isinstance(value, str) else None


def read_shared_file(repo: Repo) -> dict[str, list[str]]:
    """The entries of the committed `.autosync` ({} when there is none), as git reads them.

    Read from HEAD (`git config --blob`), never from the work tree: no symbolic link is
    followed and a half-saved edit is never read. A work tree without a regular file
    `.autosync` at its top costs no process; a bare repository reads its HEAD's."""
    blob = f"HEAD:{SHARED_FILE}"
    if repo.top is not None:
        try:
            info = os.lstat(os.path.join(repo.top, SHARED_FILE))
        except OSError:
            return {}
        regular, size = stat.S_ISREG(info.st_mode), info.st_size
    else:  # a bare repository (the server's hook): what HEAD has, told by git
        found = committed_file(repo)
        if found is None:
            return {}
        blob, regular, size = found
    if not regular:
        warn_shared("not read: it is not a regular file")
        return {}
    if size > SHARED_MAX_BYTES:
        warn_shared(f"not read: it is larger than {SHARED_MAX_BYTES // 1024} KiB")
        return {}
    code, out, err = repo.run_limited("config", "--blob", blob, "--list", "-z",
                                      "--no-includes", limit=SHARED_MAX_LISTED)
    if code is None:
        warn_shared(f"not read: git lists more than {SHARED_MAX_LISTED // 1024} KiB of "
                    "settings from it")
        return {}
    if code != 0:
        said = err.decode(errors="replace")
        if "unable to resolve" not in said:  # (not committed yet, or no commit at all)
            warn_shared(f"not read: {diagnosis(said)[:300]}")  # a peer's syntax error
        return {}
    return parse_config_list(out)


def committed_file(repo: Repo) -> tuple[str, bool, int] | None:
    """(object id, whether a regular file, size) of HEAD's .autosync; None when HEAD has
    none (or there is no commit)."""
    res = repo.run("ls-tree", "-z", "-l", "HEAD", "--", SHARED_FILE, check=False)
    entry = res.stdout.decode(errors="replace").split("\0")[0]
    fields, _, name = entry.partition("\t")
    parts = fields.split()
    if res.returncode != 0 or name != SHARED_FILE or len(parts) != 4:
        return None
    mode, kind, oid, size = parts
    regular = kind == "blob" and mode in ("100644", "100755")
    return oid, regular, int(size) if size.isdigit() else 0


def check_shared(key: str, value: Any) -> None:
    """Error when a shared value (parsed already) is out of range or not what key names."""
    bounds = SHARED_RANGE.get(key)
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise Error(f"{value} is not in {bounds[0]}..{bounds[1]}")
    if key == "autosync.channel" and value:
        from .message import channel_ok  # (message imports this module)
        if not channel_ok(value):
            raise Error(f"channel '{value[:200]}' is not a plain name (letters, digits, "
                        ". _ -; 128 at most)")
    if key == "autosync.mqtt.url" and value:
        from .transport import module  # (imports paho: only when the file names a broker)
        module("mqtt").parse_url(value)
    if key in ("autosync.xmpp.server", "autosync.xmpp.room") and value and \
            not re.fullmatch(r"[A-Za-z0-9._@\[\]:-]{1,255}", value):
        raise Error(f"'{value}' is not a host name or a room address")
    if key == "autosync.commitMessage" and (len(value) > 1000 or not all(
            line.isprintable() for line in value.split("\n"))):
        raise Error("not a commit message template of printable text (1000 characters "
                    "at most)")
    if key == "autosync.ignore" and len(value) > SHARED_MAX_PATTERNS:
        raise Error(f"{len(value)} patterns, more than {SHARED_MAX_PATTERNS}")
    if key == "autosync.ignore" and not all(p.isprintable() and len(p) <= 255
                                            for p in value):
        raise Error("not file name patterns of printable text (255 characters at most)")


_warned_lock = threading.Lock()  # publish_once and the bridge read secrets in threads
_warned_secrets: set[str] = set()  # password files already warned about in this process
_warned_shared: set[str] = set()  # .autosync warnings given in this process


def warn_shared(message: str) -> None:
    """`warning: .autosync: <message>`, once per process: on stderr, or in the log when
    there is one (the daemon's)."""
    with _warned_lock:
        if message in _warned_shared:
            return
        _warned_shared.add(message)
    line = f"warning: {SHARED_FILE}: {message}"
    if any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers):
        log.warning("%s", line)
    else:
        print(line, file=sys.stderr)




def no_password(key: str, what: str) -> Error:
    """The error for a password file that is not set (`what`: "broker", "xmpp")."""
    return Error(f"no {what} password: {key} is not set",
                 f"git config {key} ~/.config/git-autosync/{what}-password")


def read_secret(path: str, key: str, what: str) -> bytes:
    """The password in file `path` (autosync.<key>), without its final newline, as bytes.

    `what` names the service in the one-line error ("broker", "xmpp"). A file that its
    group or others may read is used all the same, with one warning per process (as ssh
    does for keys, but without refusing): the fix is one chmod."""
    if not path:
        raise no_password(key, what)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # the file read, whatever a symlink says
            secret = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise Error(f"cannot read the {what} password file '{path}': "
                    f"{(e.strerror or str(e)).lower()}", no_password(key, what).hints[0]) from e
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
