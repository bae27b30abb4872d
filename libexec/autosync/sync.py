"""The sync engine: commit -> fetch -> integrate -> push -> announce, one retry policy.

How clones share a branch B without fighting over it: each clone pushes its own commits
to a ref of its own on the remote, `refs/autosync/B/<clone>`, which only it writes, so a
push is never rejected because another clone got there first. Every clone fetches all of
those refs and B itself (the "tips") and brings them in with `merge.integrate`: a
fast-forward when one tip holds all the others. When they must be merged, one clone does
it, the one that `folds` (the first name among the clones whose refs are at those tips):
it makes the deterministic fold of the tips - the same set of tips gives the very same
merge commit anywhere, so there is no merge of merges - and the others fast-forward to it,
so nobody builds on a fold of their own (criss-cross histories, costly to merge), and a
fold is computed once, not by every clone. B itself follows, as a fast-forward, pushed by
the clone that `leads`: whose own commit or fold holds every clone's commits (the daemon
waits a moment for the clones to settle, see daemon.follow). Should that clone stay away,
the others fold and move B themselves after daemon.LEADER_GRACE; `git autosync sync` does at
once. Losing that race costs nothing (the next fetch brings the winner's commit). Any plain
bare repository works, with or without the post-receive hook; a user pushing B with plain
git is folded in like a clone; a server that refuses refs/autosync/* gets B alone, the
clones taking turns on it as git users do.

`Engine` holds the steps; `sync_once` runs them in order for `git autosync sync` and the
push helper, the daemon runs the same steps from two threads (daemon.py). Failures are of
two kinds: `Retry` (the network, a server that is away, a busy lock) and `Error` (access
denied, a hook that refuses, bad config): the first is retried with `util.Backoff`, the
second is shown to a human.
"""

import argparse
import re
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from . import pushlog
from .commit import Result, check_committable, commit_changes
from .config import Config
from .git import Repo
from .merge import Conflict, Integrated, integrate, is_fold, maybe_fold
from .message import PUSH_OPTION, Notification, host_label, repo_digest, sender_id
from .transport import kind, publish_once
from .treecheck import Refused
from .util import OK, Backoff, Error, Retry, log, printable, setup_logging, shown

NETWORK_TIMEOUT = 120  # seconds for one fetch or push; a hung ssh must not hang autosync
PASSED_OVER = 600.0  # seconds a clone that did not fold in time has no say in who folds
MAX_TIPS = 256  # distinct commits of clone refs looked at; more is someone flooding
MAX_TURNS = 30  # turns to fold in a late folder's stead (Remote.rank); more: folded at the last
# how `git push --porcelain` says a ref moved on meanwhile (the last: two pushes at once)
LOST = ("fetch first", "non-fast-forward", "stale info", "failed to update ref")
# ... and that the server will not have a ref (a hook or a rule; not a full disk)
REFUSED_BY_HOOK = ("hook declined", "denied", "deny", "not allowed", "protected")
# a server, or this machine, that is out of space or broke off: retry later
_FULL = ("no space left", "unpacker error", "unpack failed", "disk quota exceeded",
         "unable to write", "failed to write")


_TRANSIENT = ("could not read from remote repository", "unable to access", "connection refused",
              "could not resolve", "timed out", "network is unreachable", "early eof",
              "the remote end hung up", "connection reset", "no route to host",
              "temporary failure", "unable to create", "index.lock", "cannot lock ref", "is at")
_HUMAN = ("authentication failed", "permission denied", "remote rejected", "pre-receive hook",
          "denied", "returned error: 403",
          # ssh refusing for good: a changed host key (a new server, or an attack), its own
          # set-up files ~/.ssh/config and keys with the wrong owner, mode or syntax
          "host key verification failed", "remote host identification has changed",
          "bad owner or permissions", "bad configuration option", "bad permissions",
          "unprotected private key file")
# the remote's repository is not there (a wrong path or URL, a server repository never
# made): waiting does not bring it back, a human must fix the URL (exit 1, not 75)
_GONE = ("does not appear to be a git repository", "repository not found",
         "returned error: 404")


