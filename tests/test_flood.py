"""A flood of valid notifications for commits nobody has: about one fetch, no process per
message, a few log lines. (Its CPU cost belongs in a benchmark; this checks behaviour.)"""

from brokers import cluster, mosquitto  # noqa: F401  (fixtures)
from cluster import git_processes, publish_flood
from conftest import wait_for

FLOOD = 3000


def test_a_flood_of_announcements_costs_about_one_fetch(cluster, mosquitto, tmp_path):
    a = cluster.clone("a")
    b = cluster.clone("b", start=False)
    trace = tmp_path / "b-git.trace"
    b.env = dict(b.env, GIT_TRACE2=str(trace))
    b.start()
    wait_for(lambda: "subscribing to" in b.log() or "connected" in b.log(), timeout=30,
             what="b to reach the broker")
    before = git_processes(trace)
    publish_flood(mosquitto.port, FLOOD)
    # a real edit still arrives after the flood: the clone is responsive
    a.write("after.txt", "after the flood\n")
    wait_for(lambda: b.read("after.txt") == "after the flood\n", timeout=60,
             what="the real edit after the flood")
    after = git_processes(trace)
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print("git processes during the flood:", spent)
    assert spent.get("cat-file", 0) < 50, spent  # not one per message
    assert spent.get("fetch", 0) <= 5, spent  # the remote is asked first in a burst
    announced = [l for l in b.log().splitlines() if "announced" in l and " INFO " in l]
    assert len(announced) <= 6, announced[:10]  # one line per 10 s, however many arrive
    assert b.running()
