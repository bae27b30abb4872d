"""The MQTT/XMPP bridge: relays notifications between an MQTT channel and XMPP, both ways.

Payloads cross unchanged (the same JSON, the original sender), validated by each side's
transport on the way in. A notification is never sent back to the side it came from: the
bridge remembers the fingerprint (SHA-256 of the payload) of what it put into each side and
drops it when it comes back; the XMPP side also ignores its own occupant and resource.
Relaying runs in the bridge's own thread, so neither transport's network thread ever waits
for the other side.
"""

import argparse
import hashlib
import logging
import queue
import signal
import threading
from collections import OrderedDict

from .config import Config
from .git import Repo
from .message import DropLog, Notification, encode, repo_digest
from .mqtt import MqttTransport, masked
from .transport_base import Transport
from .util import Error, log, setup_logging
from .xmpp import XmppTransport

REMEMBER = 4096  # fingerprints kept per side
BACKLOG = 1000  # notifications waiting to be relayed; more are dropped (and logged)


def fingerprint(note: Notification) -> str:
    return hashlib.sha256(encode(note)).hexdigest()


class Bridge:
    def __init__(self, config: Config) -> None:
        if not config["mqtt.url"] or not config["xmpp.jid"]:
            raise Error("the bridge needs both autosync.mqtt.url and autosync.xmpp.jid",
                        "git config autosync.mqtt.url mqtt://HOST:1883",
                        "git config autosync.xmpp.jid user@example.org")
        ident = f"bridge:{repo_digest(config.repo)}"
        self.lock = threading.Lock()
        self.put_into: dict[str, OrderedDict[str, bool]] = {
            "mqtt": OrderedDict(), "xmpp": OrderedDict()}
        # (note, source, target); None ends the relaying thread
        self.backlog: queue.Queue[tuple[Notification, str, str] | None] = queue.Queue(BACKLOG)
        self.sides: dict[str, Transport] = {
            "mqtt": MqttTransport(config, ident, lambda n: self.relay(n, "mqtt", "xmpp"),
                                  lambda: None),
            "xmpp": XmppTransport(config, ident, lambda n: self.relay(n, "xmpp", "mqtt"),
                                  lambda: None)}
        self.relayed = 0
        # one line per 10 s however many notifications a flood brings (as the daemon does)
        self.relay_log = DropLog(what="relaying", level=logging.INFO)
        self.full_log = DropLog(what=f"bridge backlog full ({BACKLOG}): dropped a notification")
        self.thread = threading.Thread(target=self._run, name="autosync-bridge", daemon=True)

    def relay(self, note: Notification, source: str, target: str) -> None:
        """Called by the source transport's thread: queue note for the target side."""
        key = fingerprint(note)
        with self.lock:
            if key in self.put_into[source] or key in self.put_into[target]:
                return  # our own relay coming back, or a second delivery
            self.put_into[target][key] = True
            if len(self.put_into[target]) > REMEMBER:
                self.put_into[target].popitem(last=False)
        try:
            self.backlog.put_nowait((note, source, target))
        except queue.Full:
            self.full_log(f"{note.commit[:10]} from {source}")

    def _run(self) -> None:
        while True:
            item = self.backlog.get()
            if item is None:
                return
            note, source, target = item
            self.relay_log(f"{note.sender} {note.commit[:10]} from {source} to {target}")
            self.sides[target].publish(note)  # while target is away it keeps the newest
            with self.lock:
                self.relayed += 1

    def start(self) -> None:
        self.thread.start()
        for side in self.sides.values():
            side.start()

    def stop(self) -> None:
        for side in self.sides.values():
            side.stop()
        if self.thread.is_alive():
            try:
                self.backlog.put(None, timeout=5)
            except queue.Full:
                pass
            self.thread.join(timeout=10)

    @property
    def connected(self) -> bool:
        return all(side.connected for side in self.sides.values())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="autosync-bridge",
        description="Relay git-autosync notifications between the MQTT broker "
                    "(autosync.mqtt.*) and XMPP (autosync.xmpp.*), both ways, in the "
                    "foreground until SIGTERM or SIGINT.")
    ap.add_argument("-C", dest="dir", default=".", help="repository whose config to use")
    args = ap.parse_args(argv)
    setup_logging()
    config = Config(Repo(args.dir))
    bridge = Bridge(config)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: done.set())
    bridge.start()
    log.info("bridging %s and xmpp %s", masked(config["mqtt.url"]), config["xmpp.jid"])
    done.wait()
    bridge.stop()
    return 0
