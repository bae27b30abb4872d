"""The bad-input corpus, end to end through real daemons, and payload fuzzing.

Each item gets its documented behaviour on the other clone and never a traceback:
odd names arrive byte for byte, 0-byte files and symlinks (even pointing outside the tree)
arrive as such, permission bits travel, files above autosync.maxFileSize and nested
repositories stay local with a warning, .gitignore edits take effect at once.
"""

import os
import unicodedata

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autosync.daemon import Daemon
from autosync.git import Repo
from autosync.message import Notification, encode
from brokers import mosquitto  # noqa: F401  (fixture)
from cluster import Cluster, wait_converged
from conftest import git, wait_for

NAMES = [
    "with space.txt", "new\nline.txt", "tab\tin name", "-leading-dash", "--upload-pack=x",
    "HEAD", "refs/heads/main", "ünïcødé-nfc-" + unicodedata.normalize("NFC", "é"),
    "unicode-nfd-" + unicodedata.normalize("NFD", "é"), "quote\"and'apostrophe",
    "back\\slash", "*star?[glob]", "l" * 200 + ".txt", "deep/" * 20 + "file.txt",
]


@pytest.fixture
def pair(tmp_path, tenv, toolkit, mosquitto):
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url, maxFileSize="1m")
    a, b = cluster.clone("a"), cluster.clone("b")
    yield cluster, a, b
    cluster.stop()


def test_file_name_corpus_arrives_byte_for_byte(pair):
    cluster, a, b = pair
    for i, name in enumerate(NAMES):
        a.write(name, f"content {i}\n")
    for i, name in enumerate(NAMES):
        wait_for(lambda: b.read(name) == f"content {i}\n", what=f"{name!r} on b")
    wait_converged([a, b], cluster.server)
    assert "Traceback" not in a.log() + b.log()


def test_empty_files_symlinks_and_modes(pair, tmp_path):
    cluster, a, b = pair
    (a.path / "empty").write_bytes(b"")
    os.symlink("/etc/passwd", a.path / "outside-link")  # points outside: stored as a link
    os.symlink("empty", a.path / "inside-link")
    (a.path / "script.sh").write_text("#!/bin/sh\necho hi\n")
    wait_for(lambda: b.read("script.sh") is not None, what="script on b")
    os.chmod(a.path / "script.sh", 0o755)
    wait_for(lambda: os.path.lexists(b.path / "outside-link") and
             os.access(b.path / "script.sh", os.X_OK) and (b.path / "empty").exists(),
             what="links, empty file and mode on b")
    assert os.readlink(b.path / "outside-link") == "/etc/passwd"
    assert os.readlink(b.path / "inside-link") == "empty"
    assert (b.path / "empty").read_bytes() == b""
    wait_converged([a, b], cluster.server)


def test_large_file_and_nested_repository_stay_local_with_a_warning(pair):
    cluster, a, b = pair
    with open(a.path / "big.bin", "wb") as f:  # above the cluster's maxFileSize (1m)
        f.truncate(2 * 1024 * 1024)
    git(a.path, "init", "-q", "inner")
    (a.path / "inner" / "x").write_text("inner file")
    a.write("after.txt", "after the big ones\n")
    wait_for(lambda: b.read("after.txt") == "after the big ones\n", what="the normal file")
    wait_for(lambda: "big.bin" in a.autosync("status").stdout, what="the warning in status")
    status = a.autosync("status").stdout
    assert "not committed (larger than autosync.maxFileSize): big.bin" in status
    assert "nested repository not synced: inner" in status
    assert not (b.path / "big.bin").exists() and not (b.path / "inner").exists()
    assert "Traceback" not in a.log()


def test_gitignore_edit_takes_effect_at_once(pair):
    cluster, a, b = pair
    a.write(".gitignore", "*.log\nbuild/\n")
    wait_for(lambda: b.read(".gitignore") == "*.log\nbuild/\n", what=".gitignore on b")
    a.write("debug.log", "noise\n")
    a.write("build/out.o", "binary\n")
    a.write("kept.txt", "kept\n")
    wait_for(lambda: b.read("kept.txt") == "kept\n", what="kept.txt on b")
    wait_converged([a, b], cluster.server)
    files = a.files()
    assert "debug.log" not in files and "build/out.o" not in files


