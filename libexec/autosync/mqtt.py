"""Notifications over MQTT (paho-mqtt 2.x, VERSION2 callbacks).

MqttTransport is the daemon's long-lived connection: it subscribes to its channel and
branch, hands validated notifications from others to on_notification, calls on_connect
after every (re)connect so the daemon can catch up, and publishes retained QoS 1
notifications. It manages the connection itself (connect, then run until the link drops,
then back off and connect again), so each failure becomes one precise message in
`last_error`. publish_once() is the short-lived variant for hooks: bounded in time, never
raising because the broker is away.
"""

import secrets
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho

from .message import BadMessage, decode, encode, topic
from .util import Backoff, Error, log

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def parse_url(url):
    """(tls, host, port) of mqtt://host[:port] or mqtts://host[:port] ([::1] for IPv6)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in DEFAULT_PORTS or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.username:
        raise Error(f"bad broker URL '{url}' in autosync.mqtt.url",
                    "git config autosync.mqtt.url mqtt://HOST:1883   (or mqtts://HOST:8883)")
    return parts.scheme == "mqtts", parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def read_password(config):
    path = config["mqtt.passwordFile"]
    if not path:
        return None
    try:
        with open(path) as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise Error(f"cannot read the broker password file '{path}': {e.strerror.lower()}",
                    "git config autosync.mqtt.passwordFile ~/.config/git-autosync/mqtt-password")


def make_client(config, name):
    """A configured, not yet connected client: credentials, TLS, no automatic reconnect."""
    tls, host, port = parse_url(config["mqtt.url"])
    client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                         client_id=f"autosync-{name[:40]}-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv311, clean_session=True,
                         reconnect_on_failure=False)
    if config["mqtt.username"]:
        client.username_pw_set(config["mqtt.username"], read_password(config))
    if tls:
        ca = config["mqtt.caFile"] or None
        try:
            client.tls_set(ca_certs=ca)
        except (OSError, ssl.SSLError) as e:
            raise Error(f"cannot use the CA file '{ca}': {e}",
                        "git config autosync.mqtt.caFile /path/to/ca.crt")
    return client, host, port


def describe_failure(exc, url):
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"cannot verify the certificate of the broker at {url}: "
                f"{exc.verify_message or exc.reason} (check autosync.mqtt.caFile)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the broker at {url} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to the broker at {url}: connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker's host in {url}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"cannot connect to the broker at {url}: timed out"
    return f"cannot connect to the broker at {url}: {exc}"


def refused(reason_code, config):
    user = config["mqtt.username"]
    who = f" for user '{user}'" if user else ""
    return f"the broker at {config['mqtt.url']} refused the login{who} ({reason_code})"


class DropLog:
    """One log line per dropped message, at most one every `every` seconds (floods)."""

    def __init__(self, every=10.0):
        self.every, self.next_at, self.suppressed = every, 0.0, 0

    def __call__(self, reason):
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return
        more = f" (and {self.suppressed} more since)" if self.suppressed else ""
        log.warning("dropped an invalid notification: %s%s", reason, more)
        self.next_at, self.suppressed = now + self.every, 0


class MqttTransport:
    def __init__(self, config, sender, on_notification, on_connect):
        self.config = config
        self.url = config["mqtt.url"]
        self.sender = sender
        self.topic = topic(config.channel, config.branch)
        self.on_notification = on_notification
        self.on_connect_cb = on_connect
        self.client, self.host, self.port = make_client(config, sender)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = False
        self.last_error = None
        self.unsent = None  # the newest note that could not be published yet
        self.stopping = threading.Event()
        self.dropped = DropLog()
        self.thread = threading.Thread(target=self._run, name="autosync-mqtt", daemon=True)

    def describe(self):
        return f"{self.url} channel {self.config.channel}"

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        try:
            self.client.disconnect()
        except Exception:  # already gone: nothing to close
            pass
        self.thread.join(timeout=5)

    # -- connection ------------------------------------------------------------------------
    def _run(self):
        backoff = Backoff(first=1.0, cap=60.0)
        keepalive = self.config["mqtt.keepalive"]
        while not self.stopping.is_set():
            try:
                self.client.connect(self.host, self.port, keepalive)
            except (OSError, ValueError) as e:
                self._failed(describe_failure(e, self.url))
            else:
                self.client.loop_forever()  # returns when the connection ends
                if self.stopping.is_set():
                    break
                if self.connected:  # it worked until now: try again soon
                    self._failed("lost the connection to the broker at " + self.url)
                    backoff.reset()
            if self.stopping.wait(backoff.next_delay()):
                break

    def _failed(self, message):
        self.connected = False
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._failed(refused(reason_code, self.config))
            client.disconnect()
            return
        self.connected = True
        self.last_error = None
        log.info("connected to %s; subscribing to %s", self.url, self.topic)
        client.subscribe(self.topic, qos=1)
        if self.unsent is not None:
            note, self.unsent = self.unsent, None
            self._send(note)
        try:
            self.on_connect_cb()
        except Exception:  # the daemon's callback must not kill the network loop
            log.exception("on_connect callback failed")

    def _on_message(self, client, userdata, msg):
        try:
            note = decode(msg.payload, msg.topic)
        except BadMessage as e:
            self.dropped(str(e))
            return
        if note.sender == self.sender:
            return
        try:
            self.on_notification(note)
        except Exception:
            log.exception("on_notification callback failed")

    # -- publishing --------------------------------------------------------------------------
    def _send(self, note):
        return self.client.publish(topic(note.channel, note.branch), encode(note), qos=1,
                                   retain=True)

    def publish(self, note, timeout=5.0):
        """Publish (retained, QoS 1) and wait for the broker's ack; False when not delivered.

        While disconnected the newest note is kept and published on reconnect."""
        if not self.connected:
            self.unsent = note
            return False
        try:
            info = self._send(note)
            info.wait_for_publish(timeout)
            return info.is_published()
        except (RuntimeError, ValueError, OSError) as e:
            log.warning("cannot publish to %s: %s", self.url, e)
            self.unsent = note
            return False


def publish_once(config, notes, timeout=5.0):
    """Connect, publish notes (retained, QoS 1), disconnect; True when all were acked.

    Bounded by timeout in total; logs one line and returns False when the broker is away."""
    url = config["mqtt.url"]
    deadline = time.monotonic() + timeout
    try:
        client, host, port = make_client(config, notes[0].sender if notes else "publish")
    except Error as e:
        log.warning("%s", e.message)
        return False
    done = threading.Event()
    outcome = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["refused"] = reason_code.is_failure and refused(reason_code, config)
        done.set()
    client.on_connect = on_connect
    client.connect_timeout = max(0.1, timeout)
    try:
        client.connect(host, port, keepalive=max(5, int(timeout) + 1))
    except (OSError, ValueError) as e:
        log.warning("%s; the clones will find the push when they next fetch",
                    describe_failure(e, url))
        return False
    client.loop_start()
    try:
        if not done.wait(max(0.0, deadline - time.monotonic())) or outcome.get("refused"):
            log.warning("%s", outcome.get("refused") or
                        f"no answer from the broker at {url} within {timeout:.0f}s")
            return False
        infos = [client.publish(topic(n.channel, n.branch), encode(n), qos=1, retain=True)
                 for n in notes]
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        ok = all(info.is_published() for info in infos)
        if not ok:
            log.warning("the broker at %s did not acknowledge within %.0fs", url, timeout)
        return ok
    except (RuntimeError, ValueError, OSError) as e:
        log.warning("cannot publish to %s: %s", url, e)
        return False
    finally:
        client.disconnect()
        client.loop_stop()
