"""Notifications over MQTT (paho-mqtt 2.x, VERSION2 callbacks).

MqttTransport is the daemon's long-lived connection: it subscribes to its channel and
branch, hands validated notifications from others to on_notification, calls on_connect
after every (re)subscription so the daemon can catch up, and publishes retained QoS 1
notifications. It runs the connection itself (connect, run until the link drops, back off
1..60 s, connect again) rather than through paho's loop_start/reconnect, because paho's
own reconnect loop swallows the reason a connection failed: this way every failure
becomes one precise line in the log and in `last_error`. publish_once() is the
short-lived variant for hooks: bounded in time, never raising because the broker is away.
"""

import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .config import Config, read_secret
from .message import MAX_SIZE, BadMessage, Notification, decode, encode, topic
from .transport_base import OnConnect, OnNotification, Transport
from .util import Error, announce_within, log, printable

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
URL_HINT = "git config autosync.mqtt.url mqtt://HOST:1883   (or mqtts://HOST:8883)"
# The largest packet a broker may send us: a notification (MAX_SIZE) with its topic and
# header fits in far less. paho reads a packet of any announced length (up to 256 MB) into
# memory before anything looks at it; Client stops before reading one this long.
MAX_PACKET = MAX_SIZE + 3 * 1024


class PacketTooLarge(OSError):
    """The broker announced a packet longer than MAX_PACKET."""


class Client(paho.Client):
    """paho's client, refusing a packet over MAX_PACKET bytes before reading it.

    paho reads a packet's fixed header one byte at a time, then its remaining length in
    one recv of that size: a read asking for more than MAX_PACKET is the body of a packet
    too long for us, and fails instead (paho then drops the connection)."""

    too_large: int | None = None  # the length the broker announced, once it did

    def _sock_recv(self, bufsize: int) -> bytes:
        if bufsize > MAX_PACKET:
            self.too_large = bufsize
            raise PacketTooLarge(f"a packet of {bufsize} bytes")
        return super()._sock_recv(bufsize)