def test_two_hundred_megabyte_file_with_default_limit(tmp_path, tenv, toolkit, mosquitto):
    """The default limit is 100 MB: a 200 MB file is skipped, everything else goes on."""
    cluster = Cluster(tmp_path, tenv, toolkit, broker_url=mosquitto.url)
    try:
        a, b = cluster.clone("a"), cluster.clone("b")
        with open(a.path / "video.raw", "wb") as f:
            f.truncate(200 * 1024 * 1024)  # sparse: 200 MB without using the disk
        (a.path / "zero").write_bytes(b"")
        wait_for(lambda: b.read("zero") == "", what="the empty file")
        wait_for(lambda: "video.raw" in a.autosync("status").stdout, what="the warning")
        assert "video.raw" not in a.files()
    finally:
        cluster.stop()


# -- payload fuzzing: the only thing a payload can cause is one fetch request ---------------------
@pytest.fixture
def daemon_parts(make_repo, server_and_clones):
    _, clone = server_and_clones
    path = clone("fuzzed")
    git(path, "config", "autosync.mqtt.url", "mqtt://127.0.0.1:1")
    daemon = Daemon(Repo(path))  # built, never run: we read what its network was asked
    daemon.engine.sender = daemon.transport.sender = "fuzzed:00000000"
    return path, daemon, daemon.transport


def refs_and_files(path):
    return (git(path, "for-each-ref", "--format=%(refname) %(objectname)"),
            sorted(p.name for p in path.iterdir()))


COMMIT = st.text("0123456789abcdef", min_size=40, max_size=40)
PAYLOADS = st.one_of(
    st.binary(max_size=1500),
    st.builds(lambda c, b, s, t: encode(Notification("notes", b, c, s, t)),
              COMMIT, st.sampled_from(["main", "other", "feature/x"]),
              st.sampled_from(["peer:1", "fuzzed:00000000", "server:server"]),
              st.floats(0, 2e9)),
    st.dictionaries(st.sampled_from(["v", "channel", "branch", "commit", "sender", "time"]),
                    st.one_of(st.integers(), st.text(max_size=80), COMMIT, st.none()))
    .map(lambda d: __import__("json").dumps(d).encode()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=PAYLOADS, topic=st.sampled_from(["autosync/notes/main", "autosync/notes/other",
                                                "autosync/x/main"]))
def test_a_payload_can_at_most_request_one_fetch(daemon_parts, payload, topic):
    path, daemon, transport = daemon_parts
    before = refs_and_files(path)
    daemon.network.wanted.clear()
    daemon.network.announced.clear()
    msg = paho.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    transport._on_message(transport.client, None, msg)
    # at most: "this commit was announced" (the network thread fetches if it is missing)
    assert daemon.network.wanted <= {"announced"}
    assert len(daemon.network.announced) <= 1
    assert daemon.events.empty()
    assert refs_and_files(path) == before


def test_a_valid_notification_from_a_peer_requests_exactly_one_fetch(daemon_parts):
    """A notification only names a commit; the network thread fetches when it is missing."""
    path, daemon, transport = daemon_parts
    msg = paho.MQTTMessage(topic=b"autosync/notes/main")
    msg.payload = encode(Notification("notes", "main", "ab" * 20, "peer:1", 1.0))
    transport._on_message(transport.client, None, msg)
    assert daemon.network.wanted == {"announced"} and daemon.network.announced == {"ab" * 20}
    assert daemon.repo.missing_commits(daemon.network.announced) == {"ab" * 20}  # so: a fetch
    daemon.network.wanted.clear()
    transport._on_message(transport.client, None, msg)  # the same commit again: nothing
    assert daemon.network.wanted == set()