def classify(what: str, remote: str, stderr: str, status: int | None = None) -> Error:
    """An exception for a failed fetch/push, sorted into retry-later or needs-a-human,
    with git's diagnosis in full (git.diagnosis: the cause ssh, a hook or the server gave
    as well as git's last line; `git push --porcelain`'s "To URL" and "Done" left out)."""
    from .git import diagnosis  # (here: the lines above classify are another's to edit)
    text = "\n".join(line for line in stderr.strip().splitlines()
                     if line.rstrip() != "Done" and not line.startswith("To "))
    said = f"cannot {what} '{remote}': " + (diagnosis(text) or (
        f"git exited with status {status}, saying nothing" if status is not None else "failed"))
    low = text.lower()
    if any(s in low for s in _FULL):
        return Retry(said, "free some disk space; autosync retries by itself")
    if "host key verification failed" in low or "host identification has changed" in low:
        return Error(said, "check the server's new host key with its administrator; then "
                           "ssh-keygen -R HOST   (forgets the old one)")
    if any(s in low for s in _HUMAN):
        return Error(said, f"check your access with 'git ls-remote {remote}'")
    if any(s in low for s in _GONE) or re.search(r"repository '[^']*' not found", low):
        return Error(said, f"git remote set-url {remote} URL   (the URL it has: "
                           f"git remote get-url {remote})")
    if any(s in low for s in _TRANSIENT) or not text:
        return Retry(said)
    return Error(said)


class Rejected(Exception):
    """This clone's own ref on the remote has commits this clone does not have (another
    clone with the same name, or history rewritten by hand): fetch, integrate, push again."""


def clone_name(repo: Repo, config: Config) -> str:
    """This clone's name in `refs/autosync/B/<name>`: `<host>-<8 hex>`, stable across
    restarts and distinct per repository; always a valid ref name component."""
    host = re.sub(r"\.+", ".", host_label(config)).strip(".").removesuffix(".lock") or "host"
    return f"{host}-{repo_digest(repo)}"


@dataclass
class Fetched:
    tips: list[str]  # commit ids of B and of every clone's ref, as the remote has them now
    refused: list[Refused] = field(default_factory=list)  # objects fsck would not take
    branch: str | None = None  # B's commit among them


@dataclass
class Pushed:
    commit: str | None = None  # this clone's commit now on the remote (None: nothing new)
    branch: bool = False  # B itself was moved to it
    lost_race: bool = False  # B had moved on meanwhile: fetch, integrate, push again
    known: bool = False  # only B moved, to a commit announced with a clone's ref before
    waiting: bool = False  # B is not at this clone's commit yet (see push's `branch`)
    leads: bool = False  # and this clone is the one to move it there (Remote.leads)
    main: str | None = None  # where B was, as of the last fetch


