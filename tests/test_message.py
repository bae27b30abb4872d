"""The notification format: round trips, strict decoding of hostile payloads, sender ids."""

import json
import logging
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autosync.config import Config
from autosync.git import Repo
from autosync.message import (BadMessage, DropLog, Notification, NotForUs, decode, encode,
                              sender_id, server_sender_id, topic)
from conftest import LIBEXEC, git

C = "c0ffee" * 6 + "c0ff"
C256 = "ab" * 32


def note(commit=C, sender="laptop:12345678", branch="main", channel="notes", time=1764032400.5):
    return Notification(channel, branch, commit, sender, time)


def payload(**fields):
    data = {"v": 1, "channel": "notes", "branch": "main", "commit": C, "sender": "x:1",
            "time": 1}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not DROP},
                      separators=(",", ":")).encode()


DROP = object()


@pytest.mark.parametrize("n", [note(), note(branch="feature/x"), note(commit=C256),
                               note(branch="über/straße", time=0), note(branch='say"hi"'),
                               note(branch="a" * 200, channel="n" * 128, sender="s" * 100)])
def test_round_trip(n):
    data = encode(n)
    assert len(data) <= 1024
    assert decode(data, topic(n.channel, n.branch)) == n
    assert decode(data) == n


def test_encoding_is_compact_json_with_exactly_the_documented_keys():
    assert encode(note()) == (b'{"v":1,"channel":"notes","branch":"main","commit":"' + C.encode()
                              + b'","sender":"laptop:12345678","time":1764032400.5}')


def test_topic():
    assert topic("notes", "main") == "autosync/notes/main"
    assert topic("notes", "feature/x") == "autosync/notes/feature/x"
    for channel, branch in [("notes", "a+b"), ("notes", "a#b"), ("notes", "a\0b"),
                            ("no/tes", "main"), ("+", "main"), ("notes", "../x"),
                            ("notes", "-x"), ("notes", ""), ("", "main"), ("notes", "a@{1}"),
                            ("notes", "x" * 201), ("notes", "a\udc80")]:
        with pytest.raises(BadMessage):
            topic(channel, branch)


HOSTILE = [
    b"not json", b"", b"[]", b"null", b'"string"', b"{}", b"1",
    payload(v=2), payload(v=True), payload(v="1"), payload(v=DROP),
    payload(branch="../x"), payload(branch="--upload-pack=touch /tmp/pwn"),
    payload(branch="-x"), payload(branch="a@{1}"), payload(branch="a\nb"),
    payload(branch="a\x7fb"), payload(branch="a\u0085b"), payload(branch="a+b"),
    payload(branch="#"), payload(branch="x/"), payload(branch="x.lock"),
    payload(branch="refs/heads/../../x"), payload(branch=""), payload(branch=["main"]),
    payload(branch="a\udc80"), payload(branch="x" * 201),
    payload(commit="g" * 40), payload(commit=C.upper()), payload(commit=C[:39]),
    payload(commit=C + "0"), payload(commit="HEAD"), payload(commit=None),
    payload(channel="../.."), payload(channel="no/tes"), payload(channel="+"),
    payload(channel=""), payload(channel=7),
    payload(sender=""), payload(sender="a b"), payload(sender="x\n"), payload(sender="s" * 101),
    payload(sender={"nested": [1, 2]}),
    payload(time="1"), payload(time=-1), payload(time=True), payload(time=None),
    payload(time=1e12), payload(time=DROP),
    payload(url="file:///etc"), payload(extra={"a": {"b": [1]}}),
    payload()[:-1] + b',"v":1}',  # a repeated key
    payload()[:-1] + b',"branch":"../x"}',  # a repeated key that would override
    payload().replace(b'"time":1', b'"time":NaN'),
    payload().replace(b'"time":1', b'"time":Infinity'),
    payload().replace(b'"time":1', b'"time":1e999'),
    payload().replace(b'"main"', b'"ma\xffin"'),  # not UTF-8
    b"[" * 1000, b'{"a":' * 200 + b"1" + b"}" * 200,
    b"x" * (10 * 1024 * 1024),
    payload(sender="s" * 1100),
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payloads_are_rejected(data):
    with pytest.raises(BadMessage) as info:
        decode(data, "autosync/notes/main")
    assert str(info.value) and "\n" not in str(info.value)


def test_topic_must_match_payload():
    with pytest.raises(BadMessage):
        decode(encode(note()), "autosync/notes/other")
    with pytest.raises(BadMessage):
        decode(encode(note()), "autosync/photos/main")


def test_payload_size_is_checked_before_parsing(monkeypatch):
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed a huge payload"))
    with pytest.raises(BadMessage, match="larger than 1024"):
        decode(b" " * 1025)


def test_encode_refuses_a_bad_note():
    for bad in (note(branch="../x"), note(commit="HEAD"), note(time=float("nan")),
                note(sender="a b")):
        with pytest.raises(BadMessage):
            encode(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_never_raises_anything_but_bad_message(data):
    try:
        decode(data)
    except BadMessage:
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "channel", "branch", "commit", "sender", "time",
                                        "x"]), JSON | st.sampled_from(["main", C, "notes", 1])))
