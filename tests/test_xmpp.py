"""The XMPP client and transport against a real prosody (the bridge: test_bridge.py)."""

import base64
import os
import re
import signal
import socket
import ssl
import threading
import time
from contextlib import contextmanager

import pytest

import autosync.xmpp
from autosync.config import Config
from autosync.git import Repo
from autosync.message import Notification, encode
from autosync.xmpp import (MAX_STANZA, SCRAM_MAX_ITERATIONS, StreamError, StreamParser,
                           XmppClient, XmppError, XmppTransport, publish_once, scram_client)
from conftest import git, wait_for
from prosody import ROOMS, prosody, prosody_plain  # noqa: F401  (fixtures)

C = "ab" * 20


def note(sender, commit=C):
    return Notification("notes", "main", commit, sender, 1764032400.0)


def client(server, jid, password="secret", **kw):
    kw.setdefault("ca_file", server.ca_file)
    return XmppClient(jid, password, server="127.0.0.1", port=server.port, **kw)


# -- the protocol pieces ------------------------------------------------------------------------
def test_scram_sha1_matches_the_rfc_5802_example():
    conv = scram_client("user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert next(conv) == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = conv.send(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,"
                      b"i=4096")
    assert final == (b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                     b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert conv.send(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") is None


def test_scram_rejects_a_server_that_does_not_know_the_password():
    conv = scram_client("user", "pencil", nonce="abc")
    next(conv)
    conv.send(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
    with pytest.raises(XmppError, match="failed to prove"):
        conv.send(b"v=" + base64.b64encode(b"x" * 20))


def test_scram_rejects_a_foreign_nonce_and_absurd_iterations():
    for challenge in (b"r=zzz,s=QSXCR+Q6sek8bf92,i=4096", b"r=abcd,s=QSXCR+Q6sek8bf92,i=999999999"):
        conv = scram_client("user", "pencil", nonce="abc")
        next(conv)
        with pytest.raises(XmppError):
            conv.send(challenge)


HEAD = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
       b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"


@pytest.mark.parametrize("hostile", [
    b"<message><body>" + b"A" * (MAX_STANZA + 10) + b"</body></message>",
    b"<message><body>unclosed</message>",
    b"<!DOCTYPE lol [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]><message/>",
    b"<?evil instruction?><message/>",
    b"<a>" * 100,
    b"</stream:stream>",
    b"<message><body>\xff\xfe</body></message>",
], ids=["oversized", "malformed", "entities", "pi", "deep", "closed", "not-utf8"])
def test_hostile_streams_end_cleanly(hostile):
    parser = StreamParser()
    parser.feed(HEAD)
    with pytest.raises(StreamError):
        for i in range(0, len(hostile), 1000):  # arrives in pieces, as from a socket
            parser.feed(hostile[i:i + 1000])


@pytest.mark.parametrize("head", [
    "<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE x [<!ENTITY a 'b'>]><s/>".encode("utf-16"),
    "<?xml version='1.0' encoding='cp037'?><!DOCTYPE x [<!ENTITY a 'b'>]><s/>".encode("cp037"),
    b"<?xml version='1.0' encoding='cp037'?>" + "<!DOCTYPE x [<!ENTITY a 'b'>]>".encode("cp037"),
], ids=["utf-16", "ebcdic", "ebcdic-after-declaration"])
def test_another_encoding_cannot_hide_a_dtd(head):
    with pytest.raises(StreamError):
        StreamParser().feed(head)


def test_parser_memory_stays_bounded():
    parser = StreamParser()
    parser.feed(HEAD)
    for i in range(5000):
        got = parser.feed(b"<message><body>x</body></message>")
        assert len(got) == 1
    assert len(parser.root) == 0


def test_parser_knows_whether_anything_follows_the_last_stanza():
    """buffered() is False exactly where a stanza (and whitespace after it) ends, wherever
    the stream is cut: '>' and quotes in attribute values and text do not fool it."""
    stanzas = [b"<message a='1>' b=\"x'/>\"><body>a > b / c</body><x/></message>",
               b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", b"<iq id=\"q'\"></iq>"]
    stream = stanzas[0] + b"  " + stanzas[1] + b"\n" + stanzas[2]
    ends = [stream.index(s) + len(s) for s in stanzas]
    quiet = {0, ends[0], ends[0] + 1, ends[0] + 2, ends[1], ends[1] + 1, ends[2]}
    for cut in range(len(stream) + 1):
        for step in (1, 7, len(stream)):  # a byte at a time, small pieces, at once
            parser = StreamParser()
            parser.feed(HEAD)
            got = []
            for i in range(0, cut, step):
                got += parser.feed(stream[i:min(i + step, cut)])
            assert parser.buffered() is (cut not in quiet), (cut, step)
            assert len(got) == sum(cut >= e for e in ends), (cut, step)


# -- against prosody ------------------------------------------------------------------------------
def test_login_with_scram_over_starttls(prosody):
    jid = prosody.register("alice", "secret")
    c = client(prosody, jid).connect()
    try:
        assert c.tls and c.jid.startswith("alice@localhost/")
    finally:
        c.close()


def test_wrong_password_is_one_clear_error(prosody):
    jid = prosody.register("alice", "secret")
    with pytest.raises(XmppError) as e:
        client(prosody, jid, "wrong").connect()
    assert e.value.message == "the xmpp server refused the login for 'alice@localhost' " \
                              "(not-authorized)"


def test_wrong_ca_is_refused(prosody, tmp_path):
    from brokers import make_ca
    (tmp_path / "other").mkdir()
    wrong = make_ca(tmp_path / "other", names=("localhost",))[0]
    jid = prosody.register("alice", "secret")
    with pytest.raises(XmppError, match="cannot verify the certificate"):
        client(prosody, jid, ca_file=wrong).connect()


def test_plaintext_only_when_allowed(prosody_plain):
    jid = prosody_plain.register("bob", "secret")
    with pytest.raises(XmppError, match="does not offer STARTTLS"):
        client(prosody_plain, jid).connect()
    c = client(prosody_plain, jid, allow_plaintext=True).connect()
    assert not c.tls
    c.close()


def test_connection_refused_is_one_line(tmp_path):
    from conftest import free_port
    with pytest.raises(XmppError, match="cannot connect to the xmpp server 127.0.0.1:"):
        XmppClient("a@localhost", "x", server="127.0.0.1", port=free_port()).connect()


@pytest.mark.parametrize("hostile, error", [
    (b"<!DOCTYPE x [<!ENTITY a 'b'><!ENTITY b '&a;&a;&a;&a;&a;'>]><stream:features/>", "DTD"),
    (b"<stream:features><x>" + b"y" * (MAX_STANZA + 1), "larger than"),
    (b"<stream:features><a></b></stream:features>", "malformed"),
    (b"<stream:features/></stream:stream>", "closed the xmpp stream|STARTTLS"),
], ids=["billion-laughs", "oversized", "malformed", "closed"])
def test_a_hostile_server_cannot_crash_the_client(hostile, error):
    """A real socket peer that answers the stream header with hostile XML: one clean error."""
    with scripted_server(HEAD + hostile) as port:
        with pytest.raises(XmppError, match=error):
            XmppClient("a@localhost", "x", server="127.0.0.1", port=port, timeout=5).connect()


@pytest.mark.parametrize("reply", [b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                                   b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                                   b"dj1ub3RoaW5n</success>"], ids=["no-proof", "bad-proof"])
def test_a_server_that_skips_the_scram_proof_is_refused(reply):
    """An impostor that accepts any password without proving it knows ours (plaintext
    allowed here so that the fake needs no TLS)."""
    features = (HEAD + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:"
                b"xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms>"
                b"</stream:features>")
    with scripted_server(features, reply) as port:
        with pytest.raises(XmppError, match="SCRAM"):
            XmppClient("a@localhost", "x", server="127.0.0.1", port=port,
                       allow_plaintext=True, timeout=5).connect()


@contextmanager
def loopback_server(handle, connections=1):
    """A real peer on 127.0.0.1: handle(conn) for each of `connections` connections (10 s
    timeout; OSError ends that one), in a thread stopped and joined on exit. Yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(connections)
    srv.settimeout(30)

    def serve():
        for _ in range(connections):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.settimeout(10)
            try:
                handle(conn)
            except OSError:
                pass
            finally:
                conn.close()
    t = threading.Thread(target=serve)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        try:
            srv.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
        except OSError:
            pass
        t.join(30)
        srv.close()
        assert not t.is_alive()


@contextmanager
def scripted_server(*replies, connections=1, heard=None):
    """A real loopback peer: on each of `connections` connections it answers each thing the
    client sends with the next of `replies` (bytes, or a function of what the client sent),
    then waits for one more read and hangs up. What the client sent goes to `heard`."""
    heard = [] if heard is None else heard

    def handle(conn):
        for reply in replies:
            heard.append(conn.recv(4096))
            conn.sendall(reply(heard[-1]) if callable(reply) else reply)
        heard.append(conn.recv(4096))
    with loopback_server(handle, connections) as port:
        yield port


# -- a hostile server or network around STARTTLS (CVE-2011-0411) ------------------------------
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PROCEED = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
OFFER_TLS = b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" \
            b"</stream:features>"
JID = "alice@localhost"
FORGED_FEATURES = (f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>PLAIN</mechanism>"
                   "</mechanisms></stream:features>").encode()
# everything a client needs to believe it is logged in, then a notification from its account
FORGED_SESSION = FORGED_FEATURES + (
    f"<success xmlns='{SASL}'/>"
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
    f"<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    f"<jid>{JID}/autosync</jid></bind></iq>"
    f"<message type='chat' from='{JID}/mallory' to='{JID}'><body>"
    + encode(Notification("notes", "main", "6" * 40, "m:6", 1764032400.0)).decode()
    + "</body></message>").encode()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """(ca file, certificate, key) of a test CA and a certificate for 'localhost'."""
    from servers import make_ca
    return make_ca(tmp_path_factory.mktemp("xmpp-ca"), names=("localhost",))


def read_until(conn, marker, limit=64):
    """Read until marker has arrived (at most `limit` reads): what was read."""
    data = b""
    for _ in range(limit):
        chunk = conn.recv(4096)
        data += chunk
        if not chunk or marker in data:
            break
    return data


@contextmanager
def starttls_server(tls_files, injected, connections=1):
    """A server (or a network attacker in front of a real one) that offers STARTTLS, answers
    the client's <starttls/> with <proceed/> followed, in the same send(), by `injected`,
    then does TLS with a certificate the client trusts. Yields (port, what happened on each
    connection: "no TLS", or the stream header the client sent over TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files[1], tls_files[2])
    log = []

    def handle(conn):
        try:
            read_until(conn, b"'>")  # the client's stream header
            conn.sendall(HEAD + OFFER_TLS)
            read_until(conn, b"/>")  # <starttls/>
            conn.sendall(PROCEED + injected)
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                log.append("no TLS")
                return
            with tls:
                log.append(read_until(tls, b"'>"))  # its new stream header; then hang up
        except OSError as e:
            log.append(f"server: {e}")
    with loopback_server(handle, connections) as port:
        yield port, log


def test_the_scripted_starttls_server_does_tls(tls_files):
    """The control for the injection tests below: with nothing injected the client gets
    through the TLS handshake and opens its new stream over TLS."""
    with starttls_server(tls_files, b"") as (port, log):
        c = XmppClient(JID, "secret", server="127.0.0.1", port=port, ca_file=tls_files[0],
                       timeout=5)
        with pytest.raises(XmppError, match="closed the connection|closed the xmpp stream"):
            c.connect()
    assert len(log) == 1 and log[0].startswith(b"<?xml version='1.0'?><stream:stream")


@pytest.mark.parametrize("injected", [
    FORGED_FEATURES,
    FORGED_SESSION,
    FORGED_FEATURES[:40],  # half a stanza, still in the parser
    b"x",  # text after <proceed/>
    "é".encode()[:1],  # half a UTF-8 character, still in the decoder
    b" " * 70000 + FORGED_FEATURES,  # more than one read: the rest waits in the socket
], ids=["features", "session", "partial", "text", "half-utf8", "in-socket"])
def test_plaintext_injected_after_starttls_is_refused(tls_files, injected):
    """Bytes that arrive with <proceed/> came before TLS: never read as part of the TLS
    stream (CVE-2011-0411). The client hangs up before the handshake; the forged features
    never make it offer its password."""
    with starttls_server(tls_files, injected) as (port, log):
        c = XmppClient(JID, "secret", server="127.0.0.1", port=port, ca_file=tls_files[0],
                       timeout=5)
        with pytest.raises(XmppError) as e:
            c.connect()
        assert e.value.message == f"the xmpp server 127.0.0.1:{port} sent more after " \
                                  "<proceed/> (data injected into the connection?)"
        assert c.sock is None and c.jid is None
    assert log == ["no TLS"]


def test_a_transport_never_acts_on_injected_stanzas(tls_files, xmpp_config, peers, caplog):
    """The whole forged session (login, binding, a notification from our own account)
    injected after <proceed/>: the transport reports one line, reconnects with backoff,
    and never hands on the forged notification."""
    server = type("Server", (), {"ca_file": tls_files[0]})
    with starttls_server(tls_files, FORGED_SESSION, connections=2) as (port, log):
        server.port = port
        a = peers(XmppTransport, xmpp_config(server, JID), "a:1")
        wait_for(lambda: len(log) == 2, timeout=20, what="a second attempt after backoff")
        assert a.received == [] and a.connects == 0
        assert a.t.last_error == f"the xmpp server 127.0.0.1:{port} sent more after " \
                                 "<proceed/> (data injected into the connection?)"
    assert log == ["no TLS", "no TLS"]
    assert not any(r.exc_info for r in caplog.records)


def test_each_connection_starts_afresh(prosody):
    """After a connection with TLS, the next one to a server without STARTTLS (an attacker
    stripping it, plaintext allowed) is not taken for TLS: no PLAIN password in the clear."""
    jid = prosody.register("alice", "secret")
    c = client(prosody, jid, allow_plaintext=True).connect()
    assert c.tls
    c.close()
    plain_only = HEAD + (f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>PLAIN"
                         "</mechanism></mechanisms></stream:features>").encode()
    heard = []
    with scripted_server(plain_only, f"<success xmlns='{SASL}'/>".encode(),
                         heard=heard) as port:
        c.port = port
        with pytest.raises(XmppError, match="no usable login method"):
            c.connect()
    assert not c.tls and not any(b"<auth" in h for h in heard)


# -- a hostile server during the SCRAM-SHA-1 login ---------------------------------------------
OFFER_SCRAM = HEAD + (f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-SHA-1"
                      "</mechanism></mechanisms></stream:features>").encode()
SALT = b"QSXCR+Q6sek8bf92"


def sasl(element, payload):
    """A SASL element carrying payload, in which {n} stands for the client's nonce."""
    def reply(heard):
        found = re.search(rb">([A-Za-z0-9+/=]+)</auth>", heard)
        nonce = base64.b64decode(found.group(1)).split(b"r=")[1] if found else b""
        data = payload.replace(b"{n}", nonce)
        return f"<{element} xmlns='{SASL}'>{base64.b64encode(data).decode()}" \
               f"</{element}>".encode()
    return reply


def first(iterations=b"4096", nonce=b"{n}srv", salt=SALT):
    return sasl("challenge", b"r=" + nonce + b",s=" + salt + b",i=" + iterations)


INVALID = "the xmpp server's SCRAM challenge is invalid"


@pytest.mark.parametrize("script, error", [
    ([sasl("challenge", b"r={n}srv\xff\xfe,s=QSXCR+Q6sek8bf92,i=4096")], INVALID + " (not UTF-8)"),
    ([f"<challenge xmlns='{SASL}'>%%% not base64</challenge>".encode()],
     "the xmpp server sent invalid base64 during login"),
    ([f"<challenge xmlns='{SASL}'>cj1hYmM\u00e9</challenge>".encode()],
     "the xmpp server sent invalid base64 during login"),
    ([sasl("challenge", b"")], INVALID + " (malformed)"),
    ([sasl("challenge", b"hello, world")], INVALID + " (malformed)"),
    ([sasl("challenge", b"s=QSXCR+Q6sek8bf92,i=4096")], INVALID + " (no r=)"),
    ([sasl("challenge", b"r={n}srv,i=4096")], INVALID + " (no s=)"),
    ([sasl("challenge", b"r={n}srv,s=QSXCR+Q6sek8bf92")], INVALID + " (no i=)"),
    ([sasl("challenge", b"r={n}a,r={n}b,s=QSXCR+Q6sek8bf92,i=4096")],
     INVALID + " (r= given twice)"),
    ([sasl("challenge", b"m=x,r={n}srv,s=QSXCR+Q6sek8bf92,i=4096")],
     INVALID + " (it demands an extension, m=)"),
    ([first(nonce=b"zzzz")], INVALID + " (its nonce does not extend ours)"),
    ([first(nonce=b"{n}")], INVALID + " (its nonce does not extend ours)"),
    ([first(nonce="{n}é".encode())], INVALID + " (a bad nonce)"),
    ([first(salt=b"!!!!")], INVALID + " (the salt is not base64)"),
    ([first(salt=SALT[:-1])], INVALID + " (the salt is not base64)"),
    ([first(salt=b"")], INVALID + " (an empty salt)"),
    ([first(b"0")], INVALID + " (the iteration count is not a positive integer)"),
    ([first(b"-1")], INVALID + " (the iteration count is not a positive integer)"),
    ([first(b"")], INVALID + " (the iteration count is not a positive integer)"),
    ([first(b"4096.0")], INVALID + " (the iteration count is not a positive integer)"),
    ([first(b"0x1000")], INVALID + " (the iteration count is not a positive integer)"),
    ([first("²".encode())], INVALID + " (the iteration count is not a positive integer)"),
    ([first(b"%d" % (SCRAM_MAX_ITERATIONS + 1))],
     f"the xmpp server asks for {SCRAM_MAX_ITERATIONS + 1} SCRAM iterations; "
     f"the limit is {SCRAM_MAX_ITERATIONS}"),
    ([first(b"9" * 5000)], "the xmpp server asks for 999999999999... (5000 digits) SCRAM "
                           f"iterations; the limit is {SCRAM_MAX_ITERATIONS}"),
    ([sasl("success", b"r={n}srv,s=QSXCR+Q6sek8bf92,i=1")],
     "the xmpp server failed to prove it knows the password (SCRAM)"),
    ([first(), sasl("success", b"v=\xff\xfe")],
     "the xmpp server failed to prove it knows the password (SCRAM)"),
    ([first(), sasl("challenge", b"e=invalid-proof")],
     "the xmpp server refused the SCRAM login (invalid-proof)"),
    ([first(), sasl("challenge", b"e=<b>\xe2\x80\xae evil\nline")],
     "the xmpp server refused the SCRAM login (error)"),
    ([f"<failure xmlns='{SASL}'><bogus xmlns=''/></failure>".encode()],
     "the xmpp server refused the login for 'a@localhost' (bogus)"),
    ([b"<iq xmlns='' type='get'/>"], "unexpected iq during login"),
], ids=["not-utf8", "not-base64", "non-ascii-base64", "empty", "garbage", "no-r", "no-s",
        "no-i", "r-twice", "extension", "foreign-nonce", "no-server-nonce", "nonce-chars",
        "salt-not-base64", "salt-padding", "salt-empty", "i-zero", "i-negative", "i-empty",
        "i-float", "i-hex", "i-superscript", "i-over-limit", "i-5000-digits", "proof-skipped",
        "final-not-utf8", "final-error", "final-error-garbage", "failure-no-namespace",
        "unexpected"])
def test_a_hostile_scram_server_is_one_clear_error(script, error):
    """Whatever the server sends during the login ends it with the client's own one-line
    error, fast: no traceback, no exception but XmppError, no seconds of PBKDF2."""
    with scripted_server(OFFER_SCRAM, *script) as port:
        c = XmppClient("a@localhost", "x", server="127.0.0.1", port=port,
                       allow_plaintext=True, timeout=5)
        cpu = time.thread_time()
        with pytest.raises(XmppError) as e:
            c.connect()
        cpu = time.thread_time() - cpu
    assert e.value.message == error
    assert "\n" not in e.value.message and cpu < 0.5


def test_scram_accepts_the_iteration_limit():
    conv = scram_client("user", "pencil", nonce="abc")
    next(conv)
    start = time.thread_time()
    final = conv.send(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=%d" % SCRAM_MAX_ITERATIONS)
    assert final.startswith(b"c=biws,r=abcdef,p=") and time.thread_time() - start < 2


def test_a_transport_reports_a_hostile_scram_server(xmpp_config, peers, caplog):
    """The same through XmppTransport: its own line in last_error, a reconnect with
    backoff, no traceback in the log."""
    server = type("Server", (), {"ca_file": ""})
    heard = []
    with scripted_server(OFFER_SCRAM, first(b"9" * 50), connections=2, heard=heard) as port:
        server.port = port
        a = peers(XmppTransport, xmpp_config(server, "a@localhost", plaintext=True), "a:1")
        wait_for(lambda: sum(b"<stream:stream" in h for h in heard) == 2, timeout=20,
                 what="a second attempt after backoff")
        assert a.t.last_error == "the xmpp server asks for 999999999999... (50 digits) " \
                                 f"SCRAM iterations; the limit is {SCRAM_MAX_ITERATIONS}"
    assert a.connects == 0 and a.t.thread.is_alive()
    assert not any(r.exc_info for r in caplog.records)


def test_join_errors_are_clear(prosody):
    jid = prosody.register("alice", "secret")
    c = client(prosody, jid).connect()
    try:
        with pytest.raises(XmppError, match="cannot join the xmpp room 'sync@nowhere.invalid' "):
            c.join("sync@nowhere.invalid", "me")
    finally:
        c.close()


# -- the transport ------------------------------------------------------------------------------
@pytest.fixture
def xmpp_config(make_repo, tmp_path):
    counter = iter(range(100))

    def make(server, jid, room=None, mqtt_url=None, plaintext=False):
        path = make_repo(f"x{next(counter)}")
        pw = tmp_path / f"pw{next(counter)}"
        pw.write_text("secret\n")
        settings = {"autosync.channel": "notes", "autosync.xmpp.jid": jid,
                    "autosync.xmpp.passwordFile": str(pw), "autosync.xmpp.server": "127.0.0.1",
                    "autosync.xmpp.port": str(server.port),
                    "autosync.xmpp.caFile": server.ca_file}
        if room:
            settings["autosync.xmpp.room"] = room
        if mqtt_url:
            settings["autosync.mqtt.url"] = mqtt_url
        if plaintext:
            settings["autosync.xmpp.allowPlaintext"] = "true"
        for k, v in settings.items():
            git(path, "config", k, v)
        return Config(Repo(path))
    return make


class Peer:
    def __init__(self, transport_class, config, sender):
        self.received, self.connects = [], 0
        self.t = transport_class(config, sender, self.received.append, self.on_connect)
        self.t.start()

    def on_connect(self):
        self.connects += 1


@pytest.fixture
def peers():
    made = []

    def make(*args):
        p = Peer(*args)
        made.append(p)
        return p
    yield make
    for p in made:
        p.t.stop()


@pytest.mark.parametrize("use_room", [False, True], ids=["own-jid", "muc-room"])
def test_transport_round_trip(prosody, xmpp_config, peers, use_room):
    jid = prosody.register("alice", "secret")
    room = f"sync@{ROOMS}" if use_room else None
    a = peers(XmppTransport, xmpp_config(prosody, jid, room), "a:1")
    b = peers(XmppTransport, xmpp_config(prosody, jid, room), "b:2")
    wait_for(lambda: a.t.connected and b.t.connected, what="both logged in")
    wait_for(lambda: a.t.publish(note("a:1")) and b.received, what="b to hear a")
    assert b.received[0].sender == "a:1" and b.received[0].commit == C
    assert all(n.sender != "a:1" for n in a.received)  # never its own


def test_transport_reconnects_after_server_restart(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    a = peers(XmppTransport, xmpp_config(prosody, jid), "a:1")
    wait_for(lambda: a.connects == 1, what="first login")
    prosody.restart()
    wait_for(lambda: a.connects == 2, timeout=30, what="login after the restart")
    assert a.t.last_error is None


def test_publish_once(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    listener = peers(XmppTransport, xmpp_config(prosody, jid), "l:1")
    wait_for(lambda: listener.t.connected, what="login")
    assert publish_once(xmpp_config(prosody, jid), [note("server:server")])
    wait_for(lambda: listener.received, what="the notification")


def test_strangers_and_junk_cannot_inject(prosody, xmpp_config, peers):
    """Only messages from our own account reach the daemon; invalid bodies are dropped."""
    jid = prosody.register("alice", "secret")
    mallory = client(prosody, prosody.register("mallory", "secret")).connect()
    try:
        a = peers(XmppTransport, xmpp_config(prosody, jid), "a:1")
        b = peers(XmppTransport, xmpp_config(prosody, jid), "b:2")
        wait_for(lambda: a.t.connected and b.t.connected, what="both logged in")
        from autosync.message import encode
        mallory.message(jid, encode(note("m:6", "6" * 40)).decode(), "chat")
        assert a.t.publish(note("a:1", "9" * 40)) is True  # junk below goes out after this
        junk = XmppClient(jid, "secret", server="127.0.0.1", port=prosody.port,
                          ca_file=prosody.ca_file).connect("junk")
        for body in ("not json", '{"v":1}', "x" * 5000):
            junk.message(jid, body, "chat")
        junk.message(jid, encode(note("j:7", "7" * 40)).decode(), "chat", ack=True)
        wait_for(lambda: any(n.commit == "7" * 40 for n in b.received), what="the valid one")
        assert [n.commit for n in b.received] == ["9" * 40, "7" * 40]
        assert b.t.connected and b.connects == 1
        junk.close()
    finally:
        mallory.close()


def test_muc_transport_ignores_other_rooms_and_history(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    early = XmppClient(jid, "secret", server="127.0.0.1", port=prosody.port,
                       ca_file=prosody.ca_file).connect("early")
    try:
        early.join(f"sync@{ROOMS}", "early")
        from autosync.message import encode
        early.message(f"sync@{ROOMS}", encode(note("old:1", "5" * 40)).decode(), "groupchat",
                      ack=True)
        a = peers(XmppTransport, xmpp_config(prosody, jid, f"sync@{ROOMS}"), "a:1")
        other = peers(XmppTransport, xmpp_config(prosody, jid, f"other@{ROOMS}"), "o:3")
        wait_for(lambda: a.t.connected and other.t.connected, what="both in their rooms")
        early.message(f"sync@{ROOMS}", encode(note("new:2", "4" * 40)).decode(), "groupchat")
        wait_for(lambda: a.received, what="the new notification")
        assert [n.commit for n in a.received] == ["4" * 40]  # no history replayed
        assert other.received == []
    finally:
        early.close()


def test_publish_while_away_is_sent_after_reconnecting(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    a = peers(XmppTransport, xmpp_config(prosody, jid), "a:1")
    wait_for(lambda: a.connects == 1, what="first login")
    prosody.stop()
    wait_for(lambda: not a.t.connected, what="the transport to notice")
    assert a.t.publish(note("a:1", "8" * 40)) is False
    prosody.start()
    b = peers(XmppTransport, xmpp_config(prosody, jid), "b:2")
    wait_for(lambda: b.t.connected, timeout=30, what="b")
    # a's reconnect may come before b's login: the kept note is sent once a is back
    wait_for(lambda: a.connects == 2, timeout=30, what="a's login after the restart")
    if not b.received:  # it went out before b was there; the next one reaches b
        assert a.t.publish(note("a:1", "8" * 40))
    wait_for(lambda: b.received, what="the kept note")


def test_a_silent_server_is_noticed_by_ping(prosody, xmpp_config, peers, monkeypatch):
    """prosody frozen with SIGSTOP: the unanswered keepalive ping ends the session."""
    monkeypatch.setattr(autosync.xmpp, "PING_EVERY", 0.5)
    monkeypatch.setattr(autosync.xmpp, "PING_TIMEOUT", 1.0)
    jid = prosody.register("alice", "secret")
    a = peers(XmppTransport, xmpp_config(prosody, jid), "a:1")
    wait_for(lambda: a.connects == 1, what="login")
    os.kill(prosody.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not a.t.connected, what="the dead link to be noticed")
        assert "stopped answering" in a.t.last_error
    finally:
        os.kill(prosody.proc.pid, signal.SIGCONT)
    wait_for(lambda: a.connects == 2, timeout=30, what="login after the server woke up")


def test_publish_once_to_an_absent_server_is_bounded(xmpp_config, prosody, caplog):
    jid = prosody.register("alice", "secret")
    config = xmpp_config(prosody, jid)
    prosody.stop()
    start = time.monotonic()
    assert publish_once(config, [note("s:1")], timeout=2.0) is False
    assert time.monotonic() - start < 3
    assert "cannot connect to the xmpp server" in caplog.text
    assert "next fetch" in caplog.text


def test_transport_survives_a_failing_callback(prosody, xmpp_config, peers):
    jid = prosody.register("alice", "secret")
    calls = []

    def broken(n):
        calls.append(n)
        raise RuntimeError("bug in the daemon")
    cfg = xmpp_config(prosody, jid)
    a = XmppTransport(cfg, "a:1", broken, lambda: None)
    a.start()
    try:
        b = peers(XmppTransport, xmpp_config(prosody, jid), "b:2")
        wait_for(lambda: a.connected and b.t.connected, what="both")
        for commit in ("1" * 40, "2" * 40):
            assert b.t.publish(note("b:2", commit))
        wait_for(lambda: len(calls) == 2, what="both notifications despite the bug")
        assert a.connected
    finally:
        a.stop()
