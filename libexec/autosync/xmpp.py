"""A small XMPP client on the standard library (RFC 6120/6121 subset) and XmppTransport.

Client: TCP, STARTTLS with certificate verification against the JID's domain (a CA file for
self-signed servers; plaintext only when explicitly allowed), SASL SCRAM-SHA-1 (the server's
signature is verified) or PLAIN over TLS only, resource binding, presence, messages to the
account's own bare JID (type chat, which prosody, ejabberd and others copy to every
resource with non-negative priority; a MUC room is the portable choice) or to a MUC room, XEP-0199
pings both ways. The stream is parsed incrementally; a stanza over MAX_STANZA bytes, a DTD,
an entity declaration, a processing instruction or malformed XML ends the stream cleanly.
Each new stream (after TLS, after the login) starts from nothing: bytes that came after
<proceed/> or the login's success end the connection (CVE-2011-0411). Every malformed SCRAM
message is a one-line XmppError, and a server may ask for at most SCRAM_MAX_ITERATIONS.

XmppTransport has MqttTransport's interface: notifications travel as the body of messages,
in exactly the JSON format MQTT uses (message.encode/decode).
"""

import base64
import codecs
import hashlib
import hmac
import queue
import re
import secrets
import select
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Generator, Sequence
from typing import cast

from .config import Config, read_secret
from .message import BadMessage, NotForUs, Notification, decode, encode
from .transport_base import OnConnect, OnNotification, Transport
from .util import Error, announce_within, log

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_PING = "urn:xmpp:ping"
NS_MUC = "http://jabber.org/protocol/muc"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DELAY = "urn:xmpp:delay"
MAX_STANZA = 64 * 1024
# expat re-scans an unfinished token on every feed: fed a byte at a time, a long tag costs
# quadratic time. A tag is held back until its '>' (as the lexer sees it: not one in quotes)
# or until this much waits, so expat sees at most MAX_STANZA / FEED_CHUNK feeds of one tag.
FEED_CHUNK = 4096
MAX_DEPTH = 32
PING_EVERY = 60.0  # seconds of silence before a keepalive ping
PING_TIMEOUT = 30.0  # a ping unanswered this long: the link is dead
# PBKDF2 rounds a SCRAM server may ask for: prosody uses 10,000 (older ones 4096), ejabberd
# and openfire 4096. 100,000 costs the client about 0.1 s of CPU per login; a server asking
# for more is refused ("asks for N SCRAM iterations; the limit is 100000").
SCRAM_MAX_ITERATIONS = 100_000
_TAG_STOP = re.compile("[>'\"]")

# A SASL conversation: yields our messages (None: nothing more to say), is sent the server's.
Conversation = Generator[bytes | None, bytes, None]


class XmppError(Error):
    """A failure talking to the XMPP server (one line, git style)."""


class StreamError(XmppError):
    """The stream is unusable: malformed, hostile or closed."""


def q(tag: str, ns: str = NS_CLIENT) -> str:
    return f"{{{ns}}}{tag}"


def localname(tag: str) -> str:
    """An element's name without its namespace, short enough for a one-line message."""
    name = tag.rpartition("}")[2]
    return name if len(name) <= 40 else name[:40] + "..."


