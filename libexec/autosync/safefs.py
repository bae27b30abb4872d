"""Work-tree operations that never follow a symlink in a leading path component.

Every path is walked one component at a time from an open directory with
O_NOFOLLOW | O_DIRECTORY, and every rename, link, unlink, mkdir and stat acts relative to
the directory descriptor found that way. A component that is a symlink or a file stops the
walk with Blocked, where git's checkout would refuse with has_symlink_leading_path.
Renames use renameat2(2): RENAME_EXCHANGE swaps two names atomically (a reader never sees
the file missing), RENAME_NOREPLACE never replaces what is there. Where the file system
lacks them, link() + unlink() gives the same no-replace guarantee.
"""

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Callable

Renameat2 = Callable[[int, bytes, int, bytes, int], int]

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "i686": 353, "i386": 353,
                  "ppc64le": 357, "s390x": 347, "riscv64": 276}
_WALK = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_CACHED = 64  # open directory descriptors kept per tree (well below any RLIMIT_NOFILE)


class Blocked(OSError):
    """A leading path component is not a directory (a symlink, a file) or is missing."""


def _load_renameat2() -> Renameat2 | None:
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
        return func
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        return None
    syscall = libc.syscall
    return lambda a, b, c, d, e: int(syscall(number, a, b, c, d, ctypes.c_uint(e)))


_renameat2 = _load_renameat2()


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    """renameat2(2); OSError(EINVAL/ENOSYS) where the kernel or file system lacks it."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


class Root:
    """A directory tree that is only ever entered through directory descriptors."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, _WALK & ~os.O_NOFOLLOW)  # the top itself may be a link
        self.cache: dict[str, int] = {}  # directory -> its open descriptor

    def close(self) -> None:
        self.forget("")
        os.close(self.fd)

    def forget(self, rel_dir: str) -> None:
        """Drop cached descriptors of rel_dir and everything below it (it was removed)."""
        for key in [k for k in self.cache if k == rel_dir or k.startswith(rel_dir + "/")
                    or not rel_dir]:
            os.close(self.cache.pop(key))

    def dir(self, rel_dir: str, create: bool = False) -> int:
        """The descriptor of directory rel_dir ('' is the top); Blocked if it cannot be."""
        if not rel_dir:
            return self.fd
        fd = self.cache.get(rel_dir)
        if fd is not None:
            return fd
        # from the deepest cached ancestor, one component at a time; only the directory
        # asked for is kept open (no recursion and no descriptor per level: a tree may be
        # thousands of directories deep)
        parts = rel_dir.split("/")
        start, base = 0, self.fd
        for k in range(len(parts) - 1, 0, -1):
            cached = self.cache.get("/".join(parts[:k]))
            if cached is not None:
                start, base = k, cached
                break
        pfd = base
        try:
            for k in range(start, len(parts)):
                fd = self._enter(pfd, parts[k], "/".join(parts[:k + 1]), create)
                if pfd != base:
                    os.close(pfd)
                pfd = fd
        except BaseException:
            if pfd != base:
                os.close(pfd)
            raise
        if len(self.cache) >= MAX_CACHED:
            self.forget("")
        self.cache[rel_dir] = pfd
        return pfd

    @staticmethod
    def _enter(pfd: int, name: str, rel: str, create: bool) -> int:
        try:
            return os.open(name, _WALK, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise Blocked(errno.ENOENT, "no such directory", rel) from None
            try:
                os.mkdir(name, 0o777, dir_fd=pfd)  # the umask applies, as for git
            except FileExistsError:
                pass
            try:
                return os.open(name, _WALK, dir_fd=pfd)
            except OSError as e:
                raise Blocked(e.errno, "not a directory", rel) from e
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Blocked(e.errno, "a symlink or file is in the way", rel) from e
            raise

    def at(self, rel: str, create: bool = False) -> tuple[int, str]:
        """(directory descriptor, base name) for a path below the top."""
        parent, _, name = rel.rpartition("/")
        return self.dir(parent, create), name

    def lstat(self, rel: str) -> os.stat_result | None:
        """os.lstat of rel, or None when it (or a leading directory) is not there."""
        try:
            fd, name = self.at(rel)
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (Blocked, FileNotFoundError):
            return None

    def open(self, rel: str) -> int:
        fd, name = self.at(rel)
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)

    def readlink(self, rel: str) -> str:
        fd, name = self.at(rel)
        return os.readlink(name, dir_fd=fd)

    def unlink(self, rel: str) -> None:
        fd, name = self.at(rel)
        os.unlink(name, dir_fd=fd)

    def rmdir(self, rel: str) -> None:
        fd, name = self.at(rel)
        self.forget(rel)
        os.rmdir(name, dir_fd=fd)


def kind(st: os.stat_result | None) -> str | None:
    """'file', 'link', 'dir' or 'other' for a stat result; None for None."""
    if st is None:
        return None
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "other"


_exchange_works = [True]


def exchange(a: Root, a_rel: str, b: Root, b_rel: str) -> bool:
    """Swap two existing names atomically. False where the file system cannot."""
    if not _exchange_works[0]:
        return False
    afd, an = a.at(a_rel)
    bfd, bn = b.at(b_rel, create=True)
    try:
        renameat2(afd, an, bfd, bn, RENAME_EXCHANGE)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            _exchange_works[0] = False
            return False
        raise
    return True


def move_noreplace(a: Root, a_rel: str, b: Root, b_rel: str) -> None:
    """Rename a_rel (in a) to b_rel (in b) unless something is there: FileExistsError."""
    afd, an = a.at(a_rel)
    bfd, bn = b.at(b_rel, create=True)
    try:
        renameat2(afd, an, bfd, bn, RENAME_NOREPLACE)
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.link(an, bn, src_dir_fd=afd, dst_dir_fd=bfd, follow_symlinks=False)
    os.unlink(an, dir_fd=afd)
