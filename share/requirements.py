"""Build helper for the Makefile: check the python3 that builds the toolkit, and print the
package requirements kept in setup.cfg (the one place they are named).

    python3 share/requirements.py --check          exit 1 with one error line if unusable
    python3 share/requirements.py runtime [test]   print requirements, shell-quoted
"""

import configparser
import importlib.util
import os
import shlex
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def check():
    if sys.version_info < (3, 11):
        return "python %d.%d is too old (3.11 or newer needed)" % sys.version_info[:2]
    for module in ("venv", "ensurepip"):
        if importlib.util.find_spec(module) is None:
            return f"python3 module '{module}' is missing"
    return None


def requirements(groups):
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(HERE, os.pardir, "setup.cfg"))
    found = []
    for group in groups:
        text = (cfg["options"]["install_requires"] if group == "runtime"
                else cfg["options.extras_require"][group])
        found += text.split()
    return found


def main(argv):
    if argv == ["--check"]:
        problem = check()
        if problem:
            print(f"git-autosync: {problem}", file=sys.stderr)
            print("hint: sudo apt-get install python3 python3-venv   (Debian, Ubuntu)",
                  file=sys.stderr)
            return 1
        return 0
    print(" ".join(shlex.quote(r) for r in requirements(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
