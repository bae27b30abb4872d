"""Running git: argument lists only, never a shell. One Repo object per repository."""

import errno
import fcntl
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

from .util import HUMAN, RETRY, Error, Retry, log, os_error, printable, shown

ZERO_OID = "0" * 40


Env = Mapping[str, str]


MAX_DIAGNOSIS = 1500  # characters of git's diagnosis kept in one message (a server's hook
# may print a lot): its start (the cause, e.g. ssh's) and its end (git's fatal: line)
_PREFIXED = re.compile(r"[A-Za-z][\w .-]*: ")  # "fatal: ", "ssh: ", "remote: ", "gpg: "


def diagnosis(stderr: str) -> str:
    """What git said on stderr, whole, as one line: every line but its `hint:` lines (and
    gpg's machine-readable `[GNUPG:]` status lines), so the cause a last line leaves out
    (gpg's reason, ssh's, the identity git asks for) is kept.

    A line that goes on the sentence before it (a lowercase start, same indentation) is
    joined to it with a space, a line after one ending in ':' too; an indented block after
    an unpunctuated line ("Run", then commands) with ': '; everything else with '; '.
    Control and format characters become '?' (a server's hook prints what it likes); at most
    MAX_DIAGNOSIS characters, the middle left out."""
    items: list[tuple[str, bool]] = []  # (text, indented)
    gap = True  # a blank line (or the start) came before this line
    for raw in stderr.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        text = " ".join(line.split())
        if not text:
            gap = True
            continue
        if text.startswith(("hint:", "[GNUPG:]")):
            continue
        text = re.sub(r"^\*+ *", "", text)  # "*** Please tell me who you are."
        text = printable(text)  # (C0, DEL, C1, bidi and other format characters)
        indented = line[:1].isspace()
        if items:
            prev, prev_indented = items[-1]
            if prev.endswith(":") and not gap:
                items[-1] = (f"{prev} {text}", prev_indented)
                gap = False
                continue
            if (not gap and not indented and not prev_indented and text[:1].islower()
                    and not _PREFIXED.match(text)):
                items[-1] = (f"{prev} {text}", prev_indented)
                continue
        items.append((text, indented))
        gap = False
    out = ""
    for i, (text, indented) in enumerate(items):
        if i:
            prev = items[i - 1][0]
            sep = (": " if indented and not items[i - 1][1] and prev[-1:].isalnum()
                   else " " if prev.endswith(":") else "; ")
            out = (out[:-1] if sep != " " and out.endswith(".") and not out.endswith("..")
                   else out) + sep
        out += text
    if out.endswith(".") and not out.endswith(".."):
        out = out[:-1]
    if len(out) > MAX_DIAGNOSIS:
        half = MAX_DIAGNOSIS // 2
        out = f"{out[:half]} [...] {out[-half:]}"
    return out


class GitFailed(Error):
    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        said = diagnosis(stderr)
        full = "no space left on device" in stderr.lower() or "quota" in stderr.lower()
        super().__init__(f"'git {' '.join(args[:2])}' failed: "
                         + (said or f"exit status {returncode}, nothing on stderr"),
                         *(["free some disk space; autosync retries by itself"] if full
                           else []), code=RETRY if full else HUMAN)
        self.args_, self.returncode, self.stderr = args, returncode, stderr


def own_git_path(name: str) -> str:
    """`git rev-parse --git-path NAME` as this process was started: its directory and its
    environment (a hook's GIT_DIR, `git -c core.hooksPath=...`), which a Repo clears.
    Relative to the current directory; "" when git cannot tell."""
    return subprocess.run(["git", "rev-parse", "--git-path", name], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True).stdout.strip()


def clean_env(base: Env | None = None) -> dict[str, str]:
    """The environment without git's repository-local variables.

    Hooks run with GIT_DIR, GIT_INDEX_FILE and friends set for *their* repository;
    a helper acting on another repository (or re-discovering its own) must drop them.
    """
    env = dict(os.environ if base is None else base)
    for name in LOCAL_ENV_VARS:
        env.pop(name, None)
    return env


