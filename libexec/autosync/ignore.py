"""What is never committed: editor temp files (built in, extendable) and what git ignores.

TEMP_PATTERNS match base names; `autosync.ignore` patterns match the base name or the
whole path. IgnoreChecker asks one long-lived `git check-ignore --stdin --no-index`
process, so the watcher can skip ignored directories (node_modules costs nothing) without a
process per question; it answers in chunks small enough that neither pipe can fill up.
--no-index keeps each answer cheap on a large index; files someone force-added despite the
rules (and the directories holding them) are looked up once and never count as ignored.
"""

import os
import subprocess
from fnmatch import fnmatchcase

from .util import log

# Editor temp, swap and backup files, matched against the base name.
TEMP_PATTERNS = (
    ".*.swp", ".*.swo", ".*.swx", "*.swp", "4913",  # vim
    "*~",  # backups (vim, emacs, gedit, nano)
    "#*#", ".#*",  # emacs auto-save and lock links
    ".~lock.*#",  # LibreOffice
    ".goutputstream-*",  # gedit/GIO atomic save
    "*.kate-swp",  # kate
    ".*.tmp.[0-9]*",  # atomic-save temp names used by several tools
)

CHUNK = 256  # paths per round trip: answers stay far below a pipe's 64 KiB


def is_temp(path, extra=()):
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(name, p) for p in TEMP_PATTERNS) or \
        any(fnmatchcase(name, p) or fnmatchcase(path, p) for p in extra)


def is_ignore_file(path):
    """A change to this path can change what git ignores."""
    return path.rsplit("/", 1)[-1] == ".gitignore"


class IgnoreChecker:
    """Which of some repo-relative paths git ignores (.gitignore, info/exclude, core.excludesFile)."""

    def __init__(self, repo):
        self.repo = repo
        self.proc = None
        self.tracked = None  # tracked paths that match ignore rules, with their directories

    def _start(self):
        self.proc = subprocess.Popen(
            ["git", "check-ignore", "--stdin", "--no-index", "-z", "-v", "-n"],
            cwd=self.repo.top,
            env=dict(self.repo.env, GIT_FLUSH="1"), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def ignored(self, paths):
        """The subset of paths that are ignored. Paths must exist for dir-only patterns."""
        found = self._ignored(paths)
        return found - self._tracked() if found else found

    def _tracked(self):
        if self.tracked is None:
            res = self.repo.run("ls-files", "-z", "-c", "-i", "--exclude-standard", check=False)
            self.tracked = set()
            for path in os.fsdecode(res.stdout).split("\0"):
                while path and path not in self.tracked:
                    self.tracked.add(path)
                    path = path.rpartition("/")[0]
        return self.tracked

    def _ignored(self, paths):
        paths = [p for p in paths if p and "\0" not in p]
        found = set()
        for i in range(0, len(paths), CHUNK):
            chunk = paths[i:i + CHUNK]
            try:
                found |= self._ask(chunk)
            except (OSError, ValueError) as e:
                log.warning("git check-ignore failed (%s); restarting it", e)
                self.close()
                found |= self._ask(chunk)
        return found

    def _ask(self, chunk):
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = b"".join(os.fsencode(p) + b"\0" for p in chunk)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        want = 4 * len(chunk)  # -v -n -z: source, line, pattern, path per answer
        buf = bytearray()
        while buf.count(0) < want:
            block = os.read(self.proc.stdout.fileno(), 65536)
            if not block:
                raise ValueError("git check-ignore exited")
            buf += block
        fields = bytes(buf).split(b"\0")
        return {os.fsdecode(fields[i + 3]) for i in range(0, want, 4) if fields[i]}

    def reset(self):
        """Forget what git has read: a .gitignore changed."""
        self.close()
        self.tracked = None

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
