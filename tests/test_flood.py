"""A flood of valid notifications for commits nobody has: about one fetch, no process per
message, a few log lines. (Its CPU cost belongs in a benchmark; this checks behaviour.)"""

import os
import time

import paho.mqtt.client as paho
import pytest

from autosync.message import Notification, encode
from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster
from conftest import wait_for

FLOOD = 3000


@pytest.fixture
def cluster(tmp_path, tenv, toolkit, mosquitto):
    c = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    yield c
    c.stop()


def git_commands(trace):
    """{command: count} of the git processes a GIT_TRACE2 file recorded."""
    counts = {}
    with open(trace, errors="replace") as f:
        for line in f:
            if " cmd_name " in line:
                name = line.split(" cmd_name ", 1)[1].split()[0]
                counts[name] = counts.get(name, 0) + 1
    return counts


def test_a_flood_of_announcements_costs_about_one_fetch(cluster, mosquitto, tmp_path):
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    trace = tmp_path / "b-git.trace"
    b.env = dict(b.env, GIT_TRACE2=str(trace))
    b.start()
    wait_for(lambda: "subscribing to" in b.log() or "connected" in b.log(), timeout=30,
             what="b to reach the broker")
    before = git_commands(trace)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        for i in range(FLOOD):
            note = Notification("notes", "main", os.urandom(20).hex(), "flood:00000000",
                                time.time())
            info = client.publish("autosync/notes/main", encode(note), qos=1)
        info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()
    # a real edit still arrives after the flood: the clone is responsive
    a.write("after.txt", "after the flood\n")
    wait_for(lambda: b.read("after.txt") == "after the flood\n", timeout=60,
             what="the real edit after the flood")
    after = git_commands(trace)
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print("git processes during the flood:", spent)
    assert spent.get("cat-file", 0) < 50, spent  # not one per message
    assert spent.get("fetch", 0) <= 5, spent  # the remote is asked first in a burst
    announced = [l for l in b.log().splitlines() if "announced" in l and " INFO " in l]
    assert len(announced) <= 6, announced[:10]  # one line per 10 s, however many arrive
    assert b.running()