# `git rev-parse --local-env-vars` on git 2.39; fixed so that no process is needed.
LOCAL_ENV_VARS = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)


NEWLINE = "a newline in a repository's path is not supported"


def descendants(pid: int) -> list[int]:
    """The processes pid started, and those they started (from /proc; none without it)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    parent = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """End a git that took too long, and what it started: an ssh or an upload-pack that
    hangs would outlive it, one more at every retry for as long as the server hangs."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


class TimedOut(Retry):
    """A git that did not finish within its time (a network file system that is down)."""


class GitProcess:
    """A running git from Repo.popen: its stdin and stdout pipes, and the process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("GitProcess needs stdin and stdout pipes")
        self.proc = proc
        self.stdin: IO[bytes] = proc.stdin
        self.stdout: IO[bytes] = proc.stdout

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        return self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()


class Objects:
    """Objects read through one `git cat-file --batch`, started when first asked (often
    never): header(oid), then read() its size in pieces, then end()."""

    def __init__(self, repo: "Repo") -> None:
        self.repo = repo
        self._proc: GitProcess | None = None

    @property
    def proc(self) -> GitProcess:
        if self._proc is None:
            self._proc = self.repo.popen("cat-file", "--batch")
        return self._proc

    def header(self, oid: str) -> tuple[str, int] | None:
        """(type, size) of oid, whose size bytes are to be read next; None: missing."""
        self.proc.stdin.write(oid.encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # git died before it answered (killed, a corrupt object): no answer
            # is no "missing" - the tree check would refuse a sound commit for good
            raise OSError(errno.EPIPE, "git cat-file ended early")
        header = line.split()
        return (header[1].decode(), int(header[2])) if len(header) == 3 else None

    def read(self, size: int) -> bytes:
        return self.proc.stdout.read(size)

    def end(self, left: int = 0) -> None:
        """After an object's content (but its last `left` bytes, skipped unread): the
        newline git ends it with."""
        while left > 0:
            chunk = self.proc.stdout.read(min(left, 1 << 16))
            if not chunk:
                raise OSError(errno.EPIPE, "git cat-file ended early")
            left -= len(chunk)
        self.proc.stdout.read(1)

    def close(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.stdin.close()  # (flushes what is left to write)
            except OSError:  # git went away (killed, a corrupt object): nothing to flush
                proc.kill()  # to, and the caller's own error must not be hidden by this one
            proc.wait()
            proc.stdout.close()


class Repo:
    """A git repository (work tree or bare) located from a directory."""

    def __init__(self, path: str = ".", env: Env | None = None,
                 hint: str = "or pass a repository with -C DIR",
                 timeout: float | None = None) -> None:
        """timeout: seconds each git may take (TimedOut after that; default: no limit)."""
        self.timeout = timeout
        self.env = clean_env(env)
        self.env.setdefault("LC_ALL", "C")
        self.env["GIT_TERMINAL_PROMPT"] = "0"  # never hang asking for a password
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise Error(f"cannot use '{path}': not a directory")
        if "\n" in path:  # (git's answers below are one per line)
            raise Error(f"cannot use {shown(path)}: {NEWLINE}")
        out = self._run_raw(
            ["rev-parse", "--absolute-git-dir", "--git-common-dir", "--is-bare-repository",
             "--show-cdup"], cwd=path, check=False)
        if out.returncode != 0:
            raise Error(f"not a git repository: '{path}'",
                        f"create one with: git init {shlex.quote(path)}   ({hint})")
        lines = out.stdout.decode().splitlines()
        self.git_dir = lines[0]
        common = lines[1]
        self.common_dir = os.path.normpath(os.path.join(path, common))
        self.bare = lines[2] == "true"
        cdup = lines[3] if len(lines) > 3 else ""
        self.top: str | None = None if self.bare else os.path.normpath(os.path.join(path, cdup))
        self.cwd: str = self.top or self.git_dir
        self.state_dir = os.path.join(self.git_dir, "autosync")
        self.trees: dict[str, str] = {}  # commit id -> tree id (see tree())

    # -- running git -------------------------------------------------------------
    def _run_raw(self, args: list[str], cwd: str | None = None, input: bytes | None = None,
                 stdin: int | None = None, env: Env | None = None, check: bool = True,
                 timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        full = ["git", *args]
        timeout = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(full, cwd=cwd or self.cwd, env=env or self.env,
                                    stdin=subprocess.PIPE if input is not None else stdin,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise Error("git is not installed or not on PATH") from None
        with proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                raise TimedOut(f"'git {args[0]}' took longer than {timeout}s") from None
            except BaseException:
                proc.kill()
                raise
        res = subprocess.CompletedProcess(full, proc.returncode, out, err)
        if check and res.returncode != 0:
            raise GitFailed(args, res.returncode, res.stderr.decode(errors="replace"))
        return res

    def run(self, *args: str, input: str | bytes | None = None, stdin: int | None = None,
            env: Env | None = None, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run git and return the CompletedProcess (stdout/stderr are bytes).

        input is what git reads; or stdin, an open file descriptor it reads instead."""
        if isinstance(input, str):
            input = input.encode()
        merged = dict(self.env, **env) if env else None
        return self._run_raw(list(args), input=input, stdin=stdin, env=merged, check=check,
                             timeout=timeout)

    def run_limited(self, *args: str, limit: int) -> tuple[int | None, bytes, bytes]:
        """(exit status, stdout, stderr) of git args, reading at most limit bytes of each:
        git is killed past that, and the status is None. For commands whose output a peer
        can make huge (`git config --blob` lists a 64 KB file as 500 MB)."""
        try:
            proc = subprocess.Popen(["git", *args], cwd=self.cwd, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise Error("git is not installed or not on PATH") from None
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        got = {out: bytearray(), err: bytearray()}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with proc, selectors.DefaultSelector() as sel:
            for fd in got:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():  # each round reads something, or closes a pipe
                ready = sel.select(None if deadline is None
                                   else max(0.0, deadline - time.monotonic()))
                if not ready:
                    kill_tree(proc)
                    raise TimedOut(f"'git {args[0]}' took longer than {self.timeout}s")
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                    got[key.fd] += chunk
                    if len(got[key.fd]) > limit:
                        proc.kill()
                        return None, b"", b""
            code = proc.wait()
        return code, bytes(got[out]), bytes(got[err])

    def out(self, *args: str, input: str | bytes | None = None, env: Env | None = None,
            check: bool = True, timeout: float | None = None) -> str:
        """Run git and return stdout as text without the trailing newline."""
        res = self.run(*args, input=input, env=env, check=check, timeout=timeout)
        return res.stdout.decode(errors="surrogateescape").rstrip("\n")

    def ok(self, *args: str, input: str | bytes | None = None, env: Env | None = None,
           timeout: float | None = None) -> bool:
        return self.run(*args, input=input, env=env, check=False, timeout=timeout).returncode == 0

    def popen(self, *args: str, env: Env | None = None, cwd: str | None = None) -> GitProcess:
        """A long-running git (cat-file --batch, check-ignore --stdin) that talks through
        pipes on stdin and stdout; its stderr is dropped. env adds to the repository's."""
        try:
            return GitProcess(subprocess.Popen(
                ["git", *args], cwd=cwd or self.cwd,
                env=dict(self.env, **env) if env else self.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        except FileNotFoundError:
            raise Error("git is not installed or not on PATH") from None

    # -- small queries ------------------------------------------------------------
    def rev(self, name: str) -> str | None:
        """The commit id name points at, or None."""
        res = self.run("rev-parse", "-q", "--verify", "--end-of-options", name + "^{commit}",
                       check=False)
        return res.stdout.decode().strip() if res.returncode == 0 else None

    def tree(self, commit: str, objects: Objects | None = None) -> str:
        """The id of commit's tree (remembered for commit ids: it never changes); read
        through objects when given (a commit id's, then: no process)."""
        if commit in self.trees:
            return self.trees[commit]
        if objects is not None and is_hex_oid(commit) and (
                header := objects.header(commit)) is not None:
            # "tree ID" comes first; the rest, a message of any size a peer chose, is
            # skipped (read whole, it held the daemon's memory twice over)
            data = objects.read(min(header[1], 128))
            objects.end(header[1] - len(data))
            first = data.split(b"\n", 1)[0].split()
            if header[0] == "commit" and len(first) == 2 and first[0] == b"tree" and \
                    is_hex_oid(first[1].decode(errors="replace")):
                self.know_tree(commit, first[1].decode())
                return self.trees[commit]
        tree = self.out("rev-parse", "--verify", "--end-of-options", commit + "^{tree}")
        if is_hex_oid(commit):
            self.know_tree(commit, tree)
        return tree

    def know_tree(self, commit: str, tree: str) -> None:
        """Remember commit's tree, learnt by whoever read the commit (see tree())."""
        if len(self.trees) >= 1024:
            self.trees.clear()
        self.trees[commit] = tree

    def missing_commits(self, oids: Iterable[str]) -> set[str]:
        """Those of oids that are not commits here (one git process for all of them)."""
        oids = list(oids)
        if not oids:
            return set()
        res = self.run("cat-file", "--batch-check", check=False,
                       input="".join(f"{o}^{{commit}}\n" for o in oids))
        return {line.split("^", 1)[0] for line in res.stdout.decode().splitlines()
                if line.endswith(" missing")}

    def unknown(self, oids: Iterable[str]) -> set[str]:
        """Those of oids that are not loose objects here, found without a process: a new
        commit just announced is not here, and is fetched without asking git first (one
        git gc packed, or a blob's id, costs a fetch that brings nothing)."""
        objects = os.path.join(self.common_dir, "objects")
        return {o for o in oids if not (is_hex_oid(o) and os.path.exists(
            os.path.join(objects, o[:2], o[2:])))}

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", a, b)

    def _read_ref(self, path: str) -> str:
        """The text of a ref file as git writes it (whole, by rename), "" when it cannot
        be read; never through a symbolic link (core.preferSymlinkRefs of old)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                return f.read(4096).decode("utf-8", "surrogateescape").strip()
        except OSError:
            return ""

    def last_ref_update(self, ref: str) -> tuple[str, str] | None:
        """(old, new) commit ids of the newest entry of ref's reflog, read from the file
        without a process; None when there is none (no reflog, reftable, unreadable)."""
        base = self.git_dir if ref.count("/") < 1 or ref == "HEAD" else self.common_dir
        try:
            with open(os.path.join(base, "logs", ref), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().splitlines()
        except OSError:
            return None
        fields = lines[-1].split(b" ", 2) if lines else []
        if len(fields) < 3:
            return None
        old, new = fields[0].decode(errors="replace"), fields[1].decode(errors="replace")
        return (old, new) if is_hex_oid(old) and is_hex_oid(new) else None

    def current_branch(self) -> str | None:
        """The checked-out branch (None: detached). Read from HEAD itself, as git does,
        without a process: this is asked before every commit and every merge."""
        head = self._read_ref(os.path.join(self.git_dir, "HEAD"))
        if head.startswith("ref: refs/heads/") and head != "ref: refs/heads/.invalid":
            return head[len("ref: refs/heads/"):]  # (.invalid: a reftable repository)
        if is_hex_oid(head):
            return None
        res = self.run("symbolic-ref", "-q", "--short", "HEAD", check=False)
        return res.stdout.decode().strip() if res.returncode == 0 else None

    def head(self) -> str | None:
        """HEAD's commit id (None: an unborn branch), from HEAD and the branch's loose ref
        file without a process when they are plain (asked before every merge); else, a
        packed ref say, from git."""
        head = self._read_ref(os.path.join(self.git_dir, "HEAD"))
        if head.startswith("ref: refs/heads/") and valid_branch_name(head[16:]):
            head = self._read_ref(os.path.join(self.common_dir, head[5:]))
        return head if is_hex_oid(head) else self.rev("HEAD")

    def config_all(self) -> dict[str, list[str]]:
        """All config entries as {lowercased-key: [values]} (one git process)."""
        return parse_config_list(self.run("config", "-z", "--list", check=False).stdout)

    @property
    def work_tree(self) -> str:
        """The top of the work tree (Error in a bare repository, which has none)."""
        if self.top is None:
            raise Error(f"'{self.git_dir}' is a bare repository: it has no work tree")
        return self.top

    def git_path(self, name: str) -> str:
        return os.path.join(self.git_dir, name)

    def operation_in_progress(self) -> str | None:
        """The name of a merge/rebase/... the user started by hand, or None."""
        markers = (("MERGE_HEAD", "merge"), ("rebase-merge", "rebase"), ("rebase-apply", "rebase"),
                   ("CHERRY_PICK_HEAD", "cherry-pick"), ("REVERT_HEAD", "revert"),
                   ("BISECT_LOG", "bisect"))
        for marker, name in markers:
            if os.path.exists(self.git_path(marker)):
                return name
        return None

    def ensure_state_dir(self) -> str:
        """$GIT_DIR/autosync, created when missing (an Error naming it when it cannot be:
        a file in the way, no permission; Retry on a full disk)."""
        try:
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as e:
            said = os_error(e, f"cannot create '{self.state_dir}'")
            if isinstance(e, FileExistsError):
                said.message = f"cannot create '{self.state_dir}': a file is in the way"
                said.hints = [f"mv {shlex.quote(self.state_dir)} "
                              f"{shlex.quote(self.state_dir + '.old')}"]
            raise said from None
        return self.state_dir

    @contextmanager
    def lock(self, name: str = "repo", timeout: float | None = None) -> Iterator[None]:
        """An flock shared by every git-autosync process acting on this repository.

        The watcher's commits, the listener's merges, `sync` and the push helper all
        take it, so they never interleave. timeout=None waits forever.
        """
        path = os.path.join(self.ensure_state_dir(), name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise os_error(e, f"cannot open the lock '{path}'") from None
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                    break
                except BlockingIOError:
                    if deadline is None or time.monotonic() >= deadline:
                        raise Retry(f"another git-autosync process holds '{path}'") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)


def parse_config_list(data: bytes) -> dict[str, list[str]]:
    """`git config -z --list` output as {normalized key: [values, in order]}."""
    result: dict[str, list[str]] = {}
    for item in data.decode(errors="surrogateescape").split("\0"):
        if not item:
            continue
        key, _, value = item.partition("\n")
        result.setdefault(_normalize_key(key), []).append(value)
    return result


def _normalize_key(key: str) -> str:
    """git config keys: section and variable are case-insensitive, subsection is not."""
    first, dot, rest = key.partition(".")
    if "." in rest:
        sub, _, var = rest.rpartition(".")
        return f"{first.lower()}.{sub}.{var.lower()}"
    return f"{first.lower()}{dot}{rest.lower()}"


def is_hex_oid(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


# Characters git refuses anywhere in a ref name (refs.c refname_disposition): controls, DEL,
# space, ~ ^ : ? [ \\ and * (a refspec pattern only). Bytes >= 0x80 are all allowed.
_REF_BAD_CHARS = frozenset([chr(c) for c in range(0x20)] + ["\x7f", " ", "~", "^", ":", "?",
                                                             "[", "\\", "*"])


def valid_branch_name(name: str) -> bool:
    """A branch name git accepts and that cannot be mistaken for an option or a path trick.

    `git check-ref-format --branch NAME` in pure Python (no process: it runs for names that
    arrive from the network): the rules of `git help check-ref-format` for refs/heads/NAME,
    plus --branch's own: not HEAD, no leading '-'. At most 255 characters."""
    if not name or name.startswith("-") or len(name) > 255 or name == "HEAD":
        return False
    if ".." in name or "@{" in name or name.endswith("."):
        return False
    if not _REF_BAD_CHARS.isdisjoint(name):
        return False
    for component in name.split("/"):  # empty: a leading, trailing or double slash
        if not component or component.startswith(".") or component.endswith(".lock"):
            return False
    return True


def log_git_failure(what: str, exc: BaseException) -> None:
    log.warning("%s: %s", what, exc.message if isinstance(exc, Error) else exc)
