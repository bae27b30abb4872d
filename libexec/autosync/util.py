"""Messages in git's style, exit codes, logging and small shared helpers."""

import logging
import os
import sys
import threading
import time
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


def warn(message: str, *hints: str) -> None:
    """Warn the way git does; also goes to the log when one is set up."""
    log.warning(message)
    if not _logging_to_stderr():
        print(f"warning: {message}", file=sys.stderr)
        for h in hints:
            print(f"hint: {h}", file=sys.stderr)


def _logging_to_stderr() -> bool:
    return any(getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers)


def setup_logging(path: str | None = None, verbose: bool = False) -> None:
    """Log to a file (daemon) or stderr; one timestamped line per event."""
    handler: logging.Handler = (logging.FileHandler(path) if path
                                else logging.StreamHandler(sys.stderr))
    fmt = ("%(asctime)s.%(msecs)03d %(levelname)s %(message)s" if path
           else f"{PROG}: %(message)s")
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
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
        if logging.getLogger().handlers:  # the log file; never a traceback on the terminal
            log.exception("internal error")
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