class StreamParser:
    """Incremental parser for one XML stream: feed bytes, get complete top-level stanzas."""

    def __init__(self) -> None:
        self.parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        # decoded here and fed as text, so expat parses UTF-8 whatever the stream declares
        # (an encoding='cp037' or a UTF-16 byte order mark cannot hide a '<!DOCTYPE')
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.depth = 0
        self.root: ET.Element | None = None
        self.pending = 0  # bytes fed since the last complete stanza
        self.started = False
        self.tail = ""  # the previous chunk's last character: "<!" may straddle two chunks
        # A small lexer beside expat (which tells no offsets) knows exactly where the last
        # stanza ended: `buffered` says whether anything but whitespace came after it.
        self.level = 0  # element depth as the lexer sees it
        self.state = "text"  # text, tag, or the quote character of an attribute value
        self.kind: str | None = None  # the character after this tag's "<" ("/" end tag, "?")
        self.last: str | None = None  # the last character before this tag's ">" ("/" empty)
        self.after = False  # something other than whitespace after the last stanza
        self.ended = self.emitted = 0  # stanzas complete as the lexer sees them; as expat does
        self.unfed: list[str] = []  # the start of an unfinished tag, not given to expat yet
        self.unfed_len = 0
        self.boundary = -1  # in the text being scanned: where the last tag ended

    def feed(self, data: bytes) -> list[ET.Element]:
        self.pending += len(data)
        if self.pending > MAX_STANZA:
            raise StreamError(f"xmpp stanza larger than {MAX_STANZA} bytes")
        try:
            text = self.decoder.decode(data)
        except UnicodeDecodeError:
            raise StreamError("malformed xmpp stream (not UTF-8)") from None
        seen = self.tail + text
        declaration = 0 if self.started or not text.lstrip("\ufeff \t\r\n") \
            .startswith("<?xml ") else 1
        if "<!" in seen or seen.count("<?") > declaration or "\0" in seen:
            raise StreamError("xmpp stream with a DTD, comment, processing instruction or NUL")
        self.started = self.started or bool(text.strip())
        self.tail = text[-1:]
        self.boundary = -1
        self._scan(text)
        if self.state != "text" and self.unfed_len + len(text) < FEED_CHUNK:
            # inside a tag: expat gets it whole, or in FEED_CHUNK pieces (linear)
            if self.boundary < 0:
                self.unfed.append(text)
                self.unfed_len += len(text)
                return []
            text, rest = text[:self.boundary], text[self.boundary:]
        else:
            rest = ""
        text = "".join(self.unfed) + text
        self.unfed, self.unfed_len = ([rest], len(rest)) if rest else ([], 0)
        try:
            self.parser.feed(text)
            # start and end events only: each is (event, element)
            events = cast(list[tuple[str, ET.Element]], list(self.parser.read_events()))
        except ET.ParseError as e:
            raise StreamError(f"malformed xmpp stream ({e})") from e
        stanzas = []
        for event, elem in events:
            if event == "start":
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise StreamError("xmpp stanza nested too deeply")
                if self.depth == 1:
                    self.root = elem
            else:
                self.depth -= 1
                if self.depth == 1:
                    stanzas.append(elem)
                    self.emitted += 1
                    if self.root is not None:  # keep memory bounded: the root holds nothing
                        self.root.remove(elem)
                    self.pending = 0
                elif self.depth == 0:
                    raise StreamError("the server closed the xmpp stream")
        return stanzas

    def buffered(self) -> bool:
        """True when bytes after the last complete stanza wait here (a partial stanza, text,
        half a UTF-8 character, a stanza expat holds back): a new stream must not start
        with them."""
        return self.after or self.ended != self.emitted or bool(self.decoder.getstate()[0]) \
            or any(t.strip() for t in self.unfed)

    def _scan(self, text: str) -> None:
        """Follow tags and quoted attribute values (comments, CDATA and processing
        instructions are refused before this) to know where each stanza ends. Linear: each
        character is looked at once, however the stream is cut into chunks."""
        i, n = 0, len(text)
        while i < n:
            if self.state == "text":
                j = text.find("<", i)
                if text[i:n if j < 0 else j].strip() and self.level <= 1:
                    self.after = True  # text between stanzas
                if j < 0:
                    return
                self.state, self.kind, self.last, i = "tag", None, None, j + 1
                self.after = True  # a tag has begun
            elif self.state == "tag":
                if self.kind is None:
                    self.kind = text[i]
                m = _TAG_STOP.search(text, i)
                k = n if m is None else m.start()
                if k > i:
                    self.last = text[k - 1]
                if m is None:
                    return
                i = k + 1
                if text[k] != ">":
                    self.state = self.last = text[k]  # an attribute value in quotes
                    continue
                self.state, self.boundary = "text", i
                if self.kind == "/":
                    self.level -= 1
                elif self.kind != "?" and self.last != "/":
                    self.level += 1
                self.after = self.level > 1
                if self.level == 1 and (self.kind == "/" or self.last == "/"):
                    self.ended += 1  # back at the stream's top level: a stanza ended
            else:  # inside a quoted attribute value
                j = text.find(self.state, i)
                if j < 0:
                    return
                self.state, i = "tag", j + 1


def condition(stanza: ET.Element) -> str:
    """The defined condition of a stanza error (RFC 6120 8.3.3), e.g. 'not-authorized'."""
    error = stanza.find(q("error"))
    for child in (error if error is not None else ()):
        if child.tag.startswith("{" + NS_STANZAS + "}") and child.tag != q("text", NS_STANZAS):
            return child.tag.split("}")[1]
    return "error"


