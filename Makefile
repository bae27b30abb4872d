# git-autosync - a Dropbox-like folder made of git.
#
#   make demo                     watch it work in a sandbox (nothing installed for good)
#   make test                     lint, then the test suite (creates .venv, installs test servers)
#   make lint                     ruff and mypy on the product code (fast, no network)
#   make install [REPO=DIR]       install the toolkit under PREFIX, then into repository DIR
#                                 (V=1 shows every step)
#   make uninstall REPO=DIR       remove from DIR exactly what install added
#   make uninstall                remove the toolkit from PREFIX (and from every repository
#                                 it was installed in)
#   make install-systemd REPO=DIR start syncing DIR at login (systemd user unit)
#   make bench / make soak        benchmarks and the convergence soak

PREFIX     ?= $(HOME)/.local
DESTDIR    ?=
PYTHON     ?= python3
BINDIR     := $(PREFIX)/bin
LIBEXECDIR := $(PREFIX)/libexec/git-autosync
SHAREDIR   := $(PREFIX)/share/git-autosync
MANDIR     := $(PREFIX)/share/man
VENV       := $(PREFIX)/lib/git-autosync/venv
DEVVENV    := .venv
SOAK_SECONDS ?= 120
# Install recipes are quiet but for a summary; make install V=1 shows each command.
Q := $(if $(filter 1,$(V)),,@)

PROGRAMS := $(filter-out libexec/autosync,$(wildcard libexec/*))
MODULES  := $(wildcard libexec/autosync/*.py)
UNITS    := $(wildcard share/systemd/*)
# Debian packages the tests need: real servers, never mocks.
TEST_DEBS := mosquitto mosquitto-clients prosody openssl

requires = $(shell $(PYTHON) share/requirements.py $(1))
# REPO inside '...' in a recipe: each ' in it written as '\'' (a repository "Bob's notes")
QREPO = $(subst ','\'',$(REPO))

.PHONY: all install install-toolkit install-repo uninstall install-systemd test lint deps \
        bench soak demo clean check-python check-repo

all:
	@sed -n 's/^#   //p' Makefile

check-python:
	@$(PYTHON) share/requirements.py --check

# Refuse a bad REPO before anything is installed (stdlib only: runs on the system python).
check-repo: check-python
ifdef REPO
	@$(PYTHON) libexec/autosync-install check --make '$(QREPO)'
endif

# -- the toolkit -----------------------------------------------------------------------
install: check-repo install-toolkit
ifdef REPO
	@'$(DESTDIR)$(LIBEXECDIR)/autosync-install' install --make '$(QREPO)'
endif

install-toolkit: check-python $(DESTDIR)$(VENV)/.autosync-ok
	$(Q)install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(LIBEXECDIR)/autosync' \
	    '$(DESTDIR)$(SHAREDIR)/hooks' '$(DESTDIR)$(SHAREDIR)/systemd' '$(DESTDIR)$(MANDIR)/man1'
	$(Q)install -m 0644 $(MODULES) '$(DESTDIR)$(LIBEXECDIR)/autosync/'
	@# compiled now, not at the first start (compiling costs that daemon 2.4 MB for good)
	$(Q)'$(DESTDIR)$(VENV)/bin/python' -m compileall -q -d '$(LIBEXECDIR)/autosync' \
	    '$(DESTDIR)$(LIBEXECDIR)/autosync' >/dev/null
	$(Q)for p in $(PROGRAMS); do \
	    sed '1s|^#!.*python3.*$$|#!$(VENV)/bin/python|' "$$p" > '$(DESTDIR)$(LIBEXECDIR)'/.tmp && \
	    install -m 0755 '$(DESTDIR)$(LIBEXECDIR)'/.tmp "$(DESTDIR)$(LIBEXECDIR)/$${p#libexec/}" || exit 1; \
	done; rm -f '$(DESTDIR)$(LIBEXECDIR)'/.tmp
	$(Q)install -m 0644 hooks/* '$(DESTDIR)$(SHAREDIR)/hooks/'
	$(Q)for u in $(UNITS); do \
	    $(PYTHON) share/units.py "$$u" '$(BINDIR)' '$(LIBEXECDIR)' \
	        > '$(DESTDIR)$(SHAREDIR)/systemd/'"$${u##*/}" || exit 1; \
	done
	$(Q)install -m 0644 README.md '$(DESTDIR)$(SHAREDIR)/'
	$(Q)[ ! -f share/man/man1/git-autosync.1 ] || \
	    install -m 0644 share/man/man1/git-autosync.1 '$(DESTDIR)$(MANDIR)/man1/'
	$(Q)ln -sfn '$(LIBEXECDIR)/git-autosync' '$(DESTDIR)$(BINDIR)/git-autosync'
	@echo "installed the git-autosync toolkit under $(DESTDIR)$(PREFIX) (make install V=1 shows each step):"
	@echo "  command    $(BINDIR)/git-autosync"
	@echo "  helpers    $(LIBEXECDIR)/ ($(words $(PROGRAMS)) programs, the autosync package)"
	@echo "  data       $(SHAREDIR)/ (hook templates, systemd units)"
	@echo "  man page   $(MANDIR)/man1/git-autosync.1"
ifeq ($(DESTDIR),)
	@case ":$$PATH:" in *':$(BINDIR):'*) ;; *) \
	    echo "note: $(BINDIR) is not on PATH: 'git autosync' works only inside repositories it is installed in (alias.autosync)"; \
	    echo 'hint: add to ~/.profile, then log in again:  export PATH="$(BINDIR):$$PATH"';; esac
	@if command -v manpath >/dev/null 2>&1; then \
	    case ":$$(manpath 2>/dev/null):" in *':$(MANDIR):'*) ;; *) \
	    echo "note: $(MANDIR) is not on the man page path: 'man git-autosync' will not find it"; \
	    echo 'hint: add to ~/.profile, then log in again:  export MANPATH="$(MANDIR):$$MANPATH"';; esac; \
	fi
