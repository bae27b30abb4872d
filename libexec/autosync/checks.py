"""Set-ups that do not stop autosync but make it do less than its user expects.

A repository without the remote autosync.remote names commits locally and never syncs; a
broker URL that cannot be parsed leaves the clones polling. Neither is an error (a
local-only folder is a fine use, and polling still syncs), but both are easy to miss:
`git autosync start` prints them (`warning: ...`, `hint: ...`), `git autosync run` writes
them to the daemon's log, and `git autosync status` shows them, each with the command
that fixes it.
"""

import shlex
from dataclasses import dataclass

from .config import Config, no_password
from .transport import module
from .util import Error


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str

    def line(self) -> str:
        """One line for a log: the warning and its fix together."""
        return f"{self.message}; hint: {self.hint}"


def remotes(config: Config) -> list[str]:
    """The names of the remotes that have a URL, in the order git lists them."""
    found = []
    for key, values in config.raw.items():
        if key.startswith("remote.") and key.endswith(".url") and values and values[-1]:
            name = key[len("remote."):-len(".url")]
            if name and name not in found:
                found.append(name)
    return found


def problems(config: Config) -> list[Problem]:
    """What is set up wrong here, in the order to fix it."""
    found = []
    if not config.repo.bare and not config.has_remote:
        others = remotes(config)
        if config.remote_url() is not None:  # `git remote add origin "$URL"`, URL unset
            found.append(Problem(
                f"remote '{config.remote}' has no URL: nothing is pushed or fetched, commits "
                "stay in this repository",
                f"git remote set-url {shlex.quote(config.remote)} URL   "
                "(the shared bare repository)"))
        elif others:
            found.append(Problem(
                f"autosync.remote is '{config.remote}', but there is no remote of that name "
                f"(there is {', '.join(repr(r) for r in others)}): nothing is pushed or "
                "fetched, commits stay in this repository",
                f"git config autosync.remote {others[0]}"))
        else:
            found.append(Problem(
                f"no remote '{config.remote}': nothing is pushed or fetched, commits stay "
                "in this repository",
                f"git remote add {config.remote} URL   (the shared bare repository)"))
    url = config["mqtt.url"]
    if url:
        try:
            module("mqtt").parse_url(url)
        except Error as e:
            found.append(Problem(
                f"{e.message}; no notifications: "
                + (f"the remote is polled every {config['pollInterval']}s instead"
                   if config.has_remote else "nothing to poll either"),
                e.hints[0] if e.hints else "git config autosync.mqtt.url mqtt://HOST:1883"))
    elif config["xmpp.jid"] and not config["xmpp.passwordFile"]:
        unset = no_password("autosync.xmpp.passwordFile", "xmpp")
        found.append(Problem(f"{unset.message}; no notifications: " + (
            f"the remote is polled every {config['pollInterval']}s instead"
            if config.has_remote else "nothing to poll either"), unset.hints[0]))
    return found