def split_jid(jid: str) -> tuple[str, str, str]:
    local, sep, rest = jid.partition("@")
    if not sep or not local or not rest:
        raise XmppError(f"bad jid '{jid}' in autosync.xmpp.jid", "git config autosync.xmpp.jid "
                        "user@example.org")
    domain, _, resource = rest.partition("/")
    return local, domain, resource


def bare_jid(jid: str) -> str:
    """The bare JID (no resource) in the form to compare: node and domain are
    case-insensitive (RFC 7622: prosody answers from the room's normalised JID)."""
    return jid.partition("/")[0].casefold()


def same_jid(a: str, b: str) -> bool:
    """a and b name the same entity: bare parts equal but for case, resources exactly."""
    return bare_jid(a) == bare_jid(b) and a.partition("/")[2] == b.partition("/")[2]


def scram_fields(message: bytes, which: str) -> dict[str, str]:
    """The attributes of a SCRAM server message (RFC 5802 5.1) by letter; XmppError (one
    line, nothing of the server's text in it) when it is not one."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise XmppError(f"the xmpp server's SCRAM {which} is invalid (not UTF-8)") from None
    fields: dict[str, str] = {}
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not (item[0].isascii() and item[0].isalpha()):
            raise XmppError(f"the xmpp server's SCRAM {which} is invalid (malformed)")
        if item[0] in fields:
            raise XmppError(f"the xmpp server's SCRAM {which} is invalid "
                            f"({item[0]}= given twice)")
        fields[item[0]] = item[2:]
    if "m" in fields:
        raise XmppError(f"the xmpp server's SCRAM {which} is invalid "
                        "(it demands an extension, m=)")
    return fields


def scram_iterations(value: str) -> int:
    """The i= of a SCRAM challenge as an int within SCRAM_MAX_ITERATIONS, else XmppError."""
    digits = value.lstrip("0") if value.isascii() and value.isdigit() else ""
    if not digits:
        raise XmppError("the xmpp server's SCRAM challenge is invalid "
                        "(the iteration count is not a positive integer)")
    count = int(digits) if len(digits) <= 12 else None  # never int() of a huge string
    if count is None or count > SCRAM_MAX_ITERATIONS:
        shown = count if count is not None else f"{digits[:12]}... ({len(digits)} digits)"
        raise XmppError(f"the xmpp server asks for {shown} SCRAM iterations; the limit is "
                        f"{SCRAM_MAX_ITERATIONS}")
    return count


def scram_client(user: str, password: str, nonce: str | None = None) -> Conversation:
    """A generator speaking SCRAM-SHA-1 (RFC 5802): yields messages, is sent the replies.

    Every malformed server message raises XmppError; the work a challenge can demand is
    capped at SCRAM_MAX_ITERATIONS rounds of PBKDF2."""
    cnonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
    name = user.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={name},r={cnonce}"
    server_first = yield ("n,," + first_bare).encode()
    fields = scram_fields(server_first, "challenge")
    for letter in "rsi":
        if letter not in fields:
            raise XmppError(f"the xmpp server's SCRAM challenge is invalid (no {letter}=)")
    nonce = fields["r"]
    if len(nonce) <= len(cnonce) or not nonce.startswith(cnonce):
        raise XmppError("the xmpp server's SCRAM challenge is invalid "
                        "(its nonce does not extend ours)")
    if not all("!" <= c <= "~" for c in nonce):  # printable ASCII; "," cannot be in it
        raise XmppError("the xmpp server's SCRAM challenge is invalid (a bad nonce)")
    try:
        salt = base64.b64decode(fields["s"], validate=True)
    except ValueError:
        raise XmppError("the xmpp server's SCRAM challenge is invalid "
                        "(the salt is not base64)") from None
    if not salt:
        raise XmppError("the xmpp server's SCRAM challenge is invalid (an empty salt)")
    iterations = scram_iterations(fields["i"])
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    stored_key = hashlib.sha1(client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha1).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha1).digest())
    server_final = yield f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
    final: dict[str, str]
    try:
        final = scram_fields(server_final, "final message")
    except XmppError:
        final = {}
    if "e" in final and "v" not in final:
        reason = final["e"] if re.fullmatch("[a-z-]{1,40}", final["e"]) else "error"
        raise XmppError(f"the xmpp server refused the SCRAM login ({reason})")
    if not hmac.compare_digest(final.get("v", "").encode(), expected):
        raise XmppError("the xmpp server failed to prove it knows the password (SCRAM)")
    yield None


def plain_client(user: str, password: str) -> Conversation:
    """SASL PLAIN (over TLS only): one message."""
    yield f"\0{user}\0{password}".encode()
    yield None


class XmppClient:
    """One authenticated connection. Not thread-safe for reading; send() takes a lock."""

    def __init__(self, jid: str, password: str, server: str | None = None, port: int = 5222,
                 ca_file: str | None = None, allow_plaintext: bool = False,
                 timeout: float = 10.0) -> None:
        self.user, self.domain, self.resource = split_jid(jid)
        self.bare = f"{self.user}@{self.domain}"
        self.password = password
        self.server = server or self.domain
        self.port = port
        self.ca_file = ca_file
        self.allow_plaintext = allow_plaintext
        self.timeout = timeout
        self.sock: socket.socket | None = None  # an ssl.SSLSocket once self.tls
        self.tls = False
        self.jid: str | None = None
        self.send_lock = threading.Lock()
        self.inbox: list[ET.Element] = []
        self.parser = StreamParser()

    @property
    def _sock(self) -> socket.socket:
        """The connection; StreamError when there is none (closed, or never opened)."""
        if self.sock is None:
            raise StreamError(f"not connected to the xmpp server {self.where}")
        return self.sock

    def _pending(self) -> int:
        """Bytes TLS has decrypted that the socket does not show as readable."""
        sock = self._sock
        return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0

    # -- plumbing -----------------------------------------------------------------------
    def send_raw(self, data: str | bytes) -> None:
        with self.send_lock:
            self._sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send(self, elem: ET.Element) -> None:
        self.send_raw(ET.tostring(elem, encoding="unicode"))

    def open_stream(self) -> ET.Element:
        """Start a stream (at first, after TLS, after login): from nothing, with a new parser.
        Whatever the old stream still held was refused before (_nothing_after)."""
        self.parser, self.inbox = StreamParser(), []
        self.send_raw(f"<?xml version='1.0'?><stream:stream to='{self.domain}' "
                      f"version='1.0' xml:lang='en' xmlns='{NS_CLIENT}' "
                      f"xmlns:stream='{NS_STREAM}'>")
        features = self.expect("stream features")
        if features.tag != q("features", NS_STREAM):
            raise StreamError(f"expected stream features, got {localname(features.tag)}")
        return features

    def next_stanza(self, timeout: float, wake: socket.socket | None = None) -> ET.Element | None:
        """The next stanza, or None after timeout seconds (or as soon as the socket wake
        is readable); raises StreamError when the stream ends."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock = self._sock
            if wake is not None and not self._pending():
                ready = select.select([sock, wake], [], [], left)[0]
                if wake in ready or not ready:
                    return None
            sock.settimeout(left)
            try:
                data = sock.recv(16384)
            except (socket.timeout, TimeoutError):
                return None
            except ssl.SSLWantReadError:
                continue
            except OSError as e:
                raise StreamError(f"lost the connection to the xmpp server: {e}") from e
            if not data:
                raise StreamError("the xmpp server closed the connection")
            self.inbox += self.parser.feed(data)
        stanza = self.inbox.pop(0)
        if stanza.tag == q("error", NS_STREAM):
            cond = next((localname(c.tag) for c in stanza), "unknown")
            raise StreamError(f"the xmpp server ended the stream ({cond})")
        return stanza

    def expect(self, what: str) -> ET.Element:
        stanza = self.next_stanza(self.timeout)
        if stanza is None:
            raise XmppError(f"no answer from the xmpp server {self.where} ({what})")
        return stanza

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"

    def _nothing_after(self, what: str) -> None:
        """The stream ends after `what` (<proceed/>, the login's success) and a new one
        starts from nothing: bytes already here came before it and must not be read as part
        of it (CVE-2011-0411: plaintext injected after STARTTLS). Raises when there are any."""
        left = bool(self.inbox) or self.parser.buffered()
        if not left and not self.tls:  # still plaintext: what waits in the socket counts too
            if select.select([self._sock], [], [], 0)[0]:
                try:
                    left = self._sock.recv(1, socket.MSG_PEEK) != b""
                except OSError:
                    pass  # the connection failed: the TLS handshake will tell
                if not left:
                    raise StreamError(f"the xmpp server {self.where} closed the connection "
                                      f"after {what}")
        elif not left:
            left = self._pending() > 0  # decrypted, not yet read
        if left:
            raise StreamError(f"the xmpp server {self.where} sent more after {what} "
                              "(data injected into the connection?)")

    # -- connecting -----------------------------------------------------------------------
    def connect(self, resource: str = "autosync") -> "XmppClient":
        self.tls, self.jid, self.inbox = False, None, []  # nothing from an earlier connection
        try:
            self.sock = socket.create_connection((self.server, self.port), self.timeout)
        except OSError as e:
            raise XmppError(f"cannot connect to the xmpp server {self.where}: "
                            f"{e.strerror or e}".rstrip(": ")) from e
        try:
            self._negotiate(resource)
        except BaseException:
            self.close()
            raise
        return self

    def _negotiate(self, resource: str) -> None:
        features = self.open_stream()
        if features.find(q("starttls", NS_TLS)) is not None:
            self._starttls()
            features = self.open_stream()
        elif not self.allow_plaintext:
            raise XmppError(f"the xmpp server {self.where} does not offer STARTTLS",
                            "for a loopback test server only: "
                            "git config autosync.xmpp.allowPlaintext true")
        mechanisms = [m.text or "" for m in features.iter(q("mechanism", NS_SASL))]
        self._authenticate(mechanisms)
        features = self.open_stream()
        if features.find(q("bind", NS_BIND)) is None:
            raise XmppError("the xmpp server offers no resource binding")
        iq = ET.Element("iq", type="set", id="bind1")
        bind = ET.SubElement(iq, "bind", xmlns=NS_BIND)
        ET.SubElement(bind, "resource").text = self.resource or resource
        self.send(iq)
        reply = self.wait_for_iq("bind1")
        jid = reply.find(f"{q('bind', NS_BIND)}/{q('jid', NS_BIND)}")
        if reply.get("type") != "result" or jid is None:
            raise XmppError("the xmpp server refused to bind a resource")
        self.jid = jid.text
        self.send(ET.Element("presence"))  # available, priority 0: gets messages to the bare JID

    def _starttls(self) -> None:
        self.send_raw(f"<starttls xmlns='{NS_TLS}'/>")
        reply = self.expect("STARTTLS")
        if reply.tag != q("proceed", NS_TLS):
            raise XmppError(f"the xmpp server {self.where} refused STARTTLS")
        self._nothing_after("<proceed/>")
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        try:
            self.sock = ctx.wrap_socket(self._sock, server_hostname=self.domain)
        except ssl.SSLCertVerificationError as e:
            raise XmppError(f"cannot verify the certificate of the xmpp server {self.where}: "
                            f"{e.verify_message or e.reason} (check autosync.xmpp.caFile)") from e
        except (ssl.SSLError, OSError) as e:
            raise XmppError(f"TLS with the xmpp server {self.where} failed: {e}") from e
        self.tls = True

    def _authenticate(self, mechanisms: list[str]) -> None:
        if "SCRAM-SHA-1" in mechanisms:
            mech, conv = "SCRAM-SHA-1", scram_client(self.user, self.password)
        elif "PLAIN" in mechanisms and self.tls:
            mech, conv = "PLAIN", plain_client(self.user, self.password)
        else:
            raise XmppError(f"no usable login method at the xmpp server {self.where} "
                            f"(offered: {', '.join(filter(None, mechanisms)) or 'none'})")
        message = next(conv) or b""
        self.send_raw(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                      f"{base64.b64encode(message).decode() or '='}</auth>")
        proved = mech != "SCRAM-SHA-1"  # SCRAM: the server must prove it knows the password
        rounds = 0  # challenges answered
        for _ in range(4):  # SCRAM takes two rounds; a server going on forever is broken
            reply = self.expect("login")
            if reply.tag == q("failure", NS_SASL):
                cond = next((localname(c.tag) for c in reply), "failure")
                raise XmppError(f"the xmpp server refused the login for '{self.bare}' ({cond})",
                                "check autosync.xmpp.jid and autosync.xmpp.passwordFile")
            text = (reply.text or "").strip()
            try:
                data = b"" if text in ("", "=") else base64.b64decode(text, validate=True)
            except ValueError:
                raise StreamError("the xmpp server sent invalid base64 during login") from None
            if reply.tag == q("challenge", NS_SASL) and not proved:
                answer = self._scram_step(conv, data)  # raises when the server's proof is wrong
                rounds += 1
                proved = answer is None
                self.send_raw(f"<response xmlns='{NS_SASL}'>"
                              f"{base64.b64encode(answer or b'').decode()}</response>")
            elif reply.tag == q("success", NS_SASL):
                # the server's SCRAM proof may come with success: it must be the final
                # message, never the first (that would skip the proof)
                if not proved and (rounds == 0 or self._scram_step(conv, data) is not None):
                    raise XmppError("the xmpp server failed to prove it knows the password "
                                    "(SCRAM)")
                self._nothing_after("the login's success")
                return
            else:
                raise StreamError(f"unexpected {localname(reply.tag)} during login")
        raise StreamError("the xmpp login did not finish")

    @staticmethod
    def _scram_step(conv: Conversation, data: bytes) -> bytes | None:
        """conv's answer to the server's data; any surprise in it is the server's fault."""
        try:
            return conv.send(data)
        except XmppError:
            raise
        except (ValueError, StopIteration) as e:  # scram_client checks all; never a traceback
            raise XmppError(f"the xmpp server's SCRAM message is invalid "
                            f"({type(e).__name__})") from e

    def wait_for_iq(self, ident: str) -> ET.Element:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            stanza = self.next_stanza(deadline - time.monotonic())
            if stanza is not None and stanza.tag == q("iq") and stanza.get("id") == ident:
                return stanza
            if stanza is not None:
                self.handle(stanza)
        raise XmppError(f"no answer from the xmpp server {self.where} (iq {ident})")

    # -- stanzas --------------------------------------------------------------------------
    def handle(self, stanza: ET.Element) -> None:
        """Answer what the protocol requires (pings, unknown iqs)."""
        if stanza.tag == q("iq") and stanza.get("type") in ("get", "set"):
            reply = ET.Element("iq", type="result", id=stanza.get("id", ""))
            sender = stanza.get("from")
            if sender:
                reply.set("to", sender)
            if stanza.find(q("ping", NS_PING)) is None:
                reply.set("type", "error")
                err = ET.SubElement(reply, "error", type="cancel")
                ET.SubElement(err, "service-unavailable", xmlns=NS_STANZAS)
            self.send(reply)

    def join(self, room: str, nick: str) -> None:
        """Enter the MUC room as nick (XEP-0045) and wait until the room confirms it.

        No history: a client catches up by fetching, not by replaying old messages."""
        occupant = f"{room}/{nick}"
        presence = ET.Element("presence", to=occupant)
        x = ET.SubElement(presence, "x", xmlns=NS_MUC)
        ET.SubElement(x, "history", maxstanzas="0")
        self.send(presence)
        deadline = time.monotonic() + self.timeout
        while True:
            stanza = self.next_stanza(deadline - time.monotonic())
            if stanza is None:
                raise XmppError(f"no answer from the xmpp room '{room}'")
            source = stanza.get("from", "")
            if stanza.tag == q("presence") and same_jid(source, occupant):
                break
            if stanza.tag == q("presence") and stanza.get("type") == "error" and \
                    bare_jid(source) == bare_jid(room):
                raise XmppError(f"cannot join the xmpp room '{room}' ({condition(stanza)})",
                                "check autosync.xmpp.room")
            self.handle(stanza)
        if stanza.get("type") == "error":
            raise XmppError(f"cannot join the xmpp room '{room}' ({condition(stanza)})",
                            "check autosync.xmpp.room")
        codes = {s.get("code") for s in stanza.iter(q("status", NS_MUC + "#user"))}
        if "201" in codes:  # we created the room: accept the defaults ("instant room")
            iq = ET.Element("iq", type="set", to=room, id="instant-" + secrets.token_hex(3))
            query = ET.SubElement(iq, "query", xmlns=NS_MUC + "#owner")
            ET.SubElement(query, "x", xmlns="jabber:x:data", type="submit")
            self.send(iq)

    def message(self, to: str, body: str, kind: str, ack: bool = False) -> str | None:
        """Send a message; with ack, a ping follows and its id is returned: the server's
        answer to it means the message before it was accepted (stanzas keep their order)."""
        msg = ET.Element("message", to=to, type=kind, id=secrets.token_hex(6))
        ET.SubElement(msg, "body").text = body
        self.send(msg)
        return self.ping() if ack else None

    def ping(self) -> str:
        ident = "ping-" + secrets.token_hex(4)
        iq = ET.Element("iq", type="get", id=ident, to=self.domain)
        ET.SubElement(iq, "ping", xmlns=NS_PING)
        self.send(iq)
        return ident

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.send_raw("</stream:stream>")
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def read_password(path: str) -> str:
    secret = read_secret(path, "autosync.xmpp.passwordFile", "xmpp")
    try:
        return secret.decode()
    except UnicodeDecodeError:
        raise XmppError(f"the xmpp password file '{path}' is not UTF-8") from None


