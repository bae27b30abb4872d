"""Which notification transport a repository uses: the one place that decides.

MQTT when autosync.mqtt.url is set, else XMPP when autosync.xmpp.jid is set, else none
(the daemon then polls the remote). Both have the same interface and semantics, and share
the Transport base (transport_base.py). Only the module of the transport configured is
imported (paho-mqtt alone is 5 MB of a daemon's memory, and 30 ms of every hook's start).
"""

from collections.abc import Sequence
from importlib import import_module
from types import ModuleType

from .config import Config
from .message import Notification
from .transport_base import OnConnect, OnNotification, Transport


def kind(config: Config) -> str | None:
    if config["mqtt.url"]:
        return "mqtt"
    if config["xmpp.jid"]:
        return "xmpp"
    return None


def module(which: str) -> ModuleType:
    """The module of transport `which` ("mqtt" or "xmpp"), imported when first asked."""
    return import_module(f"{__package__}.{which}")


def make_transport(config: Config, sender: str, on_notification: OnNotification,
                   on_connect: OnConnect) -> Transport | None:
    """A started-later transport object, or None when none is configured."""
    which = kind(config)
    if which == "mqtt":
        return module(which).MqttTransport(config, sender, on_notification, on_connect)
    if which == "xmpp":
        return module(which).XmppTransport(config, sender, on_notification, on_connect)
    return None


def publish_once(config: Config, notes: Sequence[Notification], timeout: float = 5.0) -> bool:
    """Announce notes once over the configured transport; False when not delivered."""
    which = kind(config)
    if which is None:
        return False
    return bool(module(which).publish_once(config, notes, timeout))
