"""Telling the world outside git: desktop notifications and systemd's sd_notify.

Both are best effort: without a desktop session or without NOTIFY_SOCKET they only log
(or do nothing), and they never raise.
"""

import os
import shutil
import socket
import subprocess

from .util import log


def desktop(summary: str, body: str = "") -> bool:
    """Show a desktop notification through notify-send when a session is there."""
    log.info("%s%s", summary, f": {body}" if body else "")
    session = any(os.environ.get(v) for v in
                  ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"))
    tool = shutil.which("notify-send")
    if not (session and tool):
        return False
    try:
        subprocess.run([tool, "--app-name=git-autosync", "--", summary, body[:500]],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=5)
        return True
    except (OSError, subprocess.TimeoutExpired):
        return False


def sd_notify(state: str) -> bool:
    """Send a state string ("READY=1", "STOPPING=1", "STATUS=...") to systemd.

    A no-op without NOTIFY_SOCKET (not started by systemd, or not Type=notify).
    Abstract sockets ('@name') are supported as systemd documents.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in "/@":
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.debug("sd_notify failed: %s", e)
        return False
