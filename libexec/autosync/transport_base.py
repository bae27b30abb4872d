"""The Transport base class: what MqttTransport and XmppTransport have in common.

Its state, failure reporting, and the checks around sending and handing on notifications.
mqtt.py and xmpp.py build on it; transport.py chooses between them.
"""

import logging
import threading
import time
from collections.abc import Callable

from .config import Config
from .message import BadMessage, DropLog, Notification, encode
from .util import Backoff, log

OnNotification = Callable[[Notification], None]
OnConnect = Callable[[], None]
# A session (a connection that came up) counts as working once it lasted this long. One that
# ends sooner (a flapping broker or proxy, a server that drops every login) does not reset
# the reconnect backoff: reconnects, and the catch-up fetch each asks for, come ever rarer.
HEALTHY = 10.0


class Transport:
    """A subclass runs `_run` in `self.thread`, calls `_came_up` once notifications can
    arrive, `_lost` when such a session ends, `_failed` when connecting fails, `_hand_on` for
    each valid notification it receives, and waits `self.backoff.next_delay()` between
    attempts.

    A failure is logged once however often it repeats, until a session has worked (lasted
    HEALTHY seconds); `last_error` always says the current one, for status."""

    on_change: Callable[[], None] | None = None  # called (network thread) when the link fails

    def __init__(self, config: Config, sender: str, on_notification: OnNotification,
                 on_connect: OnConnect, thread_name: str) -> None:
        self.config = config
        self.sender = sender
        self.on_notification = on_notification
        self.on_connect_cb = on_connect
        self.connected = False  # notifications will arrive
        self.last_error: str | None = None
        self.unsent: Notification | None = None  # the newest note not published yet
        self.stopping = threading.Event()
        self.dropped = DropLog()
        self.backoff = Backoff()
        self.up_since: float | None = None  # when the current session came up
        self.flapping = False  # the last session ended within HEALTHY seconds
        self.logged: set[str] = set()  # failures logged since the last session that worked
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # -- what each transport provides ------------------------------------------------------
    def _run(self) -> None:
        """The connection loop, in self.thread until stop()."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where notifications travel, for status and the log."""
        raise NotImplementedError

    def publish(self, note: Notification, timeout: float = 5.0) -> bool:
        """Send note and wait for the server's ack; False when not delivered. Never raises."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def _failed(self, message: str) -> None:
        """Connecting failed (or a session ended: _lost): say so, once per kind of failure.
        A failed attempt means the server was really away: the next session's line is INFO."""
        self.connected = False
        self.flapping = False
        if self.stopping.is_set():
            return  # shutting down: not a failure worth a line
        if message not in self.logged:
            log.warning("%s", message)
            if len(self.logged) >= 32:  # bounded, whatever a server puts in its errors
                self.logged.clear()
            self.logged.add(message)
        self.last_error = message
        if self.on_change is not None:
            self.on_change()

    def _lost(self, message: str) -> None:
        """The session that came up has ended. One that worked for HEALTHY seconds resets
        the backoff and the log's memory; a shorter one leaves the backoff growing."""
        lasted = time.monotonic() - self.up_since if self.up_since is not None else 0.0
        self.up_since = None
        if lasted >= HEALTHY:
            self.backoff.reset()
            self.logged.clear()
        self._failed(message)
        self.flapping = lasted < HEALTHY

    def _up_line(self, message: str) -> None:
        """An INFO line that a session is coming up; while sessions keep dying at once, a
        debug line (the failure was logged once already)."""
        log.log(logging.DEBUG if self.flapping else logging.INFO, "%s", message)

    def _came_up(self, resend: Callable[[Notification], object]) -> None:
        """Connected: send what waited (through resend), then let the daemon catch up (once
        per session: while sessions keep ending at once, the backoff makes them rarer)."""
        self.connected = True
        self.up_since = time.monotonic()
        self.last_error = None
        if self.unsent is not None:
            note, self.unsent = self.unsent, None
            resend(note)
        try:
            self.on_connect_cb()
        except Exception:  # the daemon's callback must not end the connection
            log.exception("on_connect callback failed")

    def _may_send(self, note: Notification) -> bool:
        """Whether publish() should send note now; a note kept for later says False."""
        try:
            encode(note)
        except BadMessage as e:
            log.warning("cannot announce commit %s: %s", str(note.commit)[:10], e)
            return False
        if not self.connected:
            self.unsent = note
            return False
        return True

    def _hand_on(self, note: Notification) -> None:
        """A valid notification from someone else reaches the daemon."""
        if note.sender == self.sender:
            return
        try:
            self.on_notification(note)
        except Exception:  # a bug in the callback must not end the connection
            log.exception("on_notification callback failed")