def destination(config: Config, client: XmppClient) -> tuple[str, str]:
    """(to, type) for notifications: the MUC room, or the account's own bare JID."""
    room = config["xmpp.room"]
    return (room, "groupchat") if room else (client.bare, "chat")


def client_for(config: Config, timeout: float = 10.0) -> XmppClient:
    return XmppClient(config["xmpp.jid"], read_password(config["xmpp.passwordFile"]),
                      server=config["xmpp.server"] or None, port=config["xmpp.port"],
                      ca_file=config["xmpp.caFile"] or None,
                      allow_plaintext=config["xmpp.allowPlaintext"], timeout=timeout)


class XmppTransport(Transport):
    """Notifications over XMPP, with the same interface and semantics as MqttTransport.

    One thread owns the connection and does all its I/O (an SSL socket must not be read and
    written from two threads): publish() queues the note, wakes that thread through a socket
    pair and waits until the server has answered a ping sent right after the message - the
    counterpart of MQTT's QoS 1 acknowledgement."""

    def __init__(self, config: Config, sender: str, on_notification: OnNotification,
                 on_connect: OnConnect) -> None:
        super().__init__(config, sender, on_notification, on_connect, "autosync-xmpp")
        self.channel, self.branch = config.channel, config.branch
        self.client = client_for(config)  # reads the password now: a bad setup fails early
        self.room: str = config["xmpp.room"]
        self.nick: str | None = None
        # (note, threading.Event set once the server has it)
        self.outbox: queue.SimpleQueue[tuple[Notification, threading.Event]] = \
            queue.SimpleQueue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)

    def describe(self) -> str:
        room = self.room or "own account"
        return f"xmpp {self.config['xmpp.jid']} ({room}) channel {self.channel}"

    def stop(self) -> None:
        self.stopping.set()
        self._wake()
        sock = self.client.sock
        if sock is not None and not self.connected:  # still logging in: interrupt that
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        else:  # never started: the thread would have closed these
            self.wake_r.close()
            self.wake_w.close()

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:  # the pair's buffer is full: the thread is awake anyway
            pass

    def _run(self) -> None:
        resource = "autosync-" + secrets.token_hex(3)
        while not self.stopping.is_set():
            error: str | None = None
            try:
                self.client.connect(resource)
                self._session()
            except XmppError as e:
                error = e.message
            except OSError as e:
                error = f"lost the connection to the xmpp server: {e}"
            except Exception:  # a bug must not end notifications for good
                log.exception("xmpp connection failed")
                error = "internal error in the xmpp transport"
            finally:
                self.client.close()
            if self.stopping.is_set():
                break
            if self.connected:  # it came up: the backoff grows unless it lasted
                self._lost(error or "the xmpp session ended")
            else:
                self._failed(error or "the xmpp login ended")
            if self.stopping.wait(self.backoff.next_delay()):
                break
        self.connected = False
        self.wake_r.close()
        self.wake_w.close()

    def _session(self) -> None:
        client = self.client
        if self.room:
            self.nick = self.sender.replace(":", "-") + "-" + secrets.token_hex(2)
            client.join(self.room, self.nick)
        self._up_line(f"connected to xmpp as {client.jid}; notifications via "
                      f"{self.room or client.bare}")
        self._came_up(lambda note: self.outbox.put((note, threading.Event())))
        # ping id -> (note, event) of a message sent just before the ping
        acks: dict[str, tuple[Notification, threading.Event]] = {}
        last_heard = time.monotonic()
        ping_sent: float | None = None
        try:
            while not self.stopping.is_set():
                self._send_queued(acks)
                stanza = client.next_stanza(1.0, wake=self.wake_r)
                now = time.monotonic()
                if stanza is None:
                    if ping_sent is not None and now - ping_sent > PING_TIMEOUT:
                        raise StreamError(f"the xmpp server {client.where} stopped answering")
                    if ping_sent is None and now - last_heard > PING_EVERY:
                        client.ping()  # keepalive (XEP-0199)
                        ping_sent = now
                    continue
                last_heard, ping_sent = now, None
                ident = stanza.get("id")
                if stanza.tag == q("iq") and ident in acks:
                    acks.pop(ident)[1].set()
                client.handle(stanza)
                self._received(stanza)
        finally:
            if acks:  # sent but not confirmed: announce the newest again after reconnecting
                self.unsent = max((note for note, _ in acks.values()), key=lambda n: n.time)

    def _send_queued(self, acks: dict[str, tuple[Notification, threading.Event]]) -> None:
        try:
            while self.wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        to, kind = destination(self.config, self.client)
        while True:
            try:
                note, done = self.outbox.get_nowait()
            except queue.Empty:
                return
            self.client.message(to, encode(note).decode(), kind)
            acks[self.client.ping()] = (note, done)  # its answer says the message arrived

    def _received(self, stanza: ET.Element) -> None:
        """Hand on the notification in a message from our room or our own account."""
        if stanza.tag != q("message"):
            return
        source = stanza.get("from") or ""
        resource = source.partition("/")[2]
        if self.room:
            ours = stanza.get("type") == "groupchat" and bare_jid(source) == bare_jid(self.room) \
                and resource and resource != self.nick
        else:
            ours = stanza.get("type") in ("chat", "normal", None) and \
                bare_jid(source) == bare_jid(self.client.bare) and \
                not same_jid(source, self.client.jid or "")
        body = stanza.find(q("body"))
        if not ours or body is None or stanza.find(q("delay", NS_DELAY)) is not None:
            return  # not for us, our own echo, or room history
        try:  # another channel's or branch's note is dropped before anything is validated
            note = decode((body.text or "").encode("utf-8", "surrogateescape"),
                          want=(self.channel, self.branch))
        except NotForUs:
            return
        except BadMessage as e:
            self.dropped(str(e))
            return
        self._hand_on(note)

    def publish(self, note: Notification, timeout: float = 5.0) -> bool:
        """Send note and wait until the server has it; False when not delivered (yet).

        Never raises. While disconnected the newest note is kept and sent on reconnect."""
        if not self._may_send(note):
            return False
        done = threading.Event()
        self.outbox.put((note, done))
        self._wake()
        if threading.current_thread() is self.thread:
            return False  # called from a callback: sent once it returns, cannot wait here
        if done.wait(timeout):
            return True
        log.warning("the xmpp server %s did not confirm within %gs", self.client.where, timeout)
        return False


