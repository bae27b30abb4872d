"""Which notification transport a repository uses: the one place that decides.

MQTT when autosync.mqtt.url is set, else XMPP when autosync.xmpp.jid is set, else none
(the daemon then polls the remote). Both have the same interface and semantics, and share
the Transport base (transport_base.py).
"""

from collections.abc import Sequence

from . import mqtt, xmpp
from .config import Config
from .message import Notification
from .transport_base import OnConnect, OnNotification, Transport


def kind(config: Config) -> str | None:
    if config["mqtt.url"]:
        return "mqtt"
    if config["xmpp.jid"]:
        return "xmpp"
    return None


def make_transport(config: Config, sender: str, on_notification: OnNotification,
                   on_connect: OnConnect) -> Transport | None:
    """A started-later transport object, or None when none is configured."""
    which = kind(config)
    if which == "mqtt":
        return mqtt.MqttTransport(config, sender, on_notification, on_connect)
    if which == "xmpp":
        return xmpp.XmppTransport(config, sender, on_notification, on_connect)
    return None


def publish_once(config: Config, notes: Sequence[Notification], timeout: float = 5.0) -> bool:
    """Announce notes once over the configured transport; False when not delivered."""
    which = kind(config)
    if which == "mqtt":
        return mqtt.publish_once(config, notes, timeout)
    if which == "xmpp":
        return xmpp.publish_once(config, notes, timeout)
    return False
