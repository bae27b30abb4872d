"""`git autosync run`: watch, commit, push, listen, fetch, integrate - until SIGINT/SIGTERM.

The steps are the sync engine's (sync.py); this file decides when each one runs.

    notification transport thread     network thread                main thread
    (MQTT or XMPP)                    (owns the remote's schedule)  (owns all state)
      valid note --announce(commit)-->  fetch ------- "fetched" -->  integrate, then
                                        push  ------- "pushed"  -->    request push
                                        failures ---- "failed"  -->  status, log
                                          ^                           watcher -> commit
                                          +------- request("push") ------+

Only the main thread changes the work tree, the branch and the daemon's state (state.json);
the network thread runs the requests it is given, one at a time, and posts each result as
an event, waking the main thread through the watcher's wakeup pipe. Nothing polls while
idle, except the remote itself: every autosync.pollInterval seconds while no notification
transport is connected, and CONNECTED_POLLS times as seldom while one is (a notification
that never came - its sender died between its push and its announcement - is late, not lost).
"""

import argparse
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import checks, pidfile
from .config import Config
from .git import Repo
from .message import Notification
from .notify import desktop, sd_notify
from .sync import Engine, Pushed, Rejected, Remote, check_branch
from .transport import make_transport
from .transport_base import Transport
from .util import Backoff, Error, Retry, log, setup_logging
from .watch import SAVE_SPAN, Batch, make_watcher, start_watcher

if TYPE_CHECKING:  # (imported by a daemon that bridges, when it starts: see _start)
    from .bridge import Bridge

EVERYTHING = Batch(set(), True)  # a batch standing for every change in the work tree
QUIET = 60.0  # seconds after announcements that fetched nothing when the remote is asked first
# The branch follows the clones' own refs: the clone that leads (sync.Remote.leads) folds
# them and moves it LEAD_DELAY seconds after its last push (LEAD_MAX after the first that left
# it behind); the others fast-forward to it. A clone that finds B stuck LEADER_GRACE seconds
# (no move meanwhile) folds and moves it itself: the leader went away.
LEAD_DELAY = 0.3
LEAD_MAX = 2.0
LEADER_GRACE = 5.0
CONNECTED_POLLS = 5  # with notifications on, the remote is asked every 5 pollIntervals
WRITING_WAIT = 0.1  # seconds between looks at a file being written before a merge


def join(a: Batch | None, b: Batch | None) -> Batch | None:
    """One batch holding everything two batches (either may be None) hold."""
    if a is None or b is None:
        return a or b
    return Batch(a.paths | b.paths, a.full or b.full)