def parse_url(url: object) -> tuple[bool, str, int]:
    """(tls, host, port) of mqtt://host[:port] or mqtts://host[:port] ([::1] for IPv6).

    A URL that is not one raises Error naming what is wrong with it, and the
    `git config autosync.mqtt.url ...` that fixes it (the URL meant, when it can be told)."""
    text = str(url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, -1
    if parts is None or parts.scheme not in DEFAULT_PORTS or not parts.hostname or \
            "@" in parts.netloc or parts.path not in ("", "/") or parts.query or \
            parts.fragment or port == 0 or not text.isprintable() or " " in text:
        raise Error(f"bad broker URL '{printable(masked(text))}' in autosync.mqtt.url: "
                    f"{_url_problem(text)}", _url_fix(text))
    return parts.scheme == "mqtts", parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def masked(url: str) -> str:
    """url as it may be shown: whatever comes before its last '@' (user name, password),
    after the scheme, is '***' - whatever the scheme, separators or slashes look like."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:?/+", head)  # mqtt:// mqtt// mqtt:/
    return f"{scheme.group(0) if scheme else ''}***@{host}"


def _url_problem(text: str) -> str:
    """What is wrong with a broker URL that parse_url refuses, in a few words (never a
    part of a user name or password)."""
    if "@" in text:
        return "a user name goes in autosync.mqtt.username, a password in a file " \
            "(autosync.mqtt.passwordFile)"
    if not text.isprintable() or " " in text:
        return "a space or a control character is in no host name"
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "it does not start with mqtt:// or mqtts://"
    if scheme.lower() not in DEFAULT_PORTS:
        return f"unknown scheme '{scheme}' (mqtt:// or mqtts://)"
    if "@" in rest.split("/", 1)[0]:
        return "a user name goes in autosync.mqtt.username, a password in a file " \
            "(autosync.mqtt.passwordFile)"
    netloc, slash, path = rest.partition("/")
    if path or "?" in netloc or "#" in netloc:
        return "a broker URL is only a host and a port"
    host, colon, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not colon:
        host = netloc
    if not host or host == "[]":
        return "no host"
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return f"the port '{port}' is not a number from 1 to 65535"
    return "not a host and a port"


def _url_fix(text: str) -> str:
    """The `git config` that sets the URL meant (mqtt//host:1883, host:1883, mqtt:/host,
    mqtt://host:notaport), else the general form."""
    m = re.fullmatch(r"(?:([A-Za-z][A-Za-z0-9+.-]*):?/{1,2})?"
                     r"([A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])(?::([^/@]*))?/?", text)
    if m:
        scheme = "mqtts" if (m.group(1) or "").lower() in ("mqtts", "ssl", "tls", "wss",
                                                          "https") else "mqtt"
        port = m.group(3) or ""
        if not (port.isdigit() and 0 < int(port) < 65536):
            port = str(DEFAULT_PORTS[scheme])
        guess = f"{scheme}://{m.group(2)}:{port}"
        try:
            urlsplit(guess).port  # noqa: B018 (a check: raises for a bad IPv6 literal)
        except ValueError:
            return URL_HINT
        return f"git config autosync.mqtt.url {guess}"
    return URL_HINT


def make_client(config: Config, name: str) -> tuple[Client, str, int]:
    """A configured, not yet connected client: credentials, TLS, no automatic reconnect."""
    tls, host, port = parse_url(config["mqtt.url"])
    client = Client(paho.CallbackAPIVersion.VERSION2,
                         client_id=f"autosync-{name[:40]}-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv311, clean_session=True,
                         reconnect_on_failure=False)
    if config["mqtt.username"]:
        path = config["mqtt.passwordFile"]
        password = read_secret(path, "autosync.mqtt.passwordFile", "broker") if path else None
        # paho sends bytes as they are (its annotation says str): any password file works
        client.username_pw_set(config["mqtt.username"], password)  # type: ignore[arg-type]
    if tls:
        ca = config["mqtt.caFile"] or None
        try:
            client.tls_set(ca_certs=ca)
        except (OSError, ssl.SSLError) as e:
            raise Error(f"cannot use the CA file '{ca}': {getattr(e, 'strerror', None) or e}",
                        "git config autosync.mqtt.caFile /path/to/ca.crt") from e
    return client, host, port


def describe_failure(exc: BaseException, url: str) -> str:
    """One human line for an exception raised while connecting."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"cannot verify the certificate of the broker at {url}: "
                f"{exc.verify_message or exc.reason} (check autosync.mqtt.caFile)")
    if isinstance(exc, ssl.SSLError) or (isinstance(exc, ConnectionResetError)
                                         and url.startswith("mqtts:")):
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        return (f"TLS with the broker at {url} failed: {reason.lower().replace('_', ' ')} "
                "(does that port speak TLS?)")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to the broker at {url}: connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker's host in {url}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"cannot connect to the broker at {url}: timed out"
    return f"cannot connect to the broker at {url}: " + \
        (getattr(exc, "strerror", None) or str(exc)).lower()


def refused(what: str, reason_code: ReasonCode, config: Config) -> str:
    """The broker said no to `what` (the login, the subscription to T)."""
    user = config["mqtt.username"]
    who = f" for user '{user}'" if user else ""
    return f"the broker at {config['mqtt.url']} refused {what}{who} ({str(reason_code).lower()})"


def too_large(url: str, size: int) -> str:
    return (f"the broker at {url} sent a packet of {size} bytes (a notification needs less "
            f"than {MAX_PACKET}); dropped the connection")


def silent(url: str) -> str:
    hint = "" if url.startswith("mqtts:") else ", or does it want mqtts://?"
    return f"the broker at {url} closed the connection without answering (wrong port{hint})"


class MqttTransport(Transport):
    def __init__(self, config: Config, sender: str, on_notification: OnNotification,
                 on_connect: OnConnect) -> None:
        super().__init__(config, sender, on_notification, on_connect, "autosync-mqtt")
        self.url: str = config["mqtt.url"]
        try:
            self.topic = topic(config.channel, config.branch)
        except BadMessage as e:
            raise Error(f"cannot announce over mqtt: {e}") from e
        self.client, self.host, self.port = make_client(config, sender)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.answered = False  # the broker answered the current connection attempt

    def describe(self) -> str:
        return f"{self.url} channel {self.config.channel}"

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.client.disconnect()
        except Exception:  # already gone: nothing to close
            pass
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    # -- connection ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopping.is_set():
            self.answered = False
            self.client.too_large = None
            try:
                self.client.connect(self.host, self.port, self.config["mqtt.keepalive"])
            except (OSError, ValueError) as e:
                self._failed(describe_failure(e, self.url))
            else:
                if self.stopping.is_set():  # stop() came while connecting
                    self.client.disconnect()
                try:
                    self.client.loop_forever()  # returns when the connection ends
                except Exception:  # a bug in a callback must not end notifications for good
                    log.exception("mqtt network loop failed")
                if self.stopping.is_set():
                    break
                size = self.client.too_large
                if self.connected:  # it came up: the backoff grows unless it lasted
                    self._lost(too_large(self.url, size) if size else
                               "lost the connection to the broker at " + self.url)
                elif size:
                    self._failed(too_large(self.url, size))
                elif not self.answered:
                    self._failed(silent(self.url))
            if self.stopping.wait(self.backoff.next_delay()):
                break
        self.connected = False

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        self.answered = True
        if reason_code.is_failure:
            self._failed(refused("the login", reason_code, self.config))
            client.disconnect()
            return
        self._up_line(f"connected to {self.url}; subscribing to {self.topic}")
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self._failed(refused(f"the subscription to '{self.topic}'", reason_codes[0],
                                 self.config))
            client.disconnect()
            return
        self._came_up(self._send)  # logged in and subscribed

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            if msg.topic != self.topic:
                return  # not ours (we subscribe to exactly one topic)
            note = decode(msg.payload, msg.topic)
        except (BadMessage, UnicodeDecodeError) as e:
            self.dropped(str(e))
            return
        self._hand_on(note)

    # -- publishing --------------------------------------------------------------------------
    def _send(self, note: Notification) -> paho.MQTTMessageInfo:
        return self.client.publish(topic(note.channel, note.branch), encode(note), qos=1,
                                   retain=True)

    def publish(self, note: Notification, timeout: float = 5.0) -> bool:
        """Publish (retained, QoS 1) and wait for the broker's ack; False when not delivered.

        Never raises. While disconnected the newest note is kept and sent on reconnect."""
        if not self._may_send(note):
            return False
        try:
            info = self._send(note)
            info.wait_for_publish(timeout)
            if info.is_published():
                return True
            log.warning("the broker at %s did not acknowledge within %gs", self.url, timeout)
        except (RuntimeError, ValueError, OSError) as e:
            log.warning("cannot publish to %s: %s", self.url, e)
            self.unsent = note
        return False


def publish_once(config: Config, notes: Sequence[Notification], timeout: float = 5.0) -> bool:
    """Connect, publish notes (retained, QoS 1), disconnect; True when all were acked.

    Takes at most timeout seconds in all (name lookup and TLS handshake included: the work
    runs in a daemon thread that is abandoned at the deadline). Never raises: a broker that
    is away, slow or refusing costs one log line and returns False."""
    if not notes:
        return True
    return announce_within(timeout, lambda: _publish(config, notes, timeout),
                           f"no answer from the broker at {config['mqtt.url']} within "
                           f"{timeout:g}s")


def _publish(config: Config, notes: Sequence[Notification], timeout: float) -> str | None:
    """publish_once's work: None when every note was acked, else what went wrong."""
    deadline = time.monotonic() + timeout
    url: str = config["mqtt.url"]

    def left() -> float:
        return max(0.0, deadline - time.monotonic())
    try:
        messages = [(topic(n.channel, n.branch), encode(n)) for n in notes]
        client, host, port = make_client(config, notes[0].sender)
    except BadMessage as e:
        return f"cannot announce: {e}"
    except Error as e:
        return e.message
    answered = threading.Event()
    refusal: list[str] = []

    def on_connect(client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            refusal.append(refused("the login", reason_code, config))
        answered.set()

    def on_disconnect(client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                      reason_code: ReasonCode, properties: Properties | None) -> None:
        if not answered.is_set():
            refusal.append(silent(url))
            answered.set()
    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.connect_timeout = max(0.1, left())
    try:
        client.connect(host, port, keepalive=max(5, int(timeout) + 1))
    except (OSError, ValueError) as e:
        return describe_failure(e, url)
    client.loop_start()
    try:
        if not answered.wait(left()):
            return f"no answer from the broker at {url} within {timeout:g}s"
        if refusal:
            return refusal[0]
        infos = [client.publish(t, payload, qos=1, retain=True) for t, payload in messages]
        for info in infos:
            info.wait_for_publish(left())
        if not all(info.is_published() for info in infos):
            return f"the broker at {url} did not acknowledge within {timeout:g}s"
        return None
    except (RuntimeError, ValueError, OSError) as e:
        return f"cannot publish to {url}: {e}"
    finally:
        client.disconnect()
        client.loop_stop()
