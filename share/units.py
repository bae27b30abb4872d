"""Build helper for the Makefile: write a systemd unit template with the install paths.

    python3 share/units.py SRC BINDIR LIBEXECDIR > DST

@BINDIR@/PROGRAM and @LIBEXECDIR@/PROGRAM become that path written the way systemd reads
a command line (systemd.service(5), "Command lines"): in double quotes when it holds a
space, a quote or a backslash, with '%' as '%%' (a specifier otherwise) and '$' as '$$'
(an environment variable otherwise). A PREFIX with a space in it then still runs.
"""

import re
import sys


def systemd_word(path: str) -> str:
    word = path.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def main(src: str, bindir: str, libexecdir: str) -> None:
    dirs = {"BINDIR": bindir, "LIBEXECDIR": libexecdir}
    with open(src) as f:
        text = f.read()
    sys.stdout.write(re.sub(r"@(BINDIR|LIBEXECDIR)@(/[^\s\"']*)?",
                            lambda m: systemd_word(dirs[m.group(1)] + (m.group(2) or "")),
                            text))


if __name__ == "__main__":
    main(*sys.argv[1:4])
