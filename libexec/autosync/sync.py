"""Talking to the remote: fetch, push, and the one-shot sync cycle.

Failures are sorted in two kinds: `Retry` (the network, a server that is away, a push that
lost a race) and `Error` (authentication, a hook on the server that refuses, bad config):
callers retry the first kind with backoff and show the second to a human.
"""

from dataclasses import dataclass

from .commit import check_committable, commit_changes
from .git import Repo
from .merge import integrate
from .treecheck import Refused
from .util import Error, Retry, log

NETWORK_TIMEOUT = 120  # seconds for one fetch or push; a hung ssh must not hang autosync

_TRANSIENT = ("could not read from remote repository", "does not appear to be a git repository",
              "unable to access", "connection refused", "could not resolve", "timed out",
              "network is unreachable", "early eof", "the remote end hung up",
              "connection reset", "no route to host", "temporary failure",
              "unable to create", "index.lock", "cannot lock ref", "is at")
_HUMAN = ("authentication failed", "permission denied", "remote rejected", "pre-receive hook",
          "denied")


def classify(what, remote, stderr):
    """An exception for a failed fetch/push, sorted into retry-later or needs-a-human."""
    text = stderr.strip()
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # git's own diagnosis is its first fatal:/error: line; the lines after it are advice
    first = next((l for l in lines if l.startswith(("fatal:", "error:"))), None)
    last = (first.split(":", 1)[1].strip() if first else lines[-1] if lines else "failed")
    low = text.lower()
    if any(s in low for s in _HUMAN):
        return Error(f"cannot {what} '{remote}': {last}",
                     f"check your access with 'git ls-remote {remote}'")
    if any(s in low for s in _TRANSIENT) or not text:
        return Retry(f"cannot {what} '{remote}': {last}")
    return Error(f"cannot {what} '{remote}': {last}")


class Rejected(Exception):
    """The remote has commits we do not have yet: fetch, merge, push again."""


@dataclass
class Remote:
    repo: Repo
    name: str
    branch: str

    @property
    def tracking_ref(self):
        return f"refs/remotes/{self.name}/{self.branch}"

    def tracking(self):
        return self.repo.rev(self.tracking_ref)

    def fetch(self):
        """Fetch the branch into its remote-tracking ref; return its commit (None: no branch)."""
        res = self.repo.run("fetch", "-q", "--no-tags", "--no-write-fetch-head",
                            "--end-of-options", self.name,
                            f"+refs/heads/{self.branch}:{self.tracking_ref}",
                            check=False, timeout=NETWORK_TIMEOUT)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace")
            if "couldn't find remote ref" in err:
                return None  # an empty server: the first push creates the branch
            if "fsck error" in err:  # fetch.fsckObjects: an object git considers unsafe
                reason = next((l.split(": ", 2)[-1] for l in err.splitlines()
                               if l.startswith("error: object ")), "an object fails git fsck")
                head = self.head()
                raise Refused(f"refusing commit {(head or '?')[:10]} from '{self.name}': "
                              f"{reason}", "nothing was fetched; syncing resumes by itself "
                              "once the branch moves on to a commit without it", commit=head)
            raise classify("fetch from", self.name, err)
        return self.tracking()

    def head(self):
        """The remote's commit for the branch, asked cheaply (git ls-remote)."""
        res = self.repo.run("ls-remote", "--heads", "--end-of-options", self.name,
                            f"refs/heads/{self.branch}",
                            check=False, timeout=NETWORK_TIMEOUT)
        if res.returncode != 0:
            raise classify("reach", self.name, res.stderr.decode(errors="replace"))
        out = res.stdout.decode().split()
        return out[0] if out else None

    def push(self):
        """Push the branch. Returns the pushed commit, or None when already up to date."""
        local = self.repo.rev(f"refs/heads/{self.branch}")
        if local is None or local == self.tracking():
            return None
        res = self.repo.run("push", "--porcelain", "-q", "--end-of-options", self.name,
                            f"refs/heads/{self.branch}:refs/heads/{self.branch}",
                            check=False, timeout=NETWORK_TIMEOUT)
        out = res.stdout.decode(errors="replace")
        if res.returncode == 0:
            # keep the remote-tracking ref right even when no fetch refspec is configured
            self.repo.run("update-ref", "-m", "autosync: pushed", self.tracking_ref, local)
            return local
        if "[rejected]" in out and ("fetch first" in out or "non-fast-forward" in out):
            raise Rejected()
        raise classify("push to", self.name, res.stderr.decode(errors="replace") + out)


def remote_for(repo, config):
    """The configured Remote, or None when sync over the network is not set up."""
    if not config.has_remote:
        return None
    return Remote(repo, config.remote, config.branch)


def check_branch(repo, config):
    """Only the configured branch is synced; a user who switched away is left alone."""
    current = repo.current_branch()
    if current != config.branch:
        raise Error(f"'{repo.cwd}' has '{current or 'a detached HEAD'}' checked out, "
                    f"autosync syncs '{config.branch}'; leaving it alone",
                    f"git -C '{repo.cwd}' switch {config.branch}")


def sync_once(repo, config, commit=True, publish=None, attempts=5):
    """Commit (optionally), fetch, merge, push, publish. Returns (pushed commit, conflicts).

    Used by `git autosync sync` and by the push helper that runs after a commit made
    while no daemon is running. publish(commit) announces a successful push.
    """
    check_branch(repo, config)
    if commit:
        with repo.lock():
            commit_changes(repo, config)
    remote = remote_for(repo, config)
    if remote is None:
        log.info("no remote '%s' configured; committed locally only", config.remote)
        return None, []
    conflicts = []
    for _ in range(attempts):
        if config["pull"]:
            target = remote.fetch()
            if target and not repo.is_ancestor(target, "HEAD"):
                with repo.lock():
                    check_committable(repo)
                    if commit:
                        commit_changes(repo, config)
                    conflicts += integrate(repo, target, config).conflicts
        if not config["push"]:
            return None, conflicts
        try:
            pushed = remote.push()
        except Rejected:
            if not config["pull"]:
                raise Error(f"cannot push to '{remote.name}': it has commits this clone "
                            "does not have, and autosync.pull is false",
                            "git config autosync.pull true")
            log.info("push to '%s' rejected: the remote moved on; merging first", remote.name)
            continue
        if pushed and publish:
            publish(pushed)
        return pushed, conflicts
    raise Retry(f"cannot push to '{remote.name}': it keeps moving; will try again")
