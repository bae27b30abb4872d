"""The Transport base class: what MqttTransport and XmppTransport have in common.

Its state, failure reporting, and the checks around sending and handing on notifications.
mqtt.py and xmpp.py build on it; transport.py chooses between them.
"""

import threading
from collections.abc import Callable

from .config import Config
from .message import BadMessage, DropLog, Notification, encode
from .util import log

OnNotification = Callable[[Notification], None]
OnConnect = Callable[[], None]


class Transport:
    """A subclass runs `_run` in `self.thread`, calls `_came_up` once notifications can
    arrive, `_failed` when the connection fails, and `_hand_on` for each valid notification
    it receives."""

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
        self.connected = False
        if self.stopping.is_set():
            return  # shutting down: not a failure worth a line
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message
        if self.on_change is not None:
            self.on_change()

    def _came_up(self, resend: Callable[[Notification], object]) -> None:
        """Connected: send what waited (through resend), then let the daemon catch up."""
        self.connected = True
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
