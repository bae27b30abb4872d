"""Messages in git's style, exit codes, logging and small shared helpers."""

import errno
import logging
import math
import os
import stat
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import NoReturn

PROG = "git-autosync"

# Exit codes (README "Exit codes"). RETRY means "nothing is wrong with your setup,
# try again later" (network, broker, a lock held by someone else); HUMAN means the
# situation needs a person (bad config, a merge the user started, not a repository).
OK = 0
HUMAN = 1
USAGE = 2
NOT_RUNNING = 3
RETRY = 75  # EX_TEMPFAIL

log = logging.getLogger("autosync")


class Error(Exception):
    """A failure to report to the user as one line plus optional hints.

    code is one of the exit codes above; hints are exact commands or short advice.
    """

    def __init__(self, message: str, *hints: str, code: int = HUMAN) -> None:
        super().__init__(message)
        self.message = message
        self.hints = list(hints)
        self.code = code

    def render(self) -> str:
        lines = [f"{PROG}: {self.message}"]
        lines += [f"hint: {h}" for h in self.hints]
        return "\n".join(lines)


class Retry(Error):
    """A failure that goes away by itself (network, broker, a busy lock)."""

    def __init__(self, message: str, *hints: str) -> None:
        super().__init__(message, *hints, code=RETRY)


# A full disk, a quota, a read-only file system: nothing is wrong with the set-up, and the
# operation works again once there is space (README "Exit codes": 75, retry later).
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OSFailure(Error, OSError):
    """An OSError said as an Error (one line; code that catches OSError still does)."""


class OSRetry(Retry, OSError):
    """An OSError that goes away by itself (a full disk), said as a Retry."""


def os_error(e: OSError, what: str) -> Error:
    """An OSError met while doing `what` ("cannot create 'PATH'") as the Error to raise:
    Retry for a full disk, a quota or a read-only file system, else one that needs a human.
    It is an OSError too, with e's errno, for code that handles those."""
    reason = e.strerror or str(e)
    said: Error
    if e.errno in _FULL_ERRNOS:
        said = OSRetry(f"{what}: {reason}",
                       *(["free some disk space; autosync retries by itself"]
                         if e.errno != errno.EROFS else []))
    else:
        said = OSFailure(f"{what}: {reason}")
    said.errno, said.strerror, said.filename = e.errno, e.strerror, e.filename
    return said


_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v",
              "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _unsafe(c: str) -> bool:
    """A character that must not reach a terminal as it is: a control (C0, DEL, C1), a
    format character (bidi overrides, zero-width), a line or paragraph separator, or a
    byte that is not UTF-8 (a surrogate escape)."""
    return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") and c not in _JOINERS


_JOINERS = "\u200c\u200d"  # zero-width (non-)joiner: part of emoji and of several scripts


def shown(path: str) -> str:
    """A path as it is printed to the user, quoted like git's core.quotePath: unchanged
    when it is plain, else in double quotes with C escapes (\\t, \\n, \\", \\\\) and the
    octal UTF-8 bytes of every control or format character and of every byte that is not
    UTF-8; readable letters of any script stay as they are (git's quotePath=false)."""
    if not any(_unsafe(c) or c in '"\\' for c in path):
        return path
    out = []
    for c in path:
        if c in _C_ESCAPES:
            out.append(_C_ESCAPES[c])
        elif _unsafe(c):
            raw = os.fsencode(c) if "\udc80" <= c <= "\udcff" else c.encode(
                "utf-8", "surrogatepass")
            out.append("".join(f"\\{b:03o}" for b in raw))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def printable(text: str) -> str:
    """text with every control or format character but newline and tab made '?': for a
    message that holds what a peer or a server wrote (a log line, git's diagnosis)."""
    return "".join("?" if c not in "\n\t" and _unsafe(c) else c for c in text)


def read_regular(path: str, limit: int) -> bytes:
    """The whole content of a small regular file that a reader must not trust: never
    through a symbolic link, never blocking on a FIFO or a device, never more than limit
    bytes. OSError when it cannot be read, ValueError when it is not such a file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"'{path}' is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"'{path}' is larger than {limit} bytes")
    finally:
        os.close(fd)


def unlink_if_there(path: str) -> None:
    """Remove a file; one that is gone already is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_number(value: object) -> bool:
    """A finite int or float from JSON (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def warn(message: str, *hints: str) -> None:
    """Warn the way git does; also goes to the log when one is set up."""
    log.warning(message)
    if not _logging_to_stderr():
        print(f"warning: {message}", file=sys.stderr)
        for h in hints:
            print(f"hint: {h}", file=sys.stderr)


def _logging_to_stderr() -> bool:
    return any(getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers)


class _Printable(logging.Formatter):
    """Log lines hold what peers and servers wrote (file names, git's stderr): no control
    or format character of theirs reaches the log or the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def setup_logging(path: str | None = None, verbose: bool = False) -> None:
    """Log to a file (daemon) or stderr; one timestamped line per event."""
    try:
        handler: logging.Handler = (logging.FileHandler(path) if path
                                    else logging.StreamHandler(sys.stderr))
    except OSError as e:
        raise os_error(e, f"cannot open the log '{path}'") from None
    fmt = ("%(asctime)s.%(msecs)03d %(levelname)s %(message)s" if path
           else f"{PROG}: %(message)s")
    handler.setFormatter(_Printable(fmt, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.raiseExceptions = False  # a log on a full disk must not print tracebacks
    logging.getLogger("paho").setLevel(logging.WARNING)


def run_main(func: Callable[[list[str]], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run an entry point: an Error becomes its message and exit code, never a traceback."""
    try:
        code = func(sys.argv[1:] if argv is None else argv)
    except Error as e:
        log.debug("exiting: %s", e.message)
        print(e.render(), file=sys.stderr)
        code = e.code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = OK
    except ModuleNotFoundError as e:  # a damaged or foreign python environment
        print(f"{PROG}: python module '{e.name}' is missing from {sys.executable}",
              file=sys.stderr)
        print("hint: make install   (in the git-autosync source tree; it rebuilds the "
              "private environment)", file=sys.stderr)
        code = HUMAN
    except Exception as e:  # last resort: one line, details only in the log
        if logging.getLogger().handlers and not _logging_to_stderr():
            log.exception("internal error")  # the log file; never a traceback on the terminal
        print(f"{PROG}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: run again with GIT_AUTOSYNC_DEBUG=1 for details", file=sys.stderr)
        if os.environ.get("GIT_AUTOSYNC_DEBUG"):
            raise
        code = HUMAN
    sys.exit(code or OK)


class Backoff:
    """The one retry policy (the sync engine's steps, the daemon's commits and merges, the
    transports' reconnects): 1, 2, 4 ... 60 seconds between attempts; reset on success."""

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first, self.cap = first, cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * (2 ** self.failures))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def announce_within(timeout: float, work: Callable[[], str | None], silence: str) -> bool:
    """Run work() (None on success, else what went wrong) for at most timeout seconds.

    The work runs in a daemon thread that is abandoned at the deadline, so a name lookup,
    a TLS handshake or a server that never answers cannot hold up a hook. A problem
    (or `silence`, when the deadline passed) costs one log line. True on success."""
    outcome: list[str | None] = []
    worker = threading.Thread(target=lambda: outcome.append(work()), name="autosync-announce",
                              daemon=True)
    worker.start()
    worker.join(timeout)
    problem = outcome[0] if outcome else silence
    if problem:
        log.warning("%s; the clones will see the change at their next fetch", problem)
    return problem is None


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0
