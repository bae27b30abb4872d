"""git-autosync: a Dropbox-like folder made of git.

The executables in libexec/ are thin entry points; the logic lives in this package,
one module per idea (see README.md, "How it is built").
"""

VERSION = "0.1.0"