def test_decoded_fields_are_always_safe(data):
    """Whatever a payload holds, an accepted one names a plain branch and a hex commit."""
    try:
        n = decode(json.dumps(data).encode())
    except BadMessage:
        return
    assert not n.branch.startswith("-") and ".." not in n.branch
    assert re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", n.commit)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_branches_that_topic_accepts_round_trip(branch):
    try:
        t = topic("notes", branch)
    except BadMessage:
        return
    assert "+" not in t and "#" not in t and "\0" not in t
    assert decode(encode(note(branch=branch)), t).branch == branch


def test_sender_ids(make_repo):
    a, b = make_repo("a"), make_repo("b")
    git(a, "config", "autosync.host", "my laptop/1")
    ca, cb = Config(Repo(a)), Config(Repo(b))
    ida = sender_id(Repo(a), ca)
    assert re.fullmatch(r"my_laptop_1:[0-9a-f]{8}", ida)
    (a / "sub").mkdir()
    assert sender_id(Repo(a / "sub"), ca) == ida  # stable: the same from anywhere inside
    assert sender_id(Repo(b), cb).split(":")[1] != ida.split(":")[1]
    assert server_sender_id(ca) == "my_laptop_1:server"
    for ident in (ida, server_sender_id(ca), sender_id(Repo(b), cb)):
        encode(note(sender=ident))  # valid senders


def test_a_clone_id_is_drawn_at_random_once_and_kept_without_loading_openssl(make_repo, env):
    """A first start names the clone at random and keeps the name; it has no use for
    hashlib (OpenSSL's libcrypto, 3.5 MB of the daemon for good). A clone whose daemon ran
    before clone-id files existed (a state.json, no clone-id) keeps its path's digest."""
    import hashlib
    import subprocess
    import sys
    code = ("import sys; from autosync.git import Repo; from autosync.message import "
            "repo_digest; print(repo_digest(Repo(sys.argv[1])), 'hashlib' in sys.modules)")
    fresh, older = make_repo("fresh"), make_repo("older")

    def digest(repo):
        out = subprocess.run([sys.executable, "-c", code, str(repo)], check=True,
                             env=dict(env, PYTHONPATH=str(LIBEXEC)), stdout=subprocess.PIPE,
                             text=True).stdout.split()
        return out[0], out[1] == "True"
    first, loaded = digest(fresh)
    assert re.fullmatch(r"[0-9a-f]{8}", first) and not loaded
    assert (fresh / ".git" / "autosync" / "clone-id").read_text().split("\n")[0] == first
    assert digest(fresh) == (first, False)
    (older / ".git" / "autosync").mkdir()
    (older / ".git" / "autosync" / "state.json").write_text("{}")
    named = hashlib.sha1(str(older / ".git").encode()).hexdigest()[:8]
    assert digest(older)[0] == named
    assert (older / ".git" / "autosync" / "clone-id").read_text().split("\n")[0] == named


def test_a_copy_of_a_clone_draws_a_name_of_its_own_a_moved_one_keeps_its_own(make_repo,
                                                                              tmp_path):
    """cp -a (rsync -a, a backup restored beside the original) copies clone-id too: under
    the original's name the copy took the original's notifications for its own echo and
    pushed to its ref. A copy is at another inode and another path: it draws a name. A
    clone moved (same inode) keeps its name, and so does one found at its path again (a
    file system that numbers inodes anew at each mount)."""
    import shutil
    from autosync.message import repo_digest
    orig = make_repo("orig")
    name = repo_digest(Repo(orig))
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy, symlinks=True)
    assert repo_digest(Repo(copy)) != name
    assert repo_digest(Repo(copy)) == repo_digest(Repo(copy))  # its own, kept
    assert repo_digest(Repo(orig)) == name
    moved = tmp_path / "moved"
    orig.rename(moved)
    assert repo_digest(Repo(moved)) == name
    # the same path, another inode (a FUSE file system mounted again)
    again = tmp_path / "again"
    shutil.copytree(moved, again, symlinks=True)
    state = again / ".git" / "autosync"
    state.rename(tmp_path / "aside")
    shutil.copytree(tmp_path / "aside", state)
    assert repo_digest(Repo(again)) != name  # (a copy first: a name of its own)
    kept = repo_digest(Repo(again))
    state.rename(tmp_path / "aside2")
    shutil.copytree(tmp_path / "aside2", state)
    assert repo_digest(Repo(again)) == kept