@dataclass
class Remote:
    repo: Repo
    name: str
    branch: str
    me: str  # clone_name()
    skip: dict[str, Refused] = field(default_factory=dict)  # local ref -> why: not fetched
    # until it moves
    branch_only: bool = False  # the remote refuses refs/autosync/*: push B alone
    push_options: bool = True  # the remote takes `git push -o` (PUSH_OPTION)
    left_out: frozenset[str] = frozenset()  # commits integrate refused (see folds)
    passed_over: dict[str, float] = field(default_factory=dict)  # clone -> until (folder)

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/{self.name}/{self.branch}"

    @property
    def clones_ref(self) -> str:
        """Where the remote keeps every clone's ref for the branch."""
        return f"refs/autosync/{self.branch}/"

    @property
    def copies_ref(self) -> str:
        """Where this clone keeps its copies of them."""
        return f"refs/autosync/remotes/{self.name}/{self.branch}/"

    def _local(self, remote_ref: str) -> str | None:
        if remote_ref == f"refs/heads/{self.branch}":
            return self.tracking_ref
        if remote_ref.startswith(self.clones_ref):
            return self.copies_ref + remote_ref[len(self.clones_ref):]
        return None

    def tracking(self) -> str | None:
        return self.repo.rev(self.tracking_ref)

    def refs(self, with_branch: bool = False) -> dict[str, tuple[str, str, int, bool]]:
        """{local ref: (object id, type, committer time, plain)} for B and every clone's
        ref as of the last fetch (and the local branch refs/heads/B: with_branch); plain:
        a commit that is no fold autosync made (merge.maybe_fold)."""
        # each record ends with a NUL: a peer's author line may hold a newline (git takes
        # it where fsck is off), and a ref split over two lines would be no ref at all
        out = self.repo.out(
            "for-each-ref", "--format=%(refname)%00%(objectname)%00%(objecttype)%00"
            "%(committerdate:unix)%00%(authoremail)%00%(parent)%00",
            self.tracking_ref, self.copies_ref,
            *([f"refs/heads/{self.branch}"] if with_branch else []))
        found = {}
        for line in out.removesuffix("\0").split("\0\n"):  # (out: the last newline gone)
            fields = line.split("\0")
            if len(fields) == 6 and self._mine(fields[0], with_branch):
                found[fields[0]] = (fields[1], fields[2], int(fields[3] or 0),
                                    not maybe_fold(fields[4].strip("<>"), fields[5]))
        return found

    def _mine(self, ref: str, with_branch: bool) -> bool:
        return ref == self.tracking_ref or ref.startswith(self.copies_ref) or (
            with_branch and ref == f"refs/heads/{self.branch}")

    def tips(self, with_branch: bool = False,
             refs: dict[str, tuple[str, str, int, bool]] | None = None) -> dict[str, str]:
        """{local ref: commit} of the refs() that are commits (anything else under
        refs/autosync/ is someone else's mistake or mischief, never merged): B, this
        clone's own, and of the others those with the newest commits, MAX_TIPS commits at
        most (more is someone flooding the namespace; they come in as those are merged).
        Past MAX_TIPS, refs HEAD holds already come last: dates are the pusher's to
        choose, and refs dated in the future must not hide a clone's new commits.
        refs: self.refs(with_branch), when the caller has it."""
        refs = {ref: v for ref, v in (refs or self.refs(with_branch)).items()
                if v[1] == "commit"}
        fixed = (self.tracking_ref, f"refs/heads/{self.branch}", self.copies_ref + self.me)
        found = {ref: refs[ref][0] for ref in fixed if ref in refs}
        commits = set(found.values())
        held: set[str] = set()
        if len({v[0] for v in refs.values()} - commits) > MAX_TIPS - len(commits):
            held = set(self.repo.out("for-each-ref", "--format=%(refname)", "--merged=HEAD",
                                     self.copies_ref).splitlines())
        for ref, (oid, _, _, _) in sorted(((r, v) for r, v in refs.items() if r not in found),
                                       key=lambda rv: (rv[0] in held, -rv[1][2], rv[0])):
            if oid not in commits and len(commits) >= MAX_TIPS:
                continue
            commits.add(oid)
            found[ref] = oid
        return found

    def unpushed(self) -> int:
        """How many commits of the branch the remote has in none of its refs."""
        return int(self.repo.out("rev-list", "--count", f"refs/heads/{self.branch}", "--not",
                                 *self.tips()))

    def probe(self) -> dict[str, str]:
        """{local ref: commit} for the same refs as the remote has them (git ls-remote):
        a cheap way to learn whether a fetch would bring anything."""
        res = self.repo.run("ls-remote", "--end-of-options", self.name,
                            f"refs/heads/{self.branch}", self.clones_ref + "*",
                            check=False, timeout=NETWORK_TIMEOUT)
        if res.returncode != 0:
            raise classify("reach", self.name, res.stderr.decode(errors="replace"))
        found = {}
        for line in res.stdout.decode(errors="replace").splitlines():
            oid, _, ref = line.partition("\t")
            local = self._local(ref)
            if local and not ref.endswith("^{}"):  # (^{}: what an annotated tag points at)
                found[local] = oid
        return found

    def moved(self) -> bool:
        """Whether the remote has commits this clone has not fetched (a ref moved to a
        commit it has already - B to a merge every clone makes - needs no fetch)."""
        now = set(self.probe().values()) - {v[0] for v in self.refs().values()}
        return bool(now and self.repo.missing_commits(now))

    def _remote(self, local: str) -> str:
        if local == self.tracking_ref:
            return f"refs/heads/{self.branch}"
        return self.clones_ref + local[len(self.copies_ref):]

    def fetch(self) -> Fetched:
        """Fetch B and every clone's ref. A ref whose objects git's fsck refuses is left
        out (in .refused, and of every fetch until it moves) and the others are fetched."""
        if self.skip:
            now = self.probe()
            self.skip = {ref: e for ref, e in self.skip.items() if now.get(ref) == e.commit}
        # a clone ref left out is pruned here (it is not merged anyway); B left out keeps
        # its last good commit: its refspec is left out, so --prune does not touch it
        clones = [f"+{self.clones_ref}*:{self.copies_ref}*",
                  *(f"^{self._remote(ref)}" for ref in self.skip if ref != self.tracking_ref)]
        branch = [] if self.tracking_ref in self.skip else [
            f"+refs/heads/{self.branch}:{self.tracking_ref}"]
        err = self._fetch(branch + clones)
        if err and "couldn't find remote ref" in err:  # no B yet: the first push makes it
            err = self._fetch(clones)
        if err and "fsck error" in err:
            self._fetch_one_by_one()
        elif err:
            raise classify("fetch from", self.name, err)
        tips = self.tips()
        return Fetched(list(dict.fromkeys(tips.values())), list(self.skip.values()),
                       tips.get(self.tracking_ref))

    def _fetch(self, refspecs: list[str]) -> str | None:
        # --prune: the copy of a clone ref deleted (or renamed) on the remote goes too
        res = self.repo.run("fetch", "-q", "--no-tags", "--no-write-fetch-head", "--prune",
                            "--no-auto-maintenance",  # commits run it; not after each fetch
                            "--end-of-options", self.name, *refspecs,
                            check=False, timeout=NETWORK_TIMEOUT)
        return res.stderr.decode(errors="replace") if res.returncode else None

    def _fetch_one_by_one(self) -> None:
        """After fetch.fsckObjects refused something: find whose ref it was."""
        for local, oid in self.probe().items():
            if local in self.skip:
                continue
            err = self._fetch([f"+{self._remote(local)}:{local}"])
            if err and "fsck error" in err:
                reason = next((line.split(": ", 2)[-1] for line in err.splitlines()
                               if line.startswith("error: object ")), "an object fails git fsck")
                self.skip[local] = Refused(
                    f"refusing commit {oid[:10]} from '{self.name}': {reason}",
                    "nothing of it was fetched; syncing resumes by itself once that ref "
                    "moves on to a commit without it", commit=oid)
            elif err:
                raise classify("fetch from", self.name, err)

    def push(self, branch: str = "own", options: bool = True) -> Pushed:
        """Push this clone's own commits to its ref, and B (when that is a fast-forward)
        as branch says: "own" not, "lead" when this clone leads (`leads`), "any" whoever
        leads (a one-shot sync; or the clone that leads did not do it in time). With
        options=False, without the push option however the remote takes them."""
        refs = self.refs(with_branch=True)
        tips = self.tips(with_branch=True, refs=refs)
        local = tips.pop(f"refs/heads/{self.branch}", None)
        if local is None:
            return Pushed()
        mine = self.copies_ref + self.me
        # work of this clone's own that no ref on the remote has: none when the remote has
        # local itself (a fast-forward to another clone's commit, say), or when local is
        # the fold of others' commits (see merge.fold; every clone makes the same)
        own = local not in tips.values() and (refs[f"refs/heads/{self.branch}"][3] or int(
            self.repo.out("rev-list", "--count", "--no-merges", local, "--not", *tips)) > 0
            or not is_fold(self.repo, local))
        targets = {}
        if own and local != tips.get(mine) and not self.branch_only:
            targets[self.clones_ref + self.me] = mine  # never rejected: only we write it
        main = tips.get(self.tracking_ref)
        made = local not in (oid for ref, oid in tips.items() if ref != mine)
        if not made and branch != "any":  # at another clone's commit: B is for it to move
            return Pushed(waiting=local != main, main=main)
        unmerged = self.unmerged(local) if local != main else {}
        ahead = local != main and self.tracking_ref not in unmerged
        leads = ahead and branch != "any" and self.leads(unmerged)
        if ahead and (branch == "any" or branch == "lead" and leads
                      or own and self.branch_only):
            targets[f"refs/heads/{self.branch}"] = self.tracking_ref
        if not targets:
            return Pushed(waiting=local != main, leads=leads, main=main)
        # the push option tells the remote's post-receive hook that we announce this push
        # (at once, over the connection we hold): it stays quiet. A remote that takes no
        # push options (a hosting service, or receive.advertisePushOptions off) is pushed
        # to without it; its hook, if any, announces too.
        with_option = self.push_options and options
        # this clone's ref there is no commit (a peer's push: its names are listed): git
        # moves a ref from a non-commit only when forced; only this clone writes it, so it
        # is put right - as long as it is still that object
        junk = refs.get(mine)
        lease = [f"--force-with-lease={self.clones_ref + self.me}:{junk[0]}"] if (
            junk and junk[1] != "commit" and self.clones_ref + self.me in targets) else []
        res = self.repo.run("push", "--porcelain", *lease,
                            *(["--push-option", PUSH_OPTION] if with_option else []),
                            "--end-of-options", self.name,
                            *(f"{local}:{ref}" for ref in targets),
                            check=False, timeout=NETWORK_TIMEOUT)
        out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
        if with_option and "does not support push options" in err:
            self.push_options = False
            return self.push(branch)
        if with_option and res.returncode == -signal.SIGPIPE:
            # git sends the push options even when it sends no ref to update (each one
            # is up to date, or refused by git itself as not a fast-forward: the remote
            # moved since this clone looked), and receive-pack, having nothing to do,
            # hangs up before reading them: git push dies of SIGPIPE saying nothing (or
            # not: a matter of scheduling). Asked again without them, it says which
            return self.push(branch, options=False)
        done, lost = set(), set()
        for line in out.splitlines():
            flag, _, rest = line.partition("\t")
            ref = rest.partition("\t")[0].rpartition(":")[2]
            if ref not in targets:
                continue
            if flag in (" ", "*", "+", "="):
                done.add(ref)
            elif flag == "!" and any(why in rest for why in LOST):
                lost.add(ref)
        mine_line = next((line for line in out.splitlines()
                          if self.clones_ref + self.me in line), "")
        if "remote rejected" in mine_line and any(why in mine_line for why in REFUSED_BY_HOOK):
            # a server (or hosting service) that takes branches only: clones take turns
            # on the branch itself, as plain git users do
            log.warning("'%s' refuses refs/autosync/*; pushing '%s' alone from now on",
                        self.name, self.branch)
            self.branch_only = True
            return self.push(branch)
        if not done and not lost:
            raise classify("push to", self.name, err + out, res.returncode)
        if done:
            # the local copies of the refs pushed, moved only forward: from where they
            # were before the push. Another pusher (a `sync` beside the daemon) that pushed
            # a newer commit meanwhile moved them on already; they stay there (the next
            # fetch puts every copy where the remote has it). git push itself moves the
            # remote-tracking copy of B without looking: its reflog says from where, and
            # a newer commit it overwrote is put back.
            updates = []
            for ref in sorted(done):
                copy, old = targets[ref], tips.get(targets[ref])
                last = self.repo.last_ref_update(copy)
                if last is None or last[1] != local:
                    updates.append(f"update {copy} {local}" + (f" {old}" if old else ""))
                elif last[0] not in (local, old) and last[0].strip("0") and \
                        self.repo.is_ancestor(local, last[0]):
                    updates.append(f"update {copy} {last[0]} {local}")
            if updates and not self.repo.ok("update-ref", "--stdin",
                                            input="".join(u + "\n" for u in updates)) \
                    and len(updates) > 1:
                for update in updates:  # (one moved on: the others each on their own)
                    self.repo.ok("update-ref", "--stdin", input=update + "\n")
            pushlog.record(self.repo, local)  # status: the last push, whoever made it
        if self.clones_ref + self.me in lost:
            if "failed to update ref" in mine_line:
                # only this clone writes it, so no race: the name is taken on the server
                # (a ref below it, say): take turns on the branch itself from now on
                log.warning("'%s' cannot update %s; pushing '%s' alone from now on",
                            self.name, self.clones_ref + self.me, self.branch)
                self.branch_only = True
                if not done:
                    return self.push(branch)
            elif not done:
                raise Rejected()
            # B went through in this push: that is its outcome, to announce (the push
            # again would find nothing left to do, and a lost race nothing to say; this
            # clone's ref stays where it is found until the push of its next save)
            lost.discard(self.clones_ref + self.me)
            del targets[self.clones_ref + self.me]
        failed = set(targets) - done - lost
        if failed:  # e.g. B protected on the server: a human must look
            raise classify("push to", self.name, err + out, res.returncode)
        branch = f"refs/heads/{self.branch}"
        # only B moved, to a commit a clone's ref had: announced when that ref was pushed
        known = self.clones_ref + self.me not in done and local in (
            oid for ref, oid in tips.items() if ref != self.tracking_ref)
        return Pushed(local if done else None, branch in done, branch in lost, known=known,
                      waiting=branch not in targets and local != main, leads=leads, main=main)

    def folder(self, tips: Collection[str], mine: bool) -> str | None:
        """The clone to fold tips (commits none of which holds another): the first of
        candidates(). Every clone that fetched the same refs names the same one, whatever
        each knows of B: it folds and moves B there (`leads`), the others fast-forward to
        that - a fold is computed once, not by every clone, and no clone builds on a fold
        of its own - or fold themselves when it takes too long (daemon.patient: the next
        candidate after LEAD_MAX, the one after it after twice that, and so on; a clone
        with no commit among them after them all)."""
        names = self.candidates(tips, mine)
        return names[0] if names else None

    def candidates(self, tips: Collection[str], mine: bool,
                   known: dict[str, str] | None = None) -> list[str]:
        """The clones whose refs are at one of tips (this one too when mine: one is its
        own work), by name. No say have: a tip no clone's ref is at (B pushed by plain
        git), a commit integrate refused, and a clone passed over (one that did not fold
        in time: autosync.pull false, away, or squatting a first name). known: self.tips(),
        when the caller has it."""
        refs = self.tips() if known is None else known
        names = {ref[len(self.copies_ref):] for ref, oid in refs.items()
                 if oid in tips and ref.startswith(self.copies_ref) and oid not in self.left_out}
        names -= self.passed()
        # HEAD among the tips gives a say only as this clone's own work: fast-forwarded to
        # another clone's commit, this clone has none (else every clone that took one of
        # two concurrent saves, and sorts first, folded them)
        head = self.repo.head()
        at_head = {ref for ref, oid in refs.items() if oid == head}
        if mine and (not at_head or self.copies_ref + self.me in at_head):
            names.add(self.me)
        return sorted(names)

    def rank(self, tips: Collection[str], mine: bool) -> int:
        """This clone's turn to fold tips: its place among candidates() (0: it folds),
        where the names at one commit have one turn between them (a clone's ref is at its
        own work: many names at one tip are one pusher's, 300 of them were 10 minutes'
        wait); the clones with no say come after them all, by name too (each its own
        turn: a tip of one clone alone left every other clone with the same turn). At
        most MAX_TURNS: names are anyone's to push, and turns must not be a wait without
        end."""
        known = self.tips()
        names = self.candidates(tips, mine, known)
        at = {ref[len(self.copies_ref):]: oid for ref, oid in known.items()
              if ref.startswith(self.copies_ref)}
        if self.me in names:
            before = names[:names.index(self.me)]
            return min(MAX_TURNS, len({at.get(n, n) for n in before}))
        others = set(at) - set(names) - self.passed()
        return min(MAX_TURNS, len({at.get(n, n) for n in names})
                   + sorted(others | {self.me}).index(self.me))

    def passed(self) -> set[str]:
        """The clones passed over now (those whose PASSED_OVER seconds are up are not)."""
        now = time.monotonic()
        self.passed_over = {n: t for n, t in self.passed_over.items() if t > now}
        return set(self.passed_over)

    def folds(self, tips: Collection[str], mine: bool) -> bool:
        """Whether this clone is the one to fold tips (see folder)."""
        return self.folder(tips, mine) in (None, self.me)

    def pass_over(self, tips: Collection[str], mine: bool) -> bool:
        """This clone folds tips in the stead of the clones before it that should have
        (all of them: their turns are over, see folder): they have no say for PASSED_OVER
        seconds. Returns True (the fold goes ahead)."""
        names = self.candidates(tips, mine)
        late = names[:names.index(self.me)] if self.me in names else names[:1]
        if late:
            log.info("folding in the stead of %s, which did not fold in time",
                     ", ".join(late))
        for name in late:
            self.passed_over[name] = time.monotonic() + PASSED_OVER
        return True

    def unmerged(self, local: str) -> dict[str, str]:
        """{local ref: commit} of B and the clones' refs that local does not hold, as of
        the last fetch (one git process; B is absent when local is ahead of it)."""
        out = self.repo.out("for-each-ref", "--format=%(objecttype) %(objectname) %(refname)",
                            f"--no-merged={local}", self.tracking_ref, self.copies_ref)
        return {ref: oid for kind, oid, ref in (line.split(" ", 2) for line in out.splitlines()
                                                if line.count(" ") >= 2) if kind == "commit"}

    def leads(self, unmerged: dict[str, str]) -> bool:
        """Whether this clone moves B to local, which it made (a commit of its own, or its
        fold), given the refs local does not hold (unmerged(local)): when local holds every
        clone's commits it knows of (but those of a clone passed over). One clone is such
        at a time (the last to save, or the one that folded), whatever each knows of B,
        which moves without announcement."""
        skip = {self.copies_ref + n for n in self.passed()}
        return not any(oid not in self.left_out and ref not in skip
                       for ref, oid in unmerged.items() if ref.startswith(self.copies_ref))


