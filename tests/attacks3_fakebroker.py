"""A scripted hostile MQTT broker on 127.0.0.1 for test_attacks3.

usage: attacks3_fakebroker.py MODE   (flap, badpublish, badsuback, bigpublish, unknown)

Prints its port, then one line `session <CLOCK_MONOTONIC seconds>` each time a client has
logged in and subscribed. Every session answers CONNECT and SUBSCRIBE, then:
  flap        closes the connection at once (a flapping broker or proxy)
  badpublish  a PUBLISH whose topic length points past the packet
  badsuback   a SUBACK for a message id that was never used
  bigpublish  a PUBLISH announcing 200 MB, and the 200 MB
  unknown     a packet of a type MQTT does not have
Bounded: it serves at most MAX_CONNECTIONS connections or LIFETIME seconds, and the test
stops it by PID.
"""

import socket
import sys
import threading
import time

LIFETIME = 300.0
MAX_CONNECTIONS = 200
print_lock = threading.Lock()


def read_packet(c):
    h = c.recv(1)
    if not h:
        raise EOFError
    n, mult = 0, 1
    for _ in range(4):
        b = c.recv(1)[0]
        n += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    data = b""
    while len(data) < n:
        d = c.recv(n - len(data))
        if not d:
            raise EOFError
        data += d
    return h[0], data


def remaining_length(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def drain(c):
    """Read until the client closes (or the socket's timeout)."""
    while c.recv(4096):
        pass


def serve(c, mode):
    c.settimeout(60)
    try:
        read_packet(c)  # CONNECT
        c.sendall(b"\x20\x02\x00\x00")  # CONNACK: accepted
        _, d = read_packet(c)  # SUBSCRIBE
        c.sendall(b"\x90\x03" + d[:2] + b"\x01")  # SUBACK: granted QoS 1
        with print_lock:
            print(f"session {time.monotonic():.3f}", flush=True)
        if mode == "flap":
            c.shutdown(socket.SHUT_WR)  # the client sees the end right after its SUBACK
        elif mode == "badpublish":
            c.sendall(b"\x30\x04\xff\xff\x41\x41")  # topic length beyond the packet
        elif mode == "badsuback":
            c.sendall(b"\x90\x02\x00\x01")
        elif mode == "bigpublish":
            c.sendall(b"\x30" + remaining_length(200 * 1024 * 1024))
            chunk = b"\x00" * (1 << 20)
            for _ in range(200):
                c.sendall(chunk)
        elif mode == "unknown":
            c.sendall(b"\xf0\x00")
        drain(c)
    except (OSError, EOFError, IndexError):
        pass  # the client went away: what a hostile broker expects
    finally:
        c.close()


def main():
    mode = sys.argv[1]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    print(srv.getsockname()[1], flush=True)
    deadline = time.monotonic() + LIFETIME
    for _ in range(MAX_CONNECTIONS):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        srv.settimeout(left)
        try:
            c, _ = srv.accept()
        except socket.timeout:
            break
        threading.Thread(target=serve, args=(c, mode), daemon=True).start()


if __name__ == "__main__":
    main()
