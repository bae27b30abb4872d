"""`git autosync run`: watch, commit, push, listen, fetch, merge - until SIGINT/SIGTERM.

Threads and who does what:
- main thread: the watcher, every commit and every merge (all work-tree changes happen
  here, one at a time, under the repository lock shared with other autosync processes);
- network thread: fetch and push, with capped exponential backoff while the remote is away;
- the notification transport's own thread: validated notifications only *request* a fetch.
They talk through small request sets and an event queue, and wake the main thread through
the watcher's wakeup pipe. Nothing polls while idle, except the remote itself every
autosync.pollInterval seconds when no notification transport is connected.
"""

import json
import os
import queue
import signal
import threading
import time

from . import pidfile
from .commit import check_committable, commit_changes
from .config import Config
from .merge import integrate
from .treecheck import Refused
from .notify import desktop, sd_notify
from .sync import Rejected, check_branch, remote_for
from .util import Backoff, Error, Retry, log
from .watch import Batch, Watcher


def join(a, b):
    """One batch holding everything two batches (either may be None) hold."""
    if a is None or b is None:
        return a or b
    return Batch(a.paths | b.paths, a.full or b.full)


class State:
    """What `git autosync status` shows, kept in $GIT_DIR/autosync/state.json."""

    def __init__(self, repo):
        self.path = os.path.join(repo.ensure_state_dir(), "state.json")
        self.lock = threading.Lock()
        self.save_failed = False
        self.data = {"pid": os.getpid(), "started": time.time(), "last_commit": None,
                     "last_push": None, "last_pull": None, "push_error": None,
                     "pull_error": None, "transport": None, "transport_connected": False,
                     "transport_error": None, "pending": 0, "conflicts": [],
                     "skipped_large": [], "nested": [], "error": None, "refused": None,
                     "kept": [], "held": []}
        self.save()

    def update(self, **changes):
        with self.lock:
            self.data.update(changes)
            self.save()

    def add_to(self, key, items, limit=50):
        with self.lock:
            merged = self.data[key] + [i for i in items if i not in self.data[key]]
            self.data[key] = merged[-limit:]
            self.save()

    def save(self):
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


BURST = 2.0  # seconds after a fetch that brought nothing in which announcements are a burst


