"""The push helper: push (merging first when the remote moved on), then notify.

Started in the background by the post-commit hook when no daemon runs (a manual
`git commit`, or autosync installed without a daemon). One helper pushes at a time; a
helper that finds the remote away retries with backoff a bounded number of times and then
leaves the commits for the next commit, the next `git autosync sync` or the daemon.
"""

import argparse
import time

from .config import Config
from .git import Repo
from .sync import sync_once
from .util import Backoff, Retry, log, setup_logging


def publisher(repo, config):
    """publish(commit) announcing a push once, or None when no transport is configured."""
    from .transport import kind, publish_once
    if kind(config) is None:
        return None
    from .message import Notification, sender_id

    def publish(commit):
        note = Notification(config.channel, config.branch, commit, sender_id(repo, config),
                            time.time())
        publish_once(config, [note])
    return publish


def main(argv):
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
    config = Config(repo)
    backoff = Backoff(first=1.0, cap=60.0)
    with repo.lock("push"):  # one push helper at a time; the next one finds little to do
        for attempt in range(1, args.attempts + 1):
            try:
                pushed, _ = sync_once(repo, config, commit=False,
                                      publish=publisher(repo, config))
                if pushed:
                    log.info("pushed %s to %s", pushed[:10], config.remote)
                return 0
            except Retry as e:
                if attempt == args.attempts:
                    raise Retry(e.message, "the commits stay here; the next commit, "
                                "'git autosync sync' or the daemon pushes them")
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.0fs", e.message, delay)
                time.sleep(delay)
    return 0
