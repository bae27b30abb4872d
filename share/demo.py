"""`make demo`: git-autosync working on its own in a throwaway sandbox.

Builds, under a new temporary directory: the toolkit (make install PREFIX=sandbox/prefix),
a bare "server" repository with its post-receive hook, two clones "laptop" and "desktop"
with their daemons, and a mosquitto broker on a free loopback port when mosquitto is
installed (otherwise the clones poll the server). Then it edits files in one clone, shows
them arriving in the other with the measured latency, makes a conflicting edit on both, and
prints how to play with the sandbox and how to stop it. Standard library only.
"""

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def say(text=""):
    print(text, flush=True)


def run(*args, cwd=None, env=None, quiet=False):
    res = subprocess.run(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        sys.exit(f"demo: '{' '.join(args)}' failed:\n{res.stdout}")
    return res.stdout


def show(repo, spec):
    res = subprocess.run(["git", "-C", repo, "show", spec], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return res.stdout if res.returncode == 0 else None


def wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def save(path, text):
    """Save the way editors do: write a temporary file, then rename it over the old one."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(sandbox):
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if not binary:
        return None, None
    port = free_port()
    conf = os.path.join(sandbox, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                f"log_dest file {sandbox}/mosquitto.log\n")
    proc = subprocess.Popen([binary, "-c", conf], start_new_session=True, **QUIET)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return proc.poll() is not None
    wait_until(listening, 10)
    if proc.poll() is not None:
        return None, None
    return proc.pid, f"mqtt://127.0.0.1:{port}"


def main():
    sandbox = tempfile.mkdtemp(prefix="git-autosync-demo.")
    prefix = os.path.join(sandbox, "prefix")
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1")
    say(f"git-autosync demo in {sandbox}")
    say("1. installing the toolkit into the sandbox (private python environment) ...")
    run("make", "-s", "-C", ROOT, "install", f"PREFIX={prefix}", env=env)

    server = os.path.join(sandbox, "server", "notes.git")
    run("git", "init", "-q", "--bare", "-b", "main", server, env=env)
    seed = os.path.join(sandbox, "seed")
    run("git", "init", "-q", "-b", "main", seed, env=env)
    for key, value in (("user.name", "Demo"), ("user.email", "demo@example.invalid")):
        run("git", "-C", seed, "config", key, value)
    save(os.path.join(seed, "README.md"), "# notes\n")
    run("git", "-C", seed, "add", "README.md")
    run("git", "-C", seed, "commit", "-q", "-m", "start", env=env)
    run("git", "-C", seed, "push", "-q", server, "main", env=env)
    shutil.rmtree(seed)

    pid, url = start_mosquitto(sandbox)
    if url:
        say(f"2. mosquitto listening on {url} (pid {pid}): clones are told at once")
    else:
        say("2. mosquitto is not installed: the clones fall back to polling the server "
            "every 2 s (install mosquitto to see sub-second sync)")
    run(os.path.join(prefix, "libexec", "git-autosync", "autosync-install"), "install",
        server, env=env)
    clones = {}
    for name in ("laptop", "desktop"):
        path = os.path.join(sandbox, name)
        run("git", "clone", "-q", server, path, env=env)
        settings = {"user.name": f"Demo on {name}", "user.email": "demo@example.invalid",
                    "autosync.host": name, "autosync.debounce": "100",
                    "autosync.notify": "false", "autosync.pollInterval": "2"}
        for key, value in settings.items():
            run("git", "-C", path, "config", key, value)
        run(os.path.join(prefix, "libexec", "git-autosync", "autosync-install"), "install",
            path, env=env)
        if url:
            run("git", "-C", path, "config", "autosync.mqtt.url", url)
        clones[name] = path
    if url:
        run("git", "-C", server, "config", "autosync.mqtt.url", url)

    say("3. starting the daemons: git autosync start (in each clone)")
    for path in clones.values():
        run("git", "-C", path, "autosync", "start", env=env)
    laptop, desktop = clones["laptop"], clones["desktop"]

    say("4. editing in laptop, watching desktop:")
    edits = [("todo.md", "- buy milk\n"), ("todo.md", "- buy milk\n- call Ann\n"),
             ("ideas/sync.md", "files that sync themselves\n")]
    for name, text in edits:
        os.makedirs(os.path.dirname(os.path.join(laptop, name)), exist_ok=True)
        start = time.monotonic()
        save(os.path.join(laptop, name), text)
        arrived = wait_until(lambda: read(os.path.join(desktop, name)) == text, 30)
        took = (time.monotonic() - start) * 1000
        say(f"   saved {name:<14} -> in desktop after {took:5.0f} ms" if arrived
            else f"   saved {name:<14} -> NOT in desktop after 30 s (see git autosync log)")

    say("5. a conflict: desktop is stopped, both edit todo.md, desktop starts again")
    run("git", "-C", desktop, "autosync", "stop", env=env)
    save(os.path.join(laptop, "todo.md"), "- buy oat milk\n- call Ann\n")
    wait_until(lambda: show(server, "main:todo.md") == "- buy oat milk\n- call Ann\n", 10)
    save(os.path.join(desktop, "todo.md"), "- buy milk\n- call Ann and Bob\n")
    run("git", "-C", desktop, "autosync", "start", env=env)

    def converged():
        heads = {show(p, "HEAD^{commit}") for p in clones.values()}
        copies = [f for f in os.listdir(laptop) if ".conflict-" in f]
        return len(heads) == 1 and copies
    if wait_until(converged, 30):
        copy = [f for f in os.listdir(laptop) if ".conflict-" in f][0]
        say(f"   both versions kept, on both clones: todo.md and {copy}")
        say(f"   todo.md: {read(os.path.join(laptop, 'todo.md'))!r}")
        say(f"   {copy}: {read(os.path.join(laptop, copy))!r}")
    else:
        say("   the clones did not converge within 30 s (see git autosync log)")

    stop = os.path.join(sandbox, "stop")
    with open(stop, "w") as f:
        f.write("#!/bin/sh\n# stop the demo's daemons and broker, then remove the sandbox\n")
        for path in clones.values():
            f.write(f"git -C {shlex.quote(path)} autosync stop\n")
        if pid:
            f.write(f"kill {pid} 2>/dev/null\n")
        f.write(f"rm -rf {shlex.quote(sandbox)}\n")
    os.chmod(stop, 0o755)
    q = shlex.quote
    say(f"""
The sandbox keeps running. Play with it:
  cd {q(laptop)} && echo hello > hello.txt     # appears in {q(desktop)}
  git -C {q(desktop)} autosync status
  git -C {q(desktop)} autosync log
  git -C {q(laptop)} log --stat -3
Stop it and remove the sandbox:
  {q(stop)}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
