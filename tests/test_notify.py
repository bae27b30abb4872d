"""sd_notify against a real datagram socket; desktop notifications with and without a session."""

import os
import socket
import stat

import pytest

from autosync.notify import desktop, sd_notify


@pytest.fixture
def dgram(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    s.bind(str(path))
    s.settimeout(5)
    yield s, str(path)
    s.close()


def test_sd_notify_to_a_path_socket(dgram, monkeypatch):
    s, path = dgram
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sd_notify("READY=1\nSTATUS=watching")
    assert s.recv(4096) == b"READY=1\nSTATUS=watching"


def test_sd_notify_to_an_abstract_socket(monkeypatch):
    name = f"autosync-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1")
        assert s.recv(4096) == b"STOPPING=1"


def test_sd_notify_is_a_no_op_without_the_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert sd_notify("READY=1") is False  # logged, never raised


@pytest.fixture
def fake_notify_send(tmp_path, monkeypatch):
    """A real notify-send stand-in on PATH that records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "calls"
    tool = bindir / "notify-send"
    tool.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> '{record}'\necho >> '{record}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return record


def test_desktop_notification_with_a_session(fake_notify_send, monkeypatch):
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus")
    assert desktop("git-autosync kept both versions", "notes.md -> notes.conflict-a.md")
    assert fake_notify_send.read_text() == ("--app-name=git-autosync|--|git-autosync kept both "
                                            "versions|notes.md -> notes.conflict-a.md|\n")


def test_desktop_notification_without_a_session_only_logs(fake_notify_send, monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert desktop("summary", "body") is False
    assert not fake_notify_send.exists()
