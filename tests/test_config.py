"""The config table: one place in code (config.KEYS), one table in the README, in agreement."""

import re

import pytest

from conftest import ROOT, git
from autosync.config import KEYS, Config, default_channel
from autosync.git import Repo
from autosync.util import Error


def readme_keys():
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `(autosync\.[A-Za-z.]+)` \|", text, re.M))


def test_every_key_is_documented_and_every_documented_key_exists():
    assert readme_keys() == set(KEYS)


def test_every_key_used_in_the_code_is_in_the_table():
    used = set()
    for path in (ROOT / "libexec").rglob("*.py"):
        used |= set(re.findall(r"[\"'](autosync\.[a-zA-Z][a-zA-Z0-9.]*[a-zA-Z0-9])[\"']",
                               path.read_text()))
    short = set()
    for path in (ROOT / "libexec").rglob("*.py"):
        short |= {"autosync." + k for k in re.findall(r"config\[\"([a-zA-Z.]+)\"\]",
                                                       path.read_text())}
    assert (used | short) <= set(KEYS) | {"autosync.py"}


def test_defaults_and_parsing(make_repo):
    r = make_repo()
    c = Config(Repo(r))
    assert c["debounce"] == 1000 and c["maxDelay"] == 10000 and c["push"] is True
    git(r, "config", "autosync.debounce", "2s")
    git(r, "config", "autosync.maxFileSize", "5m")
    git(r, "config", "autosync.push", "off")
    git(r, "config", "autosync.pollInterval", "2m")
    c = Config(Repo(r))
    assert (c["debounce"], c["maxFileSize"], c["push"], c["pollInterval"]) == \
        (2000, 5 * 1024 * 1024, False, 120)


@pytest.mark.parametrize("key,value", [("autosync.debounce", "soon"), ("autosync.push", "maybe"),
                                       ("autosync.maxFileSize", "-1")])
def test_bad_values_give_one_clear_line(make_repo, key, value):
    r = make_repo()
    git(r, "config", key, value)
    with pytest.raises(Error) as e:
        Config(Repo(r))
    assert e.value.message == f"bad {'boolean' if 'push' in key else 'numeric'} config value " \
                              f"'{value}' for '{key}'"
    assert e.value.hints and e.value.hints[0].startswith(f"git config {key} ")


def test_channel_is_the_repository_name_on_server_and_clones(make_repo, tmp_path):
    seed = make_repo("seed")
    server = tmp_path / "notes.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(server))
    clone = tmp_path / "my laptop copy"
    git(tmp_path, "clone", "-q", str(server), str(clone))
    assert default_channel(Repo(server)) == "notes"
    assert Config(Repo(clone)).channel == "notes"
    assert Config(Repo(seed)).channel == "seed"  # no remote: the directory's name