class State:
    """What `git autosync status` shows: $GIT_DIR/autosync/state.json, written by the
    main thread only, and only when something in it changed. `read` is its one reader."""

    DEFAULTS: dict[str, Any] = {
                "pid": None, "started": None, "last_commit": None, "last_push": None,
                "last_pull": None, "push_error": None, "pull_error": None, "transport": None,
                "transport_connected": False, "transport_error": None, "pending": 0,
                "conflicts": [], "skipped_large": [], "nested": [], "error": None,
                "refused": None, "kept": [], "held": [], "watcher": None}

    def __init__(self, repo: Repo) -> None:
        self.path = os.path.join(repo.state_dir, "state.json")
        self.save_failed = False
        self.data = dict(self.DEFAULTS)

    @classmethod
    def read(cls, repo: Repo) -> dict[str, Any]:
        """The state a daemon wrote last (the defaults where there is none). Read like a
        file anyone could have put there: a regular file of at most 1 MiB (never a FIFO,
        never through a symbolic link), each key of the type its default has (numbers
        finite), else that key's default."""
        from . import pushlog  # (here: the imports above are another's to edit)
        from .util import is_number, read_regular

        def opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
            return lambda v: v is None or check(v)

        def strings(*keys: str) -> Callable[[Any], bool]:
            return lambda v: isinstance(v, list) and all(
                isinstance(i, dict) and all(isinstance(i.get(k), str) for k in keys)
                if keys else isinstance(i, str) for i in v)

        text = opt(lambda v: isinstance(v, str))
        number = opt(is_number)
        kinds: dict[str, Callable[[Any], bool]] = {
            "pid": opt(lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
            "started": number, "last_pull": number,
            "last_commit": opt(lambda v: isinstance(v, dict) and isinstance(
                v.get("commit"), str) and is_number(v.get("time")) and isinstance(
                v.get("message"), str)),
            "last_push": opt(lambda v: pushlog.valid(v) is not None),
            "push_error": text, "pull_error": text, "transport": text,
            "transport_error": text, "error": text, "watcher": text,
            "transport_connected": lambda v: isinstance(v, bool),
            "pending": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "conflicts": lambda v: isinstance(v, list) and all(
                isinstance(i, dict) and isinstance(i.get("path"), str) for i in v),
            "skipped_large": strings(), "nested": strings(), "held": strings(),
            "kept": strings("path", "where"),
            "refused": opt(lambda v: isinstance(v, dict) and isinstance(v.get("reason"), str)),
        }
        data = dict(cls.DEFAULTS)
        try:
            found = json.loads(read_regular(os.path.join(repo.state_dir, "state.json"),
                                            1 << 20))
        except (OSError, ValueError, RecursionError):
            return data
        if isinstance(found, dict):  # (a key not in kinds: of its default's type)
            data.update({k: v for k, v in found.items() if k in cls.DEFAULTS and kinds.get(
                k, lambda v, d=cls.DEFAULTS[k]: d is not None and type(v) is type(d))(v)})
        return data

    def update(self, **changes: Any) -> None:
        if any(self.data.get(k) != v for k, v in changes.items()):
            self.data.update(changes)
            self.save()

    def add_to(self, key: str, items: list[Any], limit: int = 50) -> None:
        merged = self.data[key] + [i for i in items if i not in self.data[key]]
        self.update(**{key: merged[-limit:]})

    def save(self) -> None:
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk must not stop the daemon; status is stale meanwhile
            if not self.save_failed:
                log.warning("cannot write '%s': %s", self.path, e.strerror)
            self.save_failed = True
        else:
            self.save_failed = False


@dataclass
class Failure:
    step: str  # "fetch" or "push"
    error: Error
    attempts: int
    delay: float


class Network(threading.Thread):
    """Runs the engine's fetch and push, one at a time, on request; posts what happened.

    Requests: "fetch" (catch up), "push" (a new commit; "branch" also moves the branch
    when the clone that leads did not, see sync.Remote.leads; "takeover" at once, after a
    fold made in its stead), and announced commits (a
    notification: fetched unless already here, checked once per batch, with the remote's
    refs asked first during a burst of announcements that brought nothing). It owns the
    remote's schedule: polling while no transport is connected, and the retry policy."""

    def __init__(self, engine: Engine, post: Callable[[str, Any], None],
                 transport_connected: Callable[[], bool]) -> None:
        super().__init__(name="autosync-network", daemon=True)
        self.engine = engine
        self.post = post
        self.transport_connected = transport_connected
        self.cond = threading.Condition()
        self.wanted: set[str] = set()
        self.announced: set[str] = set()  # commits notifications named since the last batch
        self.last_empty_fetch = 0.0
        self.asked: set[str] = set()  # the announced commits the last fetch was for
        self.last_tips: list[str] | None = None  # as the last fetch left them (this clone's
        # pushes move its own: a fetch after one counts as bringing something)
        self.stopping = False
        self.backoff = Backoff()
        self.retry_at: float | None = None
        self.failures = 0
        self.interval = engine.config["pollInterval"]
        self.poll_due = time.monotonic() + self.interval if engine.pulls else None
        self.checked = time.monotonic()  # when the remote was last fetched from or asked
        self.branch_due: float | None = None  # when to move the branch to a merge (`LEAD_DELAY`)
        self.announced_at = 0.0  # announced commits are not fetched before
        self.branch_mode = "lead"
        self.pushed_at = 0.0  # monotonic time of the last push that pushed something
        self.behind_since: float | None = None  # since when B lacks this clone's commit
        self.behind_main: str | None = None  # ... and has been at this commit

    def request(self, *kinds: str) -> None:
        with self.cond:
            self.wanted.update(kinds)
            self.cond.notify()

    def announce(self, commit: str) -> None:
        """A notification named commit (a set operation: a flood costs no process)."""
        with self.cond:
            if len(self.announced) < 1000:
                self.announced.add(commit)
            self.wanted.add("announced")
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _take(self) -> set[str] | None:
        """Block until there is work and no backoff is running; None when stopping."""
        with self.cond:
            while not self.stopping:
                now = time.monotonic()
                if self.poll_due is not None and now >= self.poll_due:
                    self.poll_due = now + self.interval
                    unasked = now >= self.checked + CONNECTED_POLLS * self.interval
                    if unasked or not self.transport_connected():
                        self.wanted.add("poll")
                if self.branch_due is not None and now >= self.branch_due:
                    self.branch_due = None
                    self.wanted.add("branch")
                paced = self.wanted == {"announced"} and now < self.announced_at
                if self.wanted and not paced and (self.retry_at is None or now >= self.retry_at):
                    wanted, self.wanted = self.wanted, set()
                    return wanted
                deadlines = [t for t in (self.retry_at if self.wanted else None, self.poll_due,
                                         self.branch_due, self.announced_at if paced else None)
                             if t is not None]
                self.cond.wait(max(0.0, min(deadlines) - now) if deadlines else None)
            return None

    def run(self) -> None:
        while (wanted := self._take()) is not None:
            try:
                self.work(wanted)
            except (Retry, Error) as e:
                delay = self.backoff.next_delay()
                self.failures += 1
                self.retry_at = time.monotonic() + delay
                with self.cond:  # what was announced is fetched, once the remote is back
                    self.wanted.update(wanted | ({"fetch"} if "announced" in wanted else set()))
                self.post("failed", Failure("push" if "push" in wanted else "fetch", e,
                                            self.failures, delay))
            else:
                self.backoff.reset()
                self.retry_at = None
                self.failures = 0

    def work(self, wanted: set[str]) -> None:
        engine, remote = self.engine, self.engine.remote
        if remote is None:  # nothing to talk to: local commits only
            return
        # own commits first: they reach the others sooner, and a push is never in the
        # way of a fetch (this clone's ref is its own)
        if wanted & {"push", "branch", "takeover"} and engine.pushes:
            mode = ("any" if "takeover" in wanted else
                    self.branch_mode if "branch" in wanted else
                    # a lone save moves B in the same push when this clone leads; a save
                    # in a burst leaves B to follow() (LEAD_DELAY after the burst)
                    "lead" if time.monotonic() - self.pushed_at > LEAD_DELAY else "own")
            if mode == "any" and remote.probe().get(remote.tracking_ref) != remote.tracking():
                self.request("fetch")  # B moved meanwhile: bring that in, then lead again
                mode = "own"
            try:
                pushed = remote.push(mode)
            except Rejected:  # integrating what it has asks for the next push
                log.info("push rejected: '%s' has commits of this clone's it does not have; "
                         "fetching first", remote.name)
                wanted = wanted | {"fetch"}
            else:
                if pushed.commit or pushed.branch:
                    self.pushed_at = time.monotonic()
                engine.announce(pushed)
                self.post("pushed", pushed)
                self.follow(pushed)
                if pushed.lost_race:
                    wanted = wanted | {"fetch"}
        fetch = engine.pulls and self._should_fetch(remote, wanted)
        if fetch or "poll" in wanted:
            self.checked = time.monotonic()
        if fetch:
            before = self.last_tips if self.last_tips is not None else list(
                remote.tips().values())
            started = time.monotonic()
            fetched = remote.fetch()
            self.last_tips = fetched.tips
            # the next announcement waits twice as long as this fetch took: nothing on an
            # idle machine, and a busy one brings several commits in at once
            self.announced_at = time.monotonic() + min(1.0, 2 * (time.monotonic() - started))
            if sorted(set(fetched.tips)) != sorted(set(before)):
                self.last_empty_fetch = 0.0  # announcements are trusted again
            elif "fetch" not in wanted and engine.repo.missing_commits(self.asked):
                # announced commits that were not there (not: ones a git gc had packed)
                self.last_empty_fetch = time.monotonic()
            self.post("fetched", fetched)

    def follow(self, pushed: Pushed) -> None:
        """When to move B to this clone's commit: soon (LEAD_DELAY after the last push,
        at most LEAD_MAX after the first) when this clone leads; LEADER_GRACE after the
        first push that left it behind when not (the clone that leads went away)."""
        now = time.monotonic()
        if not pushed.waiting or pushed.lost_race:  # done; or B moved: start again
            self.behind_since = None
            self.branch_due = None
            return
        if self.behind_since is None or pushed.main != self.behind_main:
            # B moved since: the clone that leads is at work, the grace starts again
            self.behind_since, self.behind_main = now, pushed.main
        if pushed.leads:
            self.branch_mode = "lead"
            self.branch_due = min(now + LEAD_DELAY, self.behind_since + LEAD_MAX)
        else:
            self.branch_mode = "any"
            self.branch_due = self.behind_since + LEADER_GRACE

    def _should_fetch(self, remote: Remote, wanted: set[str]) -> bool:
        if "fetch" in wanted:
            return True
        if "announced" in wanted:
            with self.cond:
                commits, self.announced = self.announced, set()
            self.asked = commits
            if self.engine.repo.unknown(commits):  # (no process)
                # fetched at once, unless announced commits fetched nothing in the last
                # minute: then the remote's refs are asked first (made-up ids cost that,
                # whether they come as a flood or a drip)
                return time.monotonic() - self.last_empty_fetch > QUIET or remote.moved()
        if "poll" in wanted:
            return remote.moved()
        return False


class Daemon:
    def __init__(self, repo: Repo, ready_hook: Callable[[], None] | None = None,
                 config: Config | None = None) -> None:
        self.repo = repo
        self.engine = Engine(repo, config)
        self.config = cfg = self.engine.config
        check_branch(repo, cfg)
        self.ready_hook = ready_hook
        self.stopping = False
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.state = State(repo)
        self.watcher = make_watcher(repo, cfg)  # (started by _start, which may replace it)
        self.transport = self._transport()
        self.bridge: Bridge | None = None
        self.network = Network(self.engine, self.post,
                               lambda: self.transport is not None and self.transport.connected)
        self.announce_log_due, self.announce_quiet = 0.0, 0  # one INFO line per 10 s
        self.seen: set[str] = set()  # commits announced already (the transport's thread's)
        self.backoff = Backoff()  # for commits and merges that could not be done yet
        self.retry_due = 0.0
        self.carry: Batch | None = None  # not committed yet (a busy lock, a full disk)
        self.pending_tips: list[str] | None = None  # fetched, not integrated yet
        self.held_since: float | None = None  # a merge waits for a save since (integrate)
        self.branch_tip: str | None = None  # B's commit, as of the last fetch
        self.waited: tuple[str, float] | None = None  # a commit left to another clone's
        # fold, and since when (see patient)
        self.patience = LEADER_GRACE  # how long it may wait
        self.lost_with: str | None = None  # why the transport was lost last (logged once)

    def _transport(self) -> Transport | None:
        if self.engine.remote is None:
            return None
        try:
            transport = make_transport(self.config, self.engine.sender, self.on_notification,
                                       lambda: self.network.request("fetch"))
        except Error as e:  # e.g. an unreadable password file: keep syncing by polling
            log.warning("%s; polling every %ss instead", e.message, self.config["pollInterval"])
            self.state.data["transport_error"] = e.message
            return None
        if transport is not None:
            transport.on_change = self.wakeup  # status follows at once
            self.engine.publish = transport.publish
        return transport

    # -- the other threads' side ------------------------------------------------------------
    def post(self, kind: str, value: Any = None) -> None:
        """Hand an event to the main thread and wake it."""
        self.events.put((kind, value))
        self.wakeup()

    def wakeup(self) -> None:
        """Wake the main thread (any thread, a signal handler): through the watcher of the
        moment, as _start may replace the first one (it keeps the same wakeup pipe)."""
        self.watcher.wakeup()

    def on_notification(self, note: Notification) -> None:
        """On the transport's thread: nothing here starts a process or writes a line per
        message, so a flood of notifications costs set operations; the network thread
        looks at what was announced once per batch."""
        if note.commit in self.seen:
            return
        if len(self.seen) >= 10000:
            self.seen.clear()
        self.seen.add(note.commit)
        now = time.monotonic()
        if now >= self.announce_log_due:
            more = f" (and {self.announce_quiet} more)" if self.announce_quiet else ""
            log.info("%s announced %s%s", note.sender, note.commit[:10], more)
            self.announce_log_due, self.announce_quiet = now + 10.0, 0
        else:
            log.debug("%s announced %s", note.sender, note.commit[:10])
            self.announce_quiet += 1
        self.network.announce(note.commit)

    # -- main loop ----------------------------------------------------------------------------
    def desktop(self, summary: str, body: str) -> None:
        if self.config["notify"]:
            desktop(summary, body)

    def run(self) -> int:
        lockfd = pidfile.acquire(self.repo)
        try:
            self._run()
        finally:
            os.close(lockfd)
        return 0

    def _signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True
            self.wakeup()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, lambda s, f: self.network.request("push"))

    def _start(self) -> None:
        cfg, remote = self.config, self.engine.remote
        self.repo.ensure_state_dir()
        self.state.update(pid=os.getpid(), started=time.time(),
                          transport=self.transport.describe() if self.transport else None)
        self._signals()
        # watch first, then catch up: nothing falls in between. (With autosync.watcher=auto,
        # a watcher that cannot use inotify after all gives way to polling.)
        self.watcher = start_watcher(self.watcher)
        self.state.update(watcher=self.watcher.describe())
        self.commit(EVERYTHING)
        if cfg["xmpp.bridge"]:
            from .bridge import Bridge  # both transports: for a daemon that bridges only
            try:
                self.bridge = Bridge(cfg)
                self.bridge.start()
            except Error as e:  # a bad bridge setup must not stop the syncing
                log.warning("%s; not bridging", e.message)
                self.bridge = None
        if self.transport is not None:
            self.transport.start()
        if remote is not None:
            self.network.request("fetch", "push")
        self.network.start()
        sd_notify("READY=1\nSTATUS=watching " + self.repo.cwd)
        log.info("watching %s (branch %s, remote %s, %s; watcher %s)", self.repo.cwd,
                 cfg.branch, cfg.remote if remote else "none",
                 self.transport.describe() if self.transport else
                 f"polling every {cfg['pollInterval']}s" if remote else "local only",
                 self.watcher.describe())
        if self.ready_hook:
            self.ready_hook()

    def _run(self) -> None:
        self._start()
        try:
            while not self.stopping:
                batch = self.watcher.wait(timeout=self._wait_interval())
                if self.carry is not None and (batch is not None
                                               or time.monotonic() >= self.retry_due):
                    batch, self.carry = join(self.carry, batch), None
                if batch is not None:
                    self.commit(batch)
                self.handle_events()
                if self.pending_tips is not None and time.monotonic() >= self.retry_due:
                    self.integrate(self.pending_tips)
                self.watch_transport()
                self.state.update(pending=self.watcher.pending())
        finally:
            self._stop()

    def _stop(self) -> None:
        sd_notify("STOPPING=1")
        log.info("stopping: committing pending changes")
        # a save half way (a file being written, or gone, or a new file whose rename into
        # place may come) gets SAVE_SPAN to finish, not more: a stop is waited for
        batch, end = None, time.monotonic() + SAVE_SPAN
        while self.watcher.busy() and (left := end - time.monotonic()) > 0:
            batch = join(batch, self.watcher.wait(timeout=min(left, 0.05)))
        batch = join(batch, self.watcher.flush())
        if batch is not None:
            try:
                self.commit(batch)
            except Error as e:
                log.warning("%s", e.message)
        self.network.stop()
        if self.transport is not None:
            self.transport.stop()
        if self.bridge is not None:
            self.bridge.stop()
        self.watcher.close()
        self.state.update(pending=0, pid=None)

    def _wait_interval(self) -> float | None:
        if self.carry is not None or self.pending_tips is not None:
            return max(0.0, self.retry_due - time.monotonic())  # retry when backoff ends
        return None  # nothing to do until a file changes or a thread wakes us

    def _retry_later(self, message: str) -> None:
        if message != self.state.data["error"]:
            log.warning("%s", message)
        self.state.update(error=message)
        self.retry_due = time.monotonic() + self.backoff.next_delay()

    def watch_transport(self) -> None:
        """Say in status when the transport connects or goes away."""
        if self.transport is None:
            return
        connected, error = self.transport.connected, self.transport.last_error
        was = self.state.data["transport_connected"]
        if connected != was or error != self.state.data["transport_error"]:
            self.state.update(transport_connected=connected, transport_error=error)
            if was and not connected and error != self.lost_with:  # once per reason
                log.warning("lost the notification transport (%s); polling every %ss meanwhile",
                            error or "disconnected", self.config["pollInterval"])
                self.lost_with = error

    def commit(self, batch: Batch) -> None:
        """Commit a batch; when that cannot be done now, keep it and retry with backoff."""
        try:
            result = self.engine.commit(None if batch.full else batch.paths)
        except Error as e:
            # busy lock, a rebase the user started, a full disk: the files are safe in
            # the work tree meanwhile
            self.carry = join(self.carry, batch)
            self._retry_later(e.message)
            return
        self.backoff.reset()
        if result.skipped_large:
            self.state.add_to("skipped_large", result.skipped_large)
            self.desktop("git-autosync skipped large files", ", ".join(result.skipped_large))
        if result.nested:
            self.state.add_to("nested", result.nested)
        if result.held:
            self.state.add_to("held", result.held)
        if result.commit:
            self.state.update(last_commit={"commit": result.commit, "time": time.time(),
                                           "message": result.message}, error=None)
            if self.engine.pushes:
                self.network.request("push")

    def handle_events(self) -> None:
        fetched = None
        while True:
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "fetched":
                fetched = value  # a later fetch holds all an earlier one brought
            elif kind == "pushed":
                self.pushed(value)
            elif kind == "failed":
                self.failed(value)
        if fetched is not None:
            self.branch_tip = fetched.branch
            self.state.update(last_pull=time.time(), pull_error=None)
            self.engine.note_refused(fetched.refused)
            self.integrate(fetched.tips)

    def pushed(self, pushed: Pushed) -> None:
        self.state.update(push_error=None)
        if pushed.commit:
            log.info("pushed %s to %s%s", pushed.commit[:10], self.config.remote,
                     "" if pushed.branch or pushed.lost_race else " (clone ref)")
            self.state.update(last_push={"commit": pushed.commit, "time": time.time()})
        if pushed.lost_race:
            log.info("push rejected: '%s' moved on meanwhile; bringing it in first",
                     self.config.branch)

    def failed(self, failure: Failure) -> None:
        key = "push_error" if failure.step == "push" else "pull_error"
        self.state.update(**{key: failure.error.message})
        log.warning("%s (attempt %d; retrying in %.0fs)", failure.error.message,
                    failure.attempts, failure.delay)
        if failure.attempts == 3:
            self.desktop("git-autosync cannot sync", failure.error.message)

    def integrate(self, tips: list[str]) -> None:
        """Bring fetched tips in: commit local changes first, then integrate, then push.
        Nothing new (the tips are HEAD): nothing is done. A file still being written: the
        merge waits for it (WRITING_WAIT at a time, max_delay at most, see Watcher.busy)."""
        if set(self.engine.acceptable(tips)) <= {self.repo.head()}:
            self.pending_tips, self.waited = None, None  # (what integrate would leave)
            self.held_since = None
            self.show_refused()
            self.state.update(error=None)
            return
        now = time.monotonic()
        # max_delay at most in all: a file written all the time (a log, a recording) keeps
        # every batch busy one after the other, and the merge must not wait for ever
        if self.watcher.busy() and now < (self.held_since or now) + self.watcher.max_delay:
            self.held_since = self.held_since or now
            self.pending_tips, self.retry_due = tips, now + WRITING_WAIT
            return
        self.held_since = None
        batch = self.watcher.flush()
        if batch is not None:
            self.commit(batch)
        for attempt in (1, 2):
            try:
                patient = self.patient()
                result = self.engine.integrate(tips, patient)
                break
            except Error as e:
                if attempt == 2 or isinstance(e, Retry):
                    # a rebase by hand, a busy lock: integrate later, with the carried batch
                    self.pending_tips = tips
                    self._retry_later(f"not merging yet: {e.message}")
                    return
                # an edit the watcher has not reported yet is in the way: commit everything
                self.commit(EVERYTHING)
        self.backoff.reset()
        self.pending_tips = None
        if result is not None and result.waiting:  # folded by yet another clone: its fold
            # comes with a fetch; should it not, the next clone with a say folds after
            # LEAD_MAX, the one after it after twice that..., and a clone with no say
            # after them all: one fold at a time. (A cap on the wait made every clone
            # past it fold at once when the folder was slow on a busy machine: 16 clones
            # on 2 cores, 7 folds of the same tips in 3 s, each slowing the others.)
            self.waited = self.waited or (result.held_back[0], time.monotonic())
            remote = self.engine.remote
            rank = remote.rank(result.held_back, result.mine) if remote is not None else 1
            self.patience = max(1, rank) * LEAD_MAX
            self.pending_tips, self.retry_due = tips, self.waited[1] + self.patience
            if not result.tips:  # (a fast-forward meanwhile is shown below)
                return
        else:
            self.waited = None
        self.show_refused()
        if result is not None and result.deferred:  # a flood of tips: the rest right after
            self.pending_tips, self.retry_due = tips, time.monotonic()
        if result is None or not result.tips:
            self.state.update(error=None)
            return
        head = result.head or ""  # an integration that changed something has a head
        more = f" (and {len(result.tips) - 1} more)" if len(result.tips) > 1 else ""
        if head in result.tips:
            log.info("merged %s%s", head[:10], more)
        else:
            log.info("merged %s as %s%s", result.tips[0][:10], head[:10], more)
        self.state.update(last_pull=time.time(), error=None)
        copies = [{"path": c.path, "copy": c.copy} for c in result.conflicts] + \
            [{"path": p, "copy": c} for p, c in result.copies]
        if copies:
            self.state.add_to("conflicts", copies)
            self.desktop("git-autosync kept both versions",
                         "\n".join(f"{c['path']} -> {c['copy']}" if c["copy"] else c["path"]
                                   for c in copies))
        if result.kept:
            self.state.add_to("kept", [{"path": p, "where": w} for p, w in result.kept])
            self.desktop("git-autosync moved local files out of the way",
                         "\n".join(f"{p} -> {w}" for p, w in result.kept))
        if self.engine.pushes and not result.waiting and result.head != self.branch_tip:
            # (a fast-forward to B's commit: nothing to push) a fold made in the leader's
            # stead moves B at once too
            self.network.request("push" if patient else "takeover")

    def patient(self) -> bool:
        """Whether to leave a fold to the clone that folds (sync.Remote.folder): until a
        commit this clone left to it has waited `patience` - however many other commits
        came in meanwhile (a busy channel keeps a clone waiting for one fold or another:
        each fold gets the grace anew), and whatever that commit's clone saved on top."""
        if self.waited is None:
            return True
        commit, since = self.waited
        head = self.repo.head()
        if head is not None and self.repo.is_ancestor(commit, head):
            self.waited = None  # it came in (with a fold, or a fast-forward)
            return True
        return time.monotonic() < since + self.patience

    def show_refused(self) -> None:
        """A commit git would not check out: in status and on the desktop, once; local
        commits and the other clones' commits go on meanwhile."""
        refused = self.engine.refused_now()
        shown = self.state.data["refused"]
        if refused is None:
            self.state.update(refused=None)
        elif shown is None or shown["commit"] != refused.commit:
            self.desktop("git-autosync refused a commit", refused.message)
            self.state.update(refused={"commit": refused.commit, "reason": refused.message,
                                       "time": time.time()})


# -- git autosync run -------------------------------------------------------------------
def cmd_run(repo: Repo, args: argparse.Namespace) -> int:
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository; its post-receive hook does the work",
                    "run 'git autosync run' in a clone with a work tree")
    setup_logging(args.log, verbose=args.verbose)
    config = Config(repo)  # once per daemon start: .autosync is read here
    for problem in checks.problems(config):  # `start` printed them; the log keeps them
        log.warning("%s", problem.line())
    ready_fd = os.environ.pop("GIT_AUTOSYNC_READY_FD", None)

    def ready() -> None:
        if ready_fd is not None:
            try:
                os.write(int(ready_fd), b"1")
                os.close(int(ready_fd))
            except OSError:
                pass
    return Daemon(repo, ready_hook=ready, config=config).run()