def check_branch(repo: Repo, config: Config) -> None:
    """Only the configured branch is synced; a user who switched away is left alone."""
    current = repo.current_branch()
    if current != config.branch:
        raise Error(f"'{repo.cwd}' has '{current or 'a detached HEAD'}' checked out, "
                    f"autosync syncs '{config.branch}'; leaving it alone",
                    f"git -C '{repo.cwd}' switch {config.branch}")


class Engine:
    """The steps of a sync, for one repository. commit and integrate change the work
    tree (under the repository lock); fetch, push and announce talk to the network."""

    def __init__(self, repo: Repo, config: Config | None = None) -> None:
        self.repo = repo
        self.config = config or Config(repo)
        self.remote = (Remote(repo, self.config.remote, self.config.branch,
                              clone_name(repo, self.config))
                       if self.config.has_remote else None)
        self.sender = sender_id(repo, self.config)
        # publish(notification), set by whoever holds a transport
        self.publish: Callable[[Notification], object] | None = None
        self.refused: dict[str, Refused] = {}  # a tip integrate left out, while it is a tip
        self.fetch_refused: list[Refused] = []  # what the last fetch left out

    @classmethod
    def one_shot(cls, repo: Repo) -> "Engine":
        """The engine of a command that runs once (sync, the push helper): it announces
        a push over a connection of its own, made for that."""
        engine = cls(repo)
        if kind(engine.config) is not None:
            engine.publish = lambda note: publish_once(engine.config, [note])
        return engine

    @property
    def pulls(self) -> bool:
        return self.remote is not None and self.config["pull"]

    @property
    def pushes(self) -> bool:
        return self.remote is not None and self.config["push"]

    def commit(self, paths: Collection[str] | None = None) -> Result:
        """Commit paths (None: every change); the engine pushes it, not the hook."""
        with self.repo.lock():
            check_committable(self.repo)  # a rebase by hand (HEAD detached) says so
            check_branch(self.repo, self.config)  # hands off another branch
            return commit_changes(self.repo, self.config, paths)

    def note_refused(self, refused: list[Refused]) -> None:
        """What the last fetch refused (fsck): logged when new, shown until it moves."""
        known = {e.commit for e in self.fetch_refused}
        for e in refused:
            if e.commit not in known:
                log.warning("%s", e.message)
        self.fetch_refused = list(refused)

    def refused_now(self) -> Refused | None:
        """A Refused naming a commit this clone is leaving out now, or None."""
        return next(iter(self.fetch_refused + list(self.refused.values())), None)

    def acceptable(self, tips: list[str]) -> list[str]:
        """tips but those integrate refused (a refusal is forgotten once its commit is no
        tip any more). Nothing to bring in when they are all HEAD."""
        self.refused = {c: e for c, e in self.refused.items() if c in tips}
        return [t for t in tips if t not in self.refused]

    def integrate(self, tips: list[str] | None = None,
                  patient: bool = False) -> Integrated | None:
        """Bring in the fetched tips (default: as of the last fetch), leaving out refused
        ones. None when there is nothing to bring in; .deferred: call again for the rest.
        patient: a fold is left to the clone that leads (.waiting), unless it is this one."""
        if tips is None:
            assert self.remote is not None, "integrate() without tips needs a remote"
            tips = list(self.remote.tips().values())
        tips = self.acceptable(tips)
        head = self.repo.head()
        if set(tips) <= {head}:
            return None
        with self.repo.lock():
            check_committable(self.repo)
            check_branch(self.repo, self.config)
            result = integrate(self.repo, tips, self.config, None if self.remote is None
                               else self.remote.folds if patient else self.remote.pass_over)
        for e in result.refused:
            log.warning("%s", e.message)
            self.refused[e.commit] = e
        if self.remote is not None:
            self.remote.left_out = frozenset(self.refused)
        return result if result.head != head or result.deferred or result.waiting else None

    def announce(self, pushed: Pushed) -> None:
        """Tell the other clones of a push (the remote's hook leaves it to us, PUSH_OPTION),
        unless it only moved B to a commit announced before."""
        if pushed.commit and not pushed.known and self.publish is not None:
            self.publish(Notification.now(self.config.channel, self.config.branch,
                                          pushed.commit, self.sender))


