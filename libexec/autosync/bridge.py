"""The MQTT/XMPP bridge: relays notifications between an MQTT channel and XMPP, both ways.

Payloads cross unchanged (the same JSON, the original sender). A notification is never sent
back to the side it came from: the bridge remembers what it put into each side and drops it
when it comes back, and drops a second delivery of what it relayed already.
"""

import argparse
import hashlib
import signal
import threading
from collections import OrderedDict

from .config import Config
from .git import Repo
from .util import Error, log, setup_logging

REMEMBER = 4096


class Bridge:
    def __init__(self, config):
        from .mqtt import MqttTransport
        from .xmpp import XmppTransport
        if not config["mqtt.url"] or not config["xmpp.jid"]:
            raise Error("the bridge needs both autosync.mqtt.url and autosync.xmpp.jid",
                        "git config autosync.xmpp.jid user@example.org")
        digest = hashlib.sha1(config.repo.common_dir.encode(errors="surrogateescape"))
        ident = f"bridge:{digest.hexdigest()[:8]}"
        self.lock = threading.Lock()
        self.put_into = {"mqtt": OrderedDict(), "xmpp": OrderedDict()}
        self.sides = {
            "mqtt": MqttTransport(config, ident, lambda n: self.relay(n, "mqtt", "xmpp"),
                                  lambda: None),
            "xmpp": XmppTransport(config, ident, lambda n: self.relay(n, "xmpp", "mqtt"),
                                  lambda: None)}
        self.relayed = 0

    def relay(self, note, source, target):
        key = (note.channel, note.branch, note.commit, note.sender)
        with self.lock:
            if key in self.put_into[source] or key in self.put_into[target]:
                return  # our own relay coming back, or a second delivery
            self.put_into[target][key] = True
            if len(self.put_into[target]) > REMEMBER:
                self.put_into[target].popitem(last=False)
            self.relayed += 1
        log.info("relaying %s %s from %s to %s", note.sender, note.commit[:10], source, target)
        self.sides[target].publish(note)

    def start(self):
        for side in self.sides.values():
            side.start()

    def stop(self):
        for side in self.sides.values():
            side.stop()

    @property
    def connected(self):
        return all(side.connected for side in self.sides.values())


def main(argv):
    ap = argparse.ArgumentParser(
        prog="autosync-bridge",
        description="Relay git-autosync notifications between the MQTT broker "
                    "(autosync.mqtt.*) and XMPP (autosync.xmpp.*), both ways, until SIGTERM.")
    ap.add_argument("-C", dest="dir", default=".", help="repository whose config to use")
    args = ap.parse_args(argv)
    setup_logging()
    config = Config(Repo(args.dir))
    bridge = Bridge(config)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: done.set())
    bridge.start()
    log.info("bridging %s and xmpp %s", config["mqtt.url"], config["xmpp.jid"])
    done.wait()
    bridge.stop()
    return 0
