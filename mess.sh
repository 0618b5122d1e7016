#!/usr/bin/env bash
# MESS Explorer's two entry points. Each one sets up what it needs on first use (a virtual environment in .venv
# with requirements.txt installed) and again whenever requirements.txt changes.
#   ./mess.sh app  [streamlit options]   start the app
#   ./mess.sh test [pytest options]      run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MESS_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

ensure_env() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "MESS Explorer needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
    exit 1
  fi
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing requirements into $VENV (first run takes a few minutes)..." >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt
    echo "$want" > "$stamp"
  fi
}

case "${1:-}" in
  app)
    shift
    ensure_env
    exec "$VENV/bin/python" -m streamlit run app/main.py \
      --server.headless true --browser.gatherUsageStats false "$@"
    ;;
  test)
    shift
    ensure_env
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./mess.sh app | test" >&2
    exit 2
    ;;
esac
