#!/usr/bin/env bash
# Build (once) the project's virtual environment under ~/.cache, keyed by a hash of the
# requirement files, and link it to .venv. Where a ROS 2 install is sourced (ROS_DISTRO set),
# the venv sees its rclpy and messages instead of the PyPI wheels. tools/build_interfaces.sh then
# builds the interfaces the PyPI wheels lack (interfaces/: tf2_msgs) into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
reqs=(requirements/torch.txt requirements/core.txt requirements/dev.txt)
venv_flags=()
if [ -n "${ROS_DISTRO:-}" ]; then
  venv_flags+=(--system-site-packages)
  tag="ros-${ROS_DISTRO}"
else
  reqs+=(requirements/ros.txt)
  tag="pypi-ros"
fi
hash=$(cat "${reqs[@]}" | sha256sum | cut -c1-16)
cache=${SPANN3R_VENV_CACHE:-$HOME/.cache/spann3r_ros}
venv="$cache/venv-$tag-$hash"

if [ ! -f "$venv/.complete" ]; then
  echo "setup: building $venv (one time; torch is large)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$PYTHON" -m venv "${venv_flags[@]}" "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned, so nothing else can pull in a different build.
  "$venv/bin/python" -m pip install -q -r requirements/torch.txt
  pip_args=()
  for r in "${reqs[@]}"; do pip_args+=(-r "$r"); done
  "$venv/bin/python" -m pip install -q "${pip_args[@]}" -c requirements/torch.txt
  touch "$venv/.complete"
fi
tools/build_interfaces.sh "$venv"

if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
  rm -rf .venv
  ln -s "$venv" .venv
fi

# Editable install of this checkout (console scripts, training), redone when the venv
# points at another checkout or when setup.py / setup.cfg changed (new or moved console scripts).
here=$(pwd -P)
stamp="$venv/.editable-$(cat setup.py setup.cfg | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$here" ] || ! .venv/bin/python - "$here" <<'PY' 2>/dev/null
import os, sys
import spann3r_model, training
ok = os.path.dirname(os.path.dirname(os.path.realpath(spann3r_model.__file__))) == sys.argv[1]
sys.exit(0 if ok else 1)
PY
then
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
  rm -f "$venv"/.editable-*
  echo "$here" > "$stamp"
fi
echo "setup: .venv -> $venv"
