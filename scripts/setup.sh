#!/usr/bin/env bash
# Fresh-machine set-up for armflow: system packages, a venv, torch==2.13.0 first, then the project.
# Idempotent: re-running only does what is missing.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
for pkg in libosmesa6 xvfb xdotool; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# torch first: a bare `torch` requirement would pull the multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q -e ".[dev,ray,rewards]"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__)')"
