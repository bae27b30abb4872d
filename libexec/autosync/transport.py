"""Which notification transport a repository uses: the one place that decides.

MQTT when autosync.mqtt.url is set, else XMPP when autosync.xmpp.jid is set, else none
(the daemon then polls the remote). Both have the same interface and semantics.
"""


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