class Network(threading.Thread):
    """Runs fetch and push requests one at a time; retries failures with backoff."""

    def __init__(self, daemon):
        super().__init__(name="autosync-network", daemon=True)
        self.d = daemon
        self.cond = threading.Condition()
        self.wanted = set()
        self.announced = set()  # commits notifications named since the last batch
        self.last_empty_fetch = 0.0
        self.stopping = False
        self.backoff = Backoff(first=1.0, cap=300.0)
        self.retry_at = None
        self.failures = 0

    def request(self, *kinds):
        with self.cond:
            self.wanted.update(kinds)
            self.cond.notify()

    def announce(self, commit):
        """A notification named commit: fetch unless it is here (checked per batch)."""
        with self.cond:
            if len(self.announced) < 1000:
                self.announced.add(commit)
            self.wanted.add("announced")
            self.cond.notify()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _next_wait(self, now):
        deadlines = [t for t in (self.retry_at, self.d.poll_due) if t is not None]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _take(self):
        """Block until there is work and no backoff is running; None when stopping."""
        with self.cond:
            while not self.stopping:
                now = time.monotonic()
                if self.d.poll_due is not None and now >= self.d.poll_due:
                    self.wanted.add("poll")
                    self.d.schedule_poll()
                if self.wanted and (self.retry_at is None or now >= self.retry_at):
                    wanted, self.wanted = self.wanted, set()
                    return wanted
                self.cond.wait(self._next_wait(now))
            return None

    def run(self):
        while (wanted := self._take()) is not None:
            try:
                self.work(wanted)
                self.backoff.reset()
                self.retry_at = None
                self.failures = 0
            except Refused as e:  # the remote's objects fail git's checks: wait for a change
                self.backoff.reset()
                self.retry_at = None
                self.d.post("refused", (e.commit, e))
            except (Retry, Error) as e:
                self.failed(wanted, e)

    def failed(self, wanted, e):
        delay = self.backoff.next_delay()
        self.failures += 1
        self.retry_at = time.monotonic() + delay
        with self.cond:
            self.wanted.update(wanted)
        key = "push_error" if "push" in wanted else "pull_error"
        self.d.state.update(**{key: e.message})
        log.warning("%s (attempt %d; retrying in %.0fs)", e.message, self.failures, delay)
        if self.failures == 3:
            self.d.desktop("git-autosync cannot sync", e.message)

    def work(self, wanted):
        remote = self.d.remote
        cfg = self.d.config
        if "poll" in wanted and "fetch" not in wanted and cfg["pull"]:
            transport = self.d.transport
            if transport is not None and transport.connected:
                pass  # notifications arrive; no need to ask the remote
            elif remote.head() not in (None, remote.tracking()):
                wanted.add("fetch")
        if "announced" in wanted and "fetch" not in wanted and cfg["pull"]:
            with self.cond:
                commits, self.announced = self.announced, set()
            if self.d.repo.missing_commits(commits):  # one process for the whole batch
                # fetched at once, unless the last fetch, just now, brought nothing: then
                # the remote's head is asked first (a flood of made-up ids costs that)
                if time.monotonic() - self.last_empty_fetch > BURST or \
                        remote.head() not in (None, remote.tracking()):
                    wanted.add("fetch")
        if "fetch" in wanted and cfg["pull"] and self.d.refused and \
                remote.head() == self.d.refused:
            wanted.discard("fetch")  # what was refused is still all there is
        if "fetch" in wanted and cfg["pull"]:
            before = remote.tracking()
            target = remote.fetch()
            if target == before:
                self.last_empty_fetch = time.monotonic()
            self.d.state.update(last_pull=time.time(), pull_error=None)
            if target:
                self.d.post("fetched", target)
        if "push" in wanted and cfg["push"] and self.d.refused and \
                remote.tracking() == self.d.refused:
            log.debug("not pushing: '%s' has a commit this clone refused", remote.name)
            wanted.discard("push")
        if "push" in wanted and cfg["push"]:
            try:
                pushed = remote.push()
            except Rejected:
                log.info("push rejected: '%s' moved on; fetching and merging first", remote.name)
                if cfg["pull"]:
                    self.request("fetch")
                return
            self.d.state.update(push_error=None)
            if pushed:
                self.d.seen.add(pushed)  # the server's echo of our own push
                self.d.state.update(last_push={"commit": pushed, "time": time.time()})
                log.info("pushed %s to %s", pushed[:10], remote.name)
                self.d.publish(pushed)