def test_a_clone_id_from_before_places_is_kept_and_given_its_place(make_repo, tmp_path):
    """A clone-id file holding the name alone (written this morning) names the clone as
    before; it is given its place, so that a copy made from now on draws a name."""
    import shutil
    from autosync.message import repo_digest
    r = make_repo("r")
    state = r / ".git" / "autosync"
    state.mkdir()
    (state / "clone-id").write_text("0badcafe\n")
    assert repo_digest(Repo(r)) == "0badcafe"
    assert (state / "clone-id").read_text().startswith("0badcafe\n")
    assert len((state / "clone-id").read_text().split("\n")) == 4
    copy = tmp_path / "copy"
    shutil.copytree(r, copy, symlinks=True)
    assert repo_digest(Repo(copy)) != "0badcafe"
    assert repo_digest(Repo(r)) == "0badcafe"
    assert sorted(p.name for p in state.iterdir()) == ["clone-id"]  # no temp file left


def test_drop_log_is_rate_limited(caplog):
    drop = DropLog(every=3600)
    with caplog.at_level(logging.WARNING, logger="autosync"):
        for i in range(1000):
            drop(f"bad {i}")
    assert len(caplog.records) == 1 and "bad 0" in caplog.records[0].getMessage()
    drop.next_at = 0  # the period is over
    with caplog.at_level(logging.WARNING, logger="autosync"):
        drop("later")
    assert "(and 999 more since)" in caplog.records[-1].getMessage()


def test_drop_log_says_what_at_its_level(caplog):
    relayed = DropLog(every=3600, what="relaying", level=logging.INFO)
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        for i in range(5):
            relayed(f"n{i}")
    assert [r.levelno for r in caplog.records] == [logging.INFO] + [logging.DEBUG] * 4
    assert caplog.records[0].getMessage() == "relaying: n0"


def test_another_channel_or_branch_is_not_for_us_before_anything_is_validated(monkeypatch):
    """decode(want=...) compares strings first: no branch check (once a git process) runs
    for a note meant for another channel or branch, even one that is invalid otherwise."""
    import autosync.message as message
    other = json.dumps({"v": 1, "channel": "photos", "branch": "main", "commit": "x",
                        "sender": "!", "time": -1}).encode()
    dev, ours = encode(note(branch="dev")), encode(note())
    checked = []
    monkeypatch.setattr(message, "check", lambda note: checked.append(note))
    with pytest.raises(NotForUs):
        decode(other, want=("notes", "main"))
    with pytest.raises(NotForUs):
        decode(dev, want=("notes", "main"))
    assert checked == []
    assert decode(ours, want=("notes", "main")) == note()
    assert len(checked) == 1
    assert not issubclass(NotForUs, BadMessage)  # not logged as an invalid notification


def test_a_clone_id_at_the_same_inode_of_another_device_is_a_copy(make_repo):
    """A snapshot (btrfs, ZFS, LVM) or a disk image mounted beside the original keeps its
    inode numbers: only the device tells the copy. The same device and inode at another
    path is the clone moved; the same inode of another device, at another path, a copy."""
    from autosync.message import repo_digest
    r = make_repo("r")
    state = r / ".git" / "autosync"
    state.mkdir()
    st = os.stat(state)
    (state / "clone-id").write_text(f"0badcafe\n{st.st_dev}:{st.st_ino}\n/moved/from\n")
    assert repo_digest(Repo(r)) == "0badcafe"
    (state / "clone-id").write_text(f"0badcafe\n{st.st_dev + 1}:{st.st_ino}\n/snap/shot\n")
    copy = repo_digest(Repo(r))
    assert copy != "0badcafe" and repo_digest(Repo(r)) == copy


def test_a_clone_id_temp_file_left_by_a_killed_process_of_the_same_pid_is_no_obstacle(
        make_repo):
    """A process killed between writing clone-id's temp file and linking it leaves
    clone-id.<pid>.tmp; a later process given that pid could not write the file (open
    "x" failed) and went by its path's digest while every other process drew a name."""
    from autosync.message import _path_digest, repo_digest
    r = make_repo("r")
    state = r / ".git" / "autosync"
    state.mkdir()
    (state / f"clone-id.{os.getpid()}.tmp").write_text("left\n")
    name = repo_digest(Repo(r))
    assert name != _path_digest(Repo(r))
    assert (state / "clone-id").read_text().split("\n")[0] == name
    assert sorted(p.name for p in state.iterdir()) == ["clone-id"]
