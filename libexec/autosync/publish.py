"""autosync-publish: announce branch heads, as the bare server's post-receive hook does.

    autosync-publish [--git-dir=DIR] [--] BRANCH COMMIT [BRANCH COMMIT ...]
    autosync-publish [--git-dir=DIR] --stdin     (post-receive lines: OLD NEW REF)

The channel is the repository's (autosync.channel, default its name). Deleted branches
and refs outside refs/heads/ are not announced. A broker that is down or slow costs at
most --timeout seconds and one log line: the exit status is 0 all the same, because a
notification is an optimisation and a push must never fail over it.

Everything after the first `--` is a BRANCH COMMIT pair, whatever it looks like: the hook
passes branch names there, so that a branch called `-h` or `--git-dir=/elsewhere` is data.
A branch name git would not accept for a branch (a leading '-' included) is not announced:
one log line, and the other branches are announced all the same.
"""

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence

from .config import Config
from .git import Repo
from .message import BadMessage, Notification, check, server_sender_id
from .transport import kind, publish_once
from .util import log, setup_logging


def updates_from_lines(lines: Sequence[str], repo: Repo | None = None
                       ) -> Iterator[tuple[str, str]]:
    """(branch, commit) pairs from post-receive input: branches created or moved, and the
    clones' own refs for them (`refs/autosync/BRANCH/CLONE`, see sync.py); each pair once.
    With repo: a branch moved to a commit a clone's ref already had before this push is
    not announced again (the clone pushed it to its ref first, and that was announced)."""
    seen: set[tuple[str, str]] = set()
    pushed = {parts[2] for parts in (line.split() for line in lines) if len(parts) == 3}
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or not parts[1].strip("0"):
            continue
        ref, branch = parts[2], None
        if ref.startswith("refs/heads/"):
            branch = ref[len("refs/heads/"):]
            if repo is not None and _announced_before(repo, branch, parts[1], pushed):
                continue
        elif ref.startswith("refs/autosync/"):
            branch = ref[len("refs/autosync/"):].rpartition("/")[0]
        if branch and (branch, parts[1]) not in seen:
            seen.add((branch, parts[1]))
            yield branch, parts[1]


def _announced_before(repo: Repo, branch: str, commit: str, pushed: set[str]) -> bool:
    res = repo.run("for-each-ref", "--format=%(refname)", f"--points-at={commit}",
                   f"refs/autosync/{branch}/", check=False)
    return any(ref not in pushed for ref in res.stdout.decode(errors="replace").split())


def split_at_double_dash(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(options, data): what comes after the first `--` never reaches the option parser,
    whichever Python runs us (argparse's own handling of `--` varies between versions)."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return list(argv[:i]), list(argv[i + 1:])


def notes_for(config: Config, pairs: Iterable[tuple[str, str]],
              sender: str) -> list[Notification]:
    notes = []
    for branch, commit in pairs:
        note = Notification.now(config.channel, branch, commit, sender)
        try:
            check(note)
        except BadMessage as e:
            log.warning("not announcing branch '%s': %s", branch, e)
            continue
        notes.append(note)
    return notes


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="autosync-publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("--git-dir", default=".", help="the repository (default: .)")
    ap.add_argument("--stdin", action="store_true", help="read post-receive lines from stdin")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds at most (default 5)")
    ap.add_argument("pairs", nargs="*", metavar="BRANCH COMMIT")
    options, data = split_at_double_dash(argv)
    args = ap.parse_args(options)
    words = args.pairs + data
    if len(words) % 2:
        ap.error("give BRANCH COMMIT pairs")
    setup_logging()
    repo = Repo(args.git_dir)
    config = Config(repo)
    pairs = list(zip(words[::2], words[1::2], strict=True))  # an even count: checked above
    if args.stdin:
        text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
        pairs += list(updates_from_lines(text.splitlines(), repo))
    if kind(config) is None or not pairs:
        return 0
    notes = notes_for(config, pairs, server_sender_id(config))
    if notes and publish_once(config, notes, max(0.1, args.timeout)):
        log.info("announced %s", ", ".join(f"{n.branch} {n.commit[:10]}" for n in notes))
    return 0