class Daemon:
    def __init__(self, repo, ready_hook=None):
        self.repo = repo
        self.config = Config(repo)
        check_branch(repo, self.config)
        self.remote = remote_for(repo, self.config)
        self.events = queue.SimpleQueue()
        self.stopping = False
        self.transport = None
        self.bridge = None
        self.poll_due = None
        self.ready_hook = ready_hook
        self.seen = set()  # commits announced to us that we already handled
        self.announce_log_due, self.announce_quiet = 0.0, 0  # one INFO line per 10 s
        self.carry = None  # a batch that could not be committed yet (busy lock, full disk)
        self.carry_due = 0.0
        self.pending_merge = None  # a fetched commit that could not be merged yet
        self.refused = None  # a fetched commit that is unsafe to check out
        self.carry_backoff = Backoff(first=0.5, cap=30.0)

    # -- wiring -----------------------------------------------------------------------
    def desktop(self, summary, body):
        if self.config["notify"]:
            desktop(summary, body)

    def post(self, kind, value=None):
        """Hand an event to the main thread and wake it."""
        self.events.put((kind, value))
        self.watcher.wakeup()

    def publish(self, commit):
        if self.transport is not None:
            from .message import Notification
            note = Notification(self.config.channel, self.config.branch, commit, self.sender,
                                time.time())
            self.transport.publish(note)

    def schedule_poll(self):
        """The next poll of the remote; it is skipped while a transport is connected."""
        if self.remote is None or not self.config["pull"]:
            self.poll_due = None
        else:
            self.poll_due = time.monotonic() + self.config["pollInterval"]

    def on_notification(self, note):
        """On the transport's thread: nothing here starts a process or writes a line per
        message, so a flood of notifications costs set operations; the network thread
        looks at what was announced once per batch."""
        if note.commit in self.seen:
            return
        self.seen.add(note.commit)
        if len(self.seen) > 10000:
            self.seen.clear()
        now = time.monotonic()
        if now >= self.announce_log_due:
            more = f" (and {self.announce_quiet} more)" if self.announce_quiet else ""
            log.info("%s announced %s%s", note.sender, note.commit[:10], more)
            self.announce_log_due, self.announce_quiet = now + 10.0, 0
        else:
            log.debug("%s announced %s", note.sender, note.commit[:10])
            self.announce_quiet += 1
        self.network.announce(note.commit)

    def on_connect(self):
        self.state.update(transport_connected=True, transport_error=None)
        self.network.request("fetch")  # catch up on what was missed while away

    def start_transport(self):
        from .message import sender_id
        from .transport import make_transport
        self.sender = sender_id(self.repo, self.config)
        if self.config["xmpp.bridge"]:
            from .bridge import Bridge
            try:
                self.bridge = Bridge(self.config)
                self.bridge.start()
            except Error as e:  # a bad bridge setup must not stop the syncing
                log.warning("%s; not bridging", e.message)
                self.bridge = None
        if self.remote is None:
            return
        try:
            self.transport = make_transport(self.config, self.sender, self.on_notification,
                                            self.on_connect)
        except Error as e:  # e.g. an unreadable password file: keep syncing by polling
            log.warning("%s; polling every %ss instead", e.message, self.config["pollInterval"])
            self.state.update(transport_error=e.message)
        if self.transport is not None:
            self.transport.on_change = self.watcher.wakeup  # status follows at once
            self.state.update(transport=self.transport.describe())
            self.transport.start()

    # -- main loop ----------------------------------------------------------------------
    def run(self):
        lockfd = pidfile.acquire(self.repo)
        try:
            self._run()
        finally:
            os.close(lockfd)
        return 0

    def _signals(self):
        def stop(signum, frame):
            self.stopping = True
            self.watcher.wakeup()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, lambda s, f: self.network.request("push"))

    def _run(self):
        cfg = self.config
        self.state = State(self.repo)
        self.watcher = Watcher(self.repo, cfg["ignore"], cfg["debounce"], cfg["maxDelay"])
        self.network = Network(self)
        self._signals()
        self.watcher.start()  # watch first, then catch up: nothing falls in between
        self.commit(None)
        self.start_transport()
        self.schedule_poll()
        if self.remote is not None:
            self.network.request("fetch", "push")
        self.network.start()
        sd_notify("READY=1\nSTATUS=watching " + self.repo.cwd)
        log.info("watching %s (branch %s, remote %s, %s)", self.repo.cwd, cfg.branch,
                 cfg.remote if self.remote else "none",
                 self.transport.describe() if self.transport else
                 f"polling every {cfg['pollInterval']}s" if self.remote else "local only")
        if self.ready_hook:
            self.ready_hook()
        try:
            while not self.stopping:
                batch = self.watcher.wait(timeout=self._wait_interval())
                if self.carry is not None and (batch is not None
                                               or time.monotonic() >= self.carry_due):
                    batch, self.carry = join(self.carry, batch), None
                if batch is not None:
                    self.commit(batch)
                self.handle_events()
                if self.pending_merge is not None and time.monotonic() >= self.carry_due:
                    self.merge(self.pending_merge)
                self.watch_transport()
                self.state.update(pending=self.watcher.pending())
        finally:
            sd_notify("STOPPING=1")
            log.info("stopping: committing pending changes")
            batch = self.watcher.flush()
            try:
                self.commit(batch if batch is not None else False)
            except Error as e:
                log.warning("%s", e.message)
            self.network.stop()
            if self.transport is not None:
                self.transport.stop()
            if self.bridge is not None:
                self.bridge.stop()
            self.watcher.close()
            self.state.update(pending=0, pid=None)

    def _wait_interval(self):
        if self.carry is not None or self.pending_merge is not None:
            return max(0.0, self.carry_due - time.monotonic())  # retry when backoff ends
        return None  # nothing to do until a file changes or a thread wakes us

    def watch_transport(self):
        """Start or stop polling when the transport connects or goes away."""
        if self.transport is None:
            return
        connected, error = self.transport.connected, self.transport.last_error
        was = self.state.data["transport_connected"]
        if connected != was or error != self.state.data["transport_error"]:
            self.state.update(transport_connected=connected, transport_error=error)
            if was and not connected:
                log.warning("lost the notification transport (%s); polling every %ss meanwhile",
                            self.transport.last_error or "disconnected",
                            self.config["pollInterval"])

    def commit(self, batch):
        """Commit a batch (None: the whole tree; False: nothing pending). Never raises Retry."""
        if batch is False:
            return None
        paths = None if batch is None or batch.full else batch.paths
        try:
            with self.repo.lock():
                check_committable(self.repo)  # a rebase by hand (HEAD detached) says so
                check_branch(self.repo, self.config)  # hands off another branch
                result = commit_changes(self.repo, self.config, paths)
        except Error as e:
            # busy lock, a rebase the user started, a full disk: keep the batch and retry
            # with backoff; the files are safe in the work tree meanwhile
            if e.message != self.state.data["error"]:
                log.warning("%s", e.message)
            self.state.update(error=e.message)
            self.carry = join(self.carry, batch if batch is not None else Batch(set(), True))
            self.carry_due = time.monotonic() + self.carry_backoff.next_delay()
            return None
        self.carry_backoff.reset()
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
            if self.remote is not None and self.config["push"]:
                self.network.request("push")
        return result.commit

    def handle_events(self):
        while True:
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "fetched":
                self.merge(value)
            elif kind == "refused":
                self.refuse(*value)

    def merge(self, target):
        """Merge a fetched commit: commit local changes first, then integrate, then push."""
        if target == self.refused:
            return  # refused once: nothing changes until the remote branch moves on
        if self.repo.is_ancestor(target, "HEAD"):
            self.pending_merge = None
            if self.repo.rev("HEAD") != target:
                self.network.request("push")
            return
        batch = self.watcher.flush()
        if batch is not None:
            self.commit(batch)
        for attempt in (1, 2):
            try:
                with self.repo.lock():
                    check_committable(self.repo)
                    check_branch(self.repo, self.config)
                    result = integrate(self.repo, target, self.config)
                break
            except Refused as e:
                return self.refuse(target, e)
            except Error as e:
                if attempt == 2 or isinstance(e, Retry):
                    if target != self.pending_merge:
                        log.warning("not merging %s yet: %s", target[:10], e.message)
                    self.state.update(error=e.message)
                    # a rebase by hand, a busy lock: merge it later, with the carried batch
                    self.pending_merge = target
                    self.carry_due = time.monotonic() + self.carry_backoff.next_delay()
                    return
                # an edit the watcher has not reported yet is in the way: commit everything
                self.commit(None)
        self.carry_backoff.reset()
        self.pending_merge = None
        self.refused = None
        head = result.head
        log.info("merged %s%s", target[:10], "" if head == target else f" as {head[:10]}")
        self.state.update(last_pull=time.time(), error=None, refused=None)
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
        if head != target:
            self.network.request("push")

    def refuse(self, target, e):
        """A commit git would not check out: say so once, keep committing locally, and wait
        for the remote branch to move to something acceptable."""
        self.pending_merge = None
        if self.refused != target:
            log.warning("%s", e.message)
            self.desktop("git-autosync refused a commit", e.message)
        self.refused = target
        self.state.update(refused={"commit": target, "reason": e.message, "time": time.time()})