def publish_once(config: Config, notes: Sequence[Notification], timeout: float = 5.0) -> bool:
    """Log in, send notes, log out; True when the server confirmed them all.

    Takes at most timeout seconds in all (the work runs in a daemon thread abandoned at the
    deadline). Never raises: a server that is away or refuses costs one log line."""
    if not notes:
        return True
    return announce_within(timeout, lambda: _publish(config, notes, timeout),
                           f"no answer from the xmpp server within {timeout:g}s")


def _publish(config: Config, notes: Sequence[Notification], timeout: float) -> str | None:
    """publish_once's work: None when the server confirmed every note, else what went wrong."""
    try:
        payloads = [encode(note).decode() for note in notes]
        client = client_for(config, timeout=timeout).connect("autosync-push-"
                                                            + secrets.token_hex(3))
    except BadMessage as e:
        return f"cannot announce over xmpp: {e}"
    except Error as e:
        return e.message
    try:
        to, kind = destination(config, client)
        if kind == "groupchat":
            client.join(to, "push-" + secrets.token_hex(3))
        for payload in payloads[:-1]:
            client.message(to, payload, kind)
        client.message(to, payloads[-1], kind)
        ident = client.ping()  # its answer says every message arrived
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stanza = client.next_stanza(deadline - time.monotonic())
            if stanza is None:
                break
            if stanza.tag == q("iq") and stanza.get("id") == ident:
                return None  # the server answers in order: it has every message
            client.handle(stanza)
        return f"the xmpp server {client.where} did not confirm within {timeout:g}s"
    except Error as e:
        return e.message
    except OSError as e:
        return f"cannot publish over xmpp: {e}"
    finally:
        client.close()