endif

# The private environment holding the two runtime packages. Built aside and renamed into
# place, so a failed pip run leaves nothing half-done.
$(DESTDIR)$(VENV)/.autosync-ok: setup.cfg
	@echo "building the private python environment in $(DESTDIR)$(VENV)"
	@echo "  (python3 -m venv, then pip installs $(call requires,runtime); this takes about 20 s) ..."
	@rm -rf '$(DESTDIR)$(VENV).new'
	@$(PYTHON) -m venv '$(DESTDIR)$(VENV).new' || { rm -rf '$(DESTDIR)$(VENV).new'; \
	    echo "git-autosync: cannot create the private python environment" >&2; exit 1; }
	@'$(DESTDIR)$(VENV).new/bin/python' -m pip install -q --disable-pip-version-check $(call requires,runtime) || { \
	    rm -rf '$(DESTDIR)$(VENV).new'; \
	    echo "git-autosync: cannot install the runtime packages into $(VENV)" >&2; \
	    echo "hint: check network access to the python package index, then run make install again" >&2; \
	    exit 1; }
	@touch '$(DESTDIR)$(VENV).new/.autosync-ok'
	@rm -rf '$(DESTDIR)$(VENV)' && mv '$(DESTDIR)$(VENV).new' '$(DESTDIR)$(VENV)'
	@# venv records its own path in scripts; only bin/python is used, which is relocatable
	@echo "private python environment ready in $(VENV)"

# Without REPO: first out of every repository this toolkit was installed in (refused, with
# nothing changed, while a daemon runs in one), so that no hook is left calling a helper
# that is gone. The list of repositories may live in SHAREDIR ($XDG_DATA_HOME unset and
# PREFIX=~/.local): only our own files are removed from there.
uninstall:
ifdef REPO
	@'$(LIBEXECDIR)/autosync-install' uninstall --make '$(QREPO)'
else
ifeq ($(DESTDIR),)
	@$(PYTHON) libexec/autosync-install remove-toolkit '$(LIBEXECDIR)'
endif
	$(Q)rm -rf '$(DESTDIR)$(LIBEXECDIR)' '$(DESTDIR)$(SHAREDIR)/hooks' '$(DESTDIR)$(SHAREDIR)/systemd' \
	    '$(DESTDIR)$(SHAREDIR)/README.md' '$(DESTDIR)$(PREFIX)/lib/git-autosync'
	$(Q)rmdir '$(DESTDIR)$(SHAREDIR)' 2>/dev/null || true
	$(Q)rm -f '$(DESTDIR)$(BINDIR)/git-autosync' '$(DESTDIR)$(MANDIR)/man1/git-autosync.1'
	@echo "removed the git-autosync toolkit from $(DESTDIR)$(PREFIX)"
endif

install-systemd: install
	@test -n '$(QREPO)' || { echo "git-autosync: REPO is not set" >&2; \
	    echo "hint: make install-systemd REPO=~/notes" >&2; exit 2; }
	@'$(LIBEXECDIR)/git-autosync' -C '$(QREPO)' systemd enable

# -- development -------------------------------------------------------------------------
# `deps` makes a fresh machine (python3, git, make) ready for the tests: a venv with the
# runtime and test packages, and the Debian packages for the real servers (as root).
deps: check-python $(DEVVENV)/.deps-ok
	@missing=""; for b in mosquitto prosody openssl; do \
	    command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || [ -x /usr/bin/$$b ] || missing="$$missing $$b"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "installing test servers:$$missing"; \
	        DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_DEBS) \
	            >/dev/null || exit 1; \
	        for s in mosquitto prosody; do \
	            systemctl disable --now $$s >/dev/null 2>&1 || service $$s stop >/dev/null 2>&1 || true; \
	        done; \
	    else \
	        echo "warning: missing$$missing; the tests that need them are skipped" >&2; \
	        echo "hint: sudo apt-get install $(TEST_DEBS)" >&2; \
	    fi; \
	fi

$(DEVVENV)/.deps-ok: setup.cfg
	$(PYTHON) -m venv $(DEVVENV)
	$(DEVVENV)/bin/python -m pip install -q $(call requires,runtime test)
	touch $@

# The product code: the autosync package and the entry points in libexec/. ruff's rules are
# in share/ruff.toml, mypy's in setup.cfg's [mypy] section. Neither keeps a cache.
LINTED := libexec/autosync $(filter libexec/autosync-% libexec/git-autosync,$(PROGRAMS))

lint: deps
	$(DEVVENV)/bin/ruff check --no-cache --quiet --config share/ruff.toml $(LINTED)
	$(DEVVENV)/bin/mypy --config-file setup.cfg $(LINTED)

test: lint
	$(DEVVENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: deps
	$(DEVVENV)/bin/python tests/bench/run.py $(BENCH_ARGS)

soak: deps
	$(DEVVENV)/bin/python -m pytest tests/test_soak.py -q --soak-seconds=$(SOAK_SECONDS) $(PYTEST_ARGS)

demo: check-python
	@$(PYTHON) share/demo.py

clean:
	rm -rf $(DEVVENV) tests/bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