@dataclass
class Outcome:
    pushed: str | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def sync_once(engine: Engine, commit: bool = True, attempts: int = 5,
              sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Commit (optionally), fetch, integrate, push, announce; the engine's retry policy
    between attempts. Returns an Outcome; raises Retry when the remote stayed away."""
    repo, remote = engine.repo, engine.remote
    check_branch(repo, engine.config)
    outcome = Outcome()
    if commit:
        engine.commit()
    if remote is None:
        log.info("no remote '%s' configured; committed locally only", engine.config.remote)
        return outcome
    backoff = Backoff()
    for attempt in range(1, attempts + 1):
        try:
            if engine.pulls:
                engine.note_refused(remote.fetch().refused)
                if commit:
                    engine.commit()
                for _ in range(64):  # a flood of tips comes in MAX_FOLD at a time
                    result = engine.integrate() or Integrated(None)
                    outcome.conflicts += result.conflicts
                    if not result.deferred:
                        break
            if not engine.pushes:
                break
            pushed = remote.push(branch="any")
            engine.announce(pushed)
            outcome.pushed = pushed.commit or outcome.pushed
            if not pushed.lost_race:
                break
            if not engine.pulls:
                if pushed.commit:  # on the remote, in this clone's ref: others bring it in
                    log.info("'%s' moved on meanwhile and autosync.pull is false: the "
                             "commits are in this clone's ref there; '%s' is left as it is",
                             remote.name, engine.config.branch)
                    break
                raise Error(f"cannot push to '{remote.name}': it has commits this clone does "
                            "not have, and autosync.pull is false",
                            "git config autosync.pull true")
            log.info("'%s' moved on meanwhile; bringing it in first", remote.name)
        except Rejected:
            if not engine.pulls:
                raise Error(f"cannot push to '{remote.name}': this clone's ref there has "
                            "commits it does not have, and autosync.pull is false",
                            "git config autosync.pull true") from None
            log.info("'%s' has commits of this clone's that it does not have; bringing them in",
                     remote.name)
        except Retry as e:
            if attempt == attempts:
                raise
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.0fs", e.message, delay)
            sleep(delay)
    outcome.refused = list(engine.refused.values())
    return outcome


# -- git autosync sync ------------------------------------------------------------------
def cmd_sync(repo: Repo, args: argparse.Namespace) -> int:
    if repo.bare:
        raise Error(f"'{repo.cwd}' is a bare repository; nothing to sync")
    setup_logging()
    engine = Engine.one_shot(repo)
    outcome = sync_once(engine)
    for c in outcome.conflicts:
        print(f"conflict: {shown(c.path)}" + (f": other version kept as {shown(c.copy)}"
                                              if c.copy else ": modified version kept"))
    for e in outcome.refused:
        print(f"warning: {printable(e.message)}")
    print(f"pushed {outcome.pushed[:10]} to {engine.config.remote}" if outcome.pushed
          else "up to date")
    return OK
