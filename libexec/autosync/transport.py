"""Which notification transport a repository uses: the one place that decides.

MQTT when autosync.mqtt.url is set, else XMPP when autosync.xmpp.jid is set, else none
(the daemon then polls the remote). Both have the same interface and semantics, and share
the Transport base below: its state, failure reporting, and the checks around sending and
handing on notifications.
"""

import threading

from .message import BadMessage, DropLog, encode
from .util import log


class Transport:
    """What MqttTransport and XmppTransport have in common. A subclass runs `_run` in
    `self.thread`, calls `_came_up` once notifications can arrive, `_failed` when the
    connection fails, and `_hand_on` for each valid notification it receives."""

    on_change = None  # called (from the network thread) when the connection fails

    def __init__(self, config, sender, on_notification, on_connect, thread_name):
        self.config = config
        self.sender = sender
        self.on_notification = on_notification
        self.on_connect_cb = on_connect
        self.connected = False  # notifications will arrive
        self.last_error = None
        self.unsent = None  # the newest note that could not be published yet
        self.stopping = threading.Event()
        self.dropped = DropLog()
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self):
        self.thread.start()

    def _failed(self, message):
        self.connected = False
        if self.stopping.is_set():
            return  # shutting down: not a failure worth a line
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message
        if self.on_change is not None:
            self.on_change()

    def _came_up(self, resend):
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

    def _may_send(self, note):
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

    def _hand_on(self, note):
        """A valid notification from someone else reaches the daemon."""
        if note.sender == self.sender:
            return
        try:
            self.on_notification(note)
        except Exception:  # a bug in the callback must not end the connection
            log.exception("on_notification callback failed")


def kind(config):
    if config["mqtt.url"]:
        return "mqtt"
    if config["xmpp.jid"]:
        return "xmpp"
    return None


def make_transport(config, sender, on_notification, on_connect):
    """A started-later transport object, or None when none is configured."""
    which = kind(config)
    if which == "mqtt":
        from .mqtt import MqttTransport
        return MqttTransport(config, sender, on_notification, on_connect)
    if which == "xmpp":
        from .xmpp import XmppTransport
        return XmppTransport(config, sender, on_notification, on_connect)
    return None


def publish_once(config, notes, timeout=5.0):
    """Announce notes once over the configured transport; False when not delivered."""
    which = kind(config)
    if which == "mqtt":
        from .mqtt import publish_once as mqtt_publish
        return mqtt_publish(config, notes, timeout)
    if which == "xmpp":
        from .xmpp import publish_once as xmpp_publish
        return xmpp_publish(config, notes, timeout)
    return False
