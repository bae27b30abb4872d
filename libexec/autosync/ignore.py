"""What is never committed: editor temp files (built in, extendable) and what git ignores.

TEMP_PATTERNS match base names; `autosync.ignore` patterns match the base name or the
whole path. IgnoreChecker asks one long-lived `git check-ignore --stdin --no-index -z -v -n`
process, so the watcher can skip ignored directories (node_modules costs nothing) without a
process per question. With -v -n git answers every path (source, line, pattern, path; empty
source: no rule matched; a pattern starting with '!' re-includes) and flushes per answer on a
pipe; we write and read at the same time, so long paths cannot fill both pipes and deadlock.
--no-index keeps each answer cheap on a large index; files someone force-added despite the
rules (and the directories holding them) are looked up once and never count as ignored.
"""

import os
import select
from collections.abc import Iterable
from fnmatch import fnmatchcase

from .git import GitProcess, Repo
from .util import log

# Editor temp, swap and backup files, matched against the base name.
TEMP_PATTERNS = (
    ".*.sw[a-p]", "*.swp", ".*.swx", "4913",  # vim swap files and its write test
    "*~",  # backups (vim, emacs, gedit, nano)
    "#*#", ".#*",  # emacs auto-save and lock links
    ".~lock.*#", "lu*.tmp",  # LibreOffice lock and save temp
    "~$*",  # Microsoft Office owner files
    ".goutputstream-*",  # gedit/GIO atomic save
    "*.kate-swp",  # kate
    "*___jb_tmp___", "*___jb_old___",  # JetBrains safe write
    ".*.tmp.[0-9]*",  # atomic-save temp names used by several tools
    ".nfs*",  # NFS silly-renamed open files
    ".fuse_hidden*",  # the same on FUSE (libfuse: sshfs, ...): an open file unlinked or saved over
    "*.crdownload",  # Chromium downloads in progress
    ".merge_file_*",  # git checkout-index --temp (autosync's own merge)
)

CHUNK = 4096  # paths per round trip (bounds memory, not needed against deadlock)
TIMEOUT = 30  # seconds git may stay silent before we give up on it


def is_temp(path: str, extra: Iterable[str] = ()) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(name, p) for p in TEMP_PATTERNS) or \
        any(fnmatchcase(name, p) or fnmatchcase(path, p) for p in extra)


def is_ignore_file(path: str) -> bool:
    """A change to this path can change what git ignores."""
    return path.rsplit("/", 1)[-1] == ".gitignore"


def exclude_files(repo: Repo) -> list[str]:
    """Absolute paths of the other files git reads rules from: info/exclude, core.excludesFile."""
    files = [os.path.join(repo.common_dir, "info", "exclude")]
    res = repo.run("config", "--path", "core.excludesFile", check=False)
    path = os.fsdecode(res.stdout).rstrip("\n")
    if not path:  # git's default
        home = repo.env.get("HOME") or os.path.expanduser("~")
        path = os.path.join(repo.env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                            "git", "ignore")
    files.append(os.path.normpath(os.path.join(repo.work_tree, path)))
    return files


class IgnoreChecker:
    """Which of some repo-relative paths git ignores (.gitignore, info/exclude,
    core.excludesFile)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.proc: GitProcess | None = None
        # tracked paths that match ignore rules, with their directories
        self.tracked: set[str] | None = None

    def _start(self) -> GitProcess:
        self.proc = self.repo.popen("check-ignore", "--stdin", "--no-index", "-z", "-v", "-n",
                                    env={"GIT_FLUSH": "1"}, cwd=self.repo.top)
        os.set_blocking(self.proc.stdin.fileno(), False)
        return self.proc

    def ignored(self, paths: Iterable[str]) -> set[str]:
        """The subset of paths that are ignored. Paths must exist for dir-only patterns."""
        found = self._ignored(paths)
        return found - self._tracked() if found else found

    def _tracked(self) -> set[str]:
        if self.tracked is None:
            res = self.repo.run("ls-files", "-z", "-c", "-i", "--exclude-standard", check=False)
            tracked = set()
            for path in os.fsdecode(res.stdout).split("\0"):
                while path and path not in tracked:
                    tracked.add(path)
                    path = path.rpartition("/")[0]
            self.tracked = tracked
        return self.tracked

    def _ignored(self, paths: Iterable[str]) -> set[str]:
        paths = [p for p in paths if p and "\0" not in p]
        found: set[str] = set()
        for i in range(0, len(paths), CHUNK):
            chunk = paths[i:i + CHUNK]
            try:
                found |= self._ask(chunk)
            except (OSError, ValueError) as e:
                log.warning("git check-ignore failed (%s); restarting it", e)
                self.close()
                try:
                    found |= self._ask(chunk)
                except (OSError, ValueError) as e:  # watch too much rather than too little
                    log.error("git check-ignore failed again (%s); treating nothing as ignored", e)
                    self.close()
        return found

    def _ask(self, chunk: list[str]) -> set[str]:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            proc = self._start()
        data = memoryview(b"".join(os.fsencode(p) + b"\0" for p in chunk))
        inp, out = proc.stdin.fileno(), proc.stdout.fileno()
        want = 4 * len(chunk)  # -v -n -z: source, line, pattern, path per answer
        blocks: list[bytes] = []
        nuls = 0
        while nuls < want:
            readable, writable, _ = select.select([out], [inp] if data else [], [], TIMEOUT)
            if not readable and not writable:
                raise ValueError(f"git check-ignore silent for {TIMEOUT}s")
            if writable:
                try:
                    data = data[os.write(inp, data[:65536]):]
                except BlockingIOError:
                    pass
            if readable:
                block = os.read(out, 65536)
                if not block:
                    raise ValueError("git check-ignore exited")
                blocks.append(block)
                nuls += block.count(0)
        fields = b"".join(blocks).split(b"\0")
        return {os.fsdecode(fields[i + 3]) for i in range(0, want, 4)
                if fields[i] and not fields[i + 2].startswith(b"!")}

    def reset(self) -> None:
        """Forget what git has read: a .gitignore changed."""
        self.close()
        self.tracked = None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
