"""`make demo`: git-autosync working on its own in a throwaway sandbox.

Builds, under a new temporary directory: the toolkit (make install PREFIX=sandbox/prefix),
a bare "server" repository with its post-receive hook, two clones "laptop" and "desktop"
with their daemons, and a mosquitto broker on a free loopback port when mosquitto is
installed (otherwise the clones poll the server). Then it edits files in one clone, shows
them arriving in the other with the measured latency, makes a conflicting edit on both, and
prints how to play with the sandbox and how to stop it. Standard library only.

The daemons and the broker do not run forever: a detached timer (this file, run with
--expire) stops them after DEMO_MINUTES minutes (default 10; 0: never), unless the user
creates SANDBOX/keep. The sandbox's files stay until its stop script removes them.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
DEFAULT_MINUTES = 10.0


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


def minutes():
    """DEMO_MINUTES from the environment (make demo DEMO_MINUTES=30 sets it too)."""
    text = os.environ.get("DEMO_MINUTES", "")
    try:
        value = float(text) if text else DEFAULT_MINUTES
    except ValueError:
        sys.exit(f"demo: DEMO_MINUTES must be a number of minutes, not {text!r}")
    return max(value, 0.0)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def expire(sandbox, seconds, poll=1.0, demo=None):
    """Run SANDBOX/halt seconds after the demo's own process (pid demo) ended, unless
    SANDBOX/keep appears or the sandbox is removed first (its stop script ran). Returns
    whether it halted the demo."""
    while demo and alive(demo) and os.path.isdir(sandbox):
        time.sleep(poll)  # (the demo's foreground still shows things: its time is not up)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(sandbox, "keep")) or not os.path.isdir(sandbox):
            return False
        time.sleep(min(poll, max(deadline - time.monotonic(), 0)))
    if os.path.exists(os.path.join(sandbox, "keep")) or not os.path.isdir(sandbox):
        return False
    subprocess.run([os.path.join(sandbox, "halt")], stdin=subprocess.DEVNULL, **QUIET)
    return True


def start_timer(sandbox, seconds):
    """The detached timer: its own session, so closing the terminal does not end it. It
    starts with the first daemon, and counts from the end of this process (killed, too)."""
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "--expire", sandbox,
                      str(seconds), str(os.getpid())], stdin=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True, **QUIET)


def main():
    sandbox = tempfile.mkdtemp(prefix="git-autosync-demo.")
    prefix = os.path.join(sandbox, "prefix")
    # the sandbox's repositories are listed in the sandbox, not among the user's own
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1",
               XDG_DATA_HOME=os.path.join(sandbox, "data"))
    limit = minutes()
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
    clones = {name: os.path.join(sandbox, name) for name in ("laptop", "desktop")}
    # what stops the demo exists from the moment something runs: the scripts, the timer,
    # and Ctrl-C (or any failure) halting what was started
    halt, stop = write_scripts(sandbox, clones, pid)
    if limit:
        start_timer(sandbox, limit * 60)
    try:
        return play(sandbox, prefix, env, server, clones, url, pid, limit, stop)
    except BaseException as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: halt all the same
        subprocess.run([halt], stdin=subprocess.DEVNULL, **QUIET)
        time.sleep(1)  # a daemon that was still starting: its pid file is there now
        subprocess.run([halt], stdin=subprocess.DEVNULL, **QUIET)
        say(f"\ndemo {'interrupted' if isinstance(e, KeyboardInterrupt) else 'failed'}: "
            f"its daemons and broker are stopped; remove the sandbox with:\n"
            f"  {shlex.quote(stop)}")
        if isinstance(e, KeyboardInterrupt):
            return 130
        raise


def write_scripts(sandbox, clones, pid):
    """SANDBOX/halt (stop the daemons and the broker) and SANDBOX/stop (halt, then remove
    the sandbox)."""
    q = shlex.quote
    halt = os.path.join(sandbox, "halt")
    with open(halt, "w") as f:
        f.write("#!/bin/sh\n# stop the demo's daemons and broker (the files stay)\n")
        for path in clones.values():
            f.write(f"[ ! -d {q(path)} ] || git -C {q(path)} autosync stop >/dev/null 2>&1\n")
        if pid:
            f.write(f"kill {pid} 2>/dev/null\n")
        f.write("exit 0\n")
    stop = os.path.join(sandbox, "stop")
    with open(stop, "w") as f:
        f.write(f"#!/bin/sh\n# stop the demo's daemons and broker, then remove the sandbox\n"
                f"{q(halt)}\nrm -rf {q(sandbox)}\n")
    for script in (halt, stop):
        os.chmod(script, 0o755)
    return halt, stop


def play(sandbox, prefix, env, server, clones, url, pid, limit, stop):
    if url:
        say(f"2. mosquitto listening on {url} (pid {pid}): clones are told at once")
    else:
        say("2. mosquitto is not installed: the clones fall back to polling the server "
            "every 2 s (install mosquitto to see sub-second sync)")
    run(os.path.join(prefix, "libexec", "git-autosync", "autosync-install"), "install",
        server, env=env)
    for name, path in clones.items():
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

    q = shlex.quote
    if limit:
        until = time.strftime("%H:%M", time.localtime(time.time() + limit * 60))
        lifetime = (f"It stops by itself in {limit:g} minutes (at {until}): the daemons and the "
                    f"broker end,\nthe files stay. To keep it running instead:\n"
                    f"  touch {q(os.path.join(sandbox, 'keep'))}"
                    f"      # or: make demo DEMO_MINUTES=0")
    else:
        lifetime = "It keeps running (DEMO_MINUTES=0) until you stop it."
    say(f"""
The sandbox is running. Play with it:
  cd {q(laptop)} && echo hello > hello.txt     # appears in {q(desktop)}
  git -C {q(desktop)} autosync status
  git -C {q(desktop)} autosync log
  git -C {q(laptop)} log --stat -3
{lifetime}
Stop it and remove the sandbox:
  {q(stop)}""")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--expire"]:
        expire(sys.argv[2], float(sys.argv[3]),
               demo=int(sys.argv[4]) if sys.argv[4:5] else None)
        sys.exit(0)
    sys.exit(main())
