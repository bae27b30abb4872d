"""A bare server and clones with the installed toolkit and real daemons, for end-to-end tests,
the soak suite, the benchmarks and the demo.

Daemons are started with `git autosync start` and stopped with `git autosync stop` (or
killed), exactly as a user would; nothing here sleeps a fixed time.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import git, wait_for


def install(toolkit, path, env):
    res = subprocess.run([toolkit.tool("autosync-install"), "install", str(path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert res.returncode == 0, res.stdout


class Clone:
    def __init__(self, path, env, toolkit):
        self.path = Path(path)
        self.env = env
        self.toolkit = toolkit
        self.name = self.path.name

    def autosync(self, *args, check=True, timeout=60):
        res = subprocess.run(["git", "autosync", *args], cwd=self.path, env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"git autosync {args} in {self.name} exited "
                                 f"{res.returncode}: {res.stderr}\n{self.log()}")
        return res

    def config(self, **values):
        for key, value in values.items():
            git(self.path, "config", "autosync." + key.replace("_", "."), str(value),
                env=self.env)

    def start(self):
        return self.autosync("start")

    def stop(self):
        return self.autosync("stop", check=False)

    @property
    def pid(self):
        try:
            return int((self.path / ".git" / "autosync" / "daemon.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self):
        return self.autosync("status", check=False).returncode == 0

    def kill(self):
        """SIGKILL the daemon, as a crash or an OOM kill would."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.running(), what=f"{self.name} daemon to die")

    def log(self):
        p = self.path / ".git" / "autosync" / "log"
        return p.read_text(errors="replace") if p.exists() else "(no log)"

    def write(self, name, text):
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp.{os.getpid()}")
        tmp.write_text(text)  # atomic save, as editors do
        os.replace(tmp, p)

    def read(self, name):
        try:
            return (self.path / name).read_text()
        except FileNotFoundError:
            return None

    def head(self):
        return git(self.path, "rev-parse", "HEAD", env=self.env)

    def clean(self):
        return git(self.path, "status", "--porcelain", env=self.env) == ""

    def files(self):
        """{path: content} of the committed tree at HEAD (one commit: a daemon committing
        meanwhile must not make a path listed from one HEAD be read from the next)."""
        head = self.head()
        names = git(self.path, "ls-tree", "-r", "-z", "--name-only", head,
                    env=self.env).split("\0")
        return {n: git(self.path, "cat-file", "blob", f"{head}:{n}", env=self.env)
                for n in names if n}


def converged(clones, server=None):
    """All clones on one commit (the server's too, when given) with clean work trees.

    The heads are read before and after the work trees: a daemon committing in between
    (clean tree, new HEAD) must not pass for a clean tree at the old HEAD."""
    def heads():
        found = [c.head() for c in clones]
        if server is not None:
            found.append(git(server, "rev-parse", "refs/heads/main"))
        return found
    before = heads()
    return (len(set(before)) == 1 and all(c.clean() for c in clones)
            and heads() == before)


def wait_converged(clones, server=None, timeout=60):
    try:
        wait_for(lambda: converged(clones, server), timeout=timeout, what="convergence")
    except AssertionError:
        for c in clones:
            print(f"==== {c.name} head {c.head()} status "
                  f"{git(c.path, 'status', '--porcelain', env=c.env)!r}\n{c.log()[-3000:]}")
        raise


class Cluster:
    """notes.git (bare, with its post-receive hook) plus clones, all with autosync installed."""

    def __init__(self, tmp_path, env, toolkit, broker_url=None, **config):
        self.tmp = Path(tmp_path)
        self.env = env
        self.toolkit = toolkit
        self.server = self.tmp / "notes.git"
        seed = self.tmp / "seed"
        git(self.tmp, "init", "-q", "-b", "main", str(seed), env=env)
        (seed / "README").write_text("shared notes\n")
        git(seed, "add", "README", env=env)
        git(seed, "commit", "-q", "-m", "init", env=env)
        git(self.tmp, "clone", "-q", "--bare", str(seed), str(self.server), env=env)
        self.broker_url = broker_url
        self.config = {"debounce": 100, "maxDelay": 1000, "pollInterval": 60, **config}
        if broker_url:
            git(self.server, "config", "autosync.mqtt.url", broker_url, env=env)
            for key, value in self.server_config().items():
                git(self.server, "config", key, value, env=env)
        install(toolkit, self.server, env)
        self.clones = []

    def server_config(self):
        return {f"autosync.{k.replace('_', '.')}": str(v) for k, v in self.config.items()
                if k.startswith("mqtt_")}

    def clone(self, name, start=True):
        path = self.tmp / name
        git(self.tmp, "clone", "-q", str(self.server), str(path), env=self.env)
        c = Clone(path, self.env, self.toolkit)
        c.config(host=name, **self.config)
        if self.broker_url:
            c.config(mqtt_url=self.broker_url)
        install(self.toolkit, path, self.env)
        self.clones.append(c)
        if start:
            c.start()
        return c

    def stop(self):
        for c in self.clones:
            if c.running():
                c.stop()

    def server_head(self):
        return git(self.server, "rev-parse", "refs/heads/main", env=self.env)


def deadline_loop(seconds):
    """Iterate until `seconds` passed (for load generators); yields the elapsed time."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        yield elapsed


def git_processes(trace):
    """{command: count} of the git processes a GIT_TRACE2 file has recorded so far."""
    counts = {}
    try:
        with open(trace, errors="replace") as f:
            for line in f:
                if " cmd_name " in line:
                    name = line.split(" cmd_name ", 1)[1].split()[0]
                    counts[name] = counts.get(name, 0) + 1
    except FileNotFoundError:
        pass
    return counts


def publish_flood(port, count, channel="notes", branch="main", commit=None):
    """`count` valid notifications for made-up commit ids (or for commit), QoS 1, to the
    broker on 127.0.0.1:port; returns once the last is acknowledged."""
    import paho.mqtt.client as paho
    from autosync.message import Notification, encode
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for _ in range(count):
            note = Notification(channel, branch, commit or os.urandom(20).hex(),
                                "flood:00000000", time.time())
            info = client.publish(f"autosync/{channel}/{branch}", encode(note), qos=1)
        info.wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()


class Pipeline:
    """`autosync-watch -z | autosync-commit --stdin -z` in a clone, as a user runs it.
    close() ends the watcher and returns the committer's (exit status, stdout, stderr)."""

    def __init__(self, clone):
        tool = clone.toolkit.tool
        self.watch = subprocess.Popen([tool("autosync-watch"), "-C", str(clone.path), "-z"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=clone.env)
        self.commit = subprocess.Popen(
            [tool("autosync-commit"), "-C", str(clone.path), "--stdin", "-z"],
            stdin=self.watch.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=clone.env)
        self.watch.stdout.close()
        if not self.watch.stderr.readline().startswith(b"watching "):
            self.close()
            raise AssertionError("autosync-watch did not start")

    def close(self):
        self.watch.terminate()
        self.watch.wait(timeout=20)
        self.watch.stderr.close()
        out, err = self.commit.communicate(timeout=60)
        return self.commit.returncode, out, err
