"""The push helper: bring in what the remote has, push, announce - with the engine's retries.

Started in the background by the post-commit hook when no daemon runs (a manual
`git commit`, the commit helper run alone, or autosync installed without a daemon). One
helper pushes at a time; a helper that finds the remote away retries a bounded number of
times and then leaves the commits for the next commit, the next `git autosync sync` or the
daemon.
"""

import argparse

from .git import Repo
from .sync import Engine, sync_once
from .util import Retry, log, setup_logging


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="autosync-push",
        description="Push the synced branch (fetching and merging first if the remote moved "
                    "on) and notify the other clones; retries with backoff.")
    ap.add_argument("-C", dest="dir", default=".", help="repository (default: .)")
    ap.add_argument("--attempts", type=int, default=7,
                    help="tries while the remote is unreachable (default 7, about 2 minutes)")
    args = ap.parse_args(argv)
    setup_logging()
    repo = Repo(args.dir)
    engine = Engine.one_shot(repo)
    with repo.lock("push"):  # one push helper at a time; the next one finds little to do
        try:
            outcome = sync_once(engine, commit=False, attempts=args.attempts)
        except Retry as e:
            raise Retry(e.message, "the commits stay here; the next commit, "
                        "'git autosync sync' or the daemon pushes them") from None
    if outcome.pushed:
        log.info("pushed %s to %s", outcome.pushed[:10], engine.config.remote)
    return 0
