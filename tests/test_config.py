"""The config table: one place in code (config.KEYS), one table in the README, in agreement."""

import logging
import re
import stat
import subprocess

import pytest

from conftest import ROOT, git
from autosync import config
from autosync.config import KEYS, Config, default_channel, read_secret
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


# -- password files ----------------------------------------------------------------------------
@pytest.fixture
def fresh_warnings(monkeypatch):
    """read_secret warns once per process per file: each test starts with none given."""
    monkeypatch.setattr(config, "_warned_secrets", set())


def secret_file(tmp_path, mode, name="broker-password"):
    path = tmp_path / name
    path.write_bytes(b"s3cret\n")
    path.chmod(mode)
    return path


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700], ids=oct)
def test_a_private_password_file_is_read_silently(tmp_path, caplog, fresh_warnings, mode):
    path = secret_file(tmp_path, mode)
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        assert read_secret(str(path), "autosync.mqtt.passwordFile", "broker") == b"s3cret"
    assert warnings_in(caplog) == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666, 0o440], ids=oct)
def test_a_password_file_others_can_read_is_used_with_one_warning(tmp_path, caplog,
                                                                  fresh_warnings, mode):
    path = secret_file(tmp_path, mode)
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        for _ in range(3):  # a daemon reads it at every reconnect: one warning in all
            assert read_secret(str(path), "autosync.mqtt.passwordFile", "broker") == b"s3cret"
    assert warnings_in(caplog) == \
        [f"warning: '{path}' is readable by others; hint: chmod 600 '{path}'"]


def test_the_warning_is_per_file_and_follows_symlinks(tmp_path, caplog, fresh_warnings):
    private = secret_file(tmp_path, 0o600, "private")
    public = secret_file(tmp_path, 0o644, "public")
    link = tmp_path / "link-to-public"
    link.symlink_to(public)
    private_link = tmp_path / "link-to-private"  # a symlink's own mode (0777) is not asked
    private_link.symlink_to(private)
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        for path in (private, private_link, public, link, public, link):
            read_secret(str(path), "autosync.mqtt.passwordFile", "broker")
    assert warnings_in(caplog) == [
        f"warning: '{public}' is readable by others; hint: chmod 600 '{public}'",
        f"warning: '{link}' is readable by others; hint: chmod 600 '{link}'"]


def test_the_hint_is_a_command_that_works_for_any_name(tmp_path, caplog, fresh_warnings):
    path = secret_file(tmp_path, 0o644, "it's my $password")
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        read_secret(str(path), "autosync.mqtt.passwordFile", "broker")
    (message,) = warnings_in(caplog)
    hint = message.split("; hint: ", 1)[1]
    subprocess.run(["sh", "-c", hint], check=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    caplog.clear()
    config._warned_secrets.clear()
    read_secret(str(path), "autosync.mqtt.passwordFile", "broker")
    assert warnings_in(caplog) == []


def test_the_xmpp_password_file_warns_too(tmp_path, caplog, fresh_warnings):
    from autosync.xmpp import read_password
    path = secret_file(tmp_path, 0o644, "xmpp-password")
    with caplog.at_level(logging.DEBUG, logger="autosync"):
        assert read_password(str(path)) == "s3cret"
        assert read_password(str(path)) == "s3cret"
    assert warnings_in(caplog) == \
        [f"warning: '{path}' is readable by others; hint: chmod 600 '{path}'"]


def test_an_unreadable_password_file_is_still_a_clear_error(tmp_path, fresh_warnings):
    with pytest.raises(Error, match="cannot read the xmpp password file .*: no such file"):
        read_secret(str(tmp_path / "missing"), "autosync.xmpp.passwordFile", "xmpp")
