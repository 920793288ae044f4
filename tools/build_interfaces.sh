#!/usr/bin/env bash
# Build the ROS interface packages of interfaces/ (tf2_msgs: /tf and /tf_static) into a venv made
# by tools/setup_venv.sh: once per venv, again when interfaces/ or this script change. The PyPI
# ROS 2 wheels have no tf2_msgs; their interface generators (requirements/ros.txt) build it with
# cmake and the system C/C++ compiler, and it is installed where the message wheels put theirs
# (<venv>/lib for the libraries, <venv>/lib/python3.X/site-packages for the Python package), so
# `import tf2_msgs` works and rclpy loads its typesupports without sourcing anything.
# Where a ROS install is sourced (ROS_DISTRO set), its tf2_msgs is used and nothing is built.
# Usage: tools/build_interfaces.sh VENV
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

venv=${1:?usage: tools/build_interfaces.sh VENV}
py="$venv/bin/python"
packages=(tf2_msgs)
cmake_wheel=cmake==3.31.10  # only where no cmake >= 3.21 is on PATH
log="$venv/.interfaces-build.log"

fail() {
  echo "setup: $*" >&2
  exit 1
}

# Every message of every package imports and its typesupport libraries load (the C extension of
# the Python package, and each lib<pkg>__rosidl_typesupport_*.so as rclpy finds it, by name).
check() {
  "$py" - "$@" <<'PY'
import ctypes
import importlib
import sys

for name in sys.argv[1:]:
    msg = importlib.import_module(name + '.msg')
    for value in vars(msg).values():
        if isinstance(value, type) and hasattr(type(value), '__import_type_support__'):
            type(value).__import_type_support__()
    for kind in ('c', 'cpp', 'fastrtps_c', 'fastrtps_cpp', 'introspection_c',
                 'introspection_cpp'):
        ctypes.CDLL(f'lib{name}__rosidl_typesupport_{kind}.so')
PY
}

if [ -n "${ROS_DISTRO:-}" ]; then
  check "${packages[@]}" 2>/dev/null || fail "the sourced ROS ${ROS_DISTRO} install has no" \
    "tf2_msgs: install ros-${ROS_DISTRO}-tf2-msgs (or run rosdep install) and run setup again"
  exit 0
fi

hash=$( (find interfaces -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
         sha256sum < "$self") | sha256sum | cut -c1-16)
stamp="$venv/.interfaces-$hash"
if [ -f "$stamp" ] && check "${packages[@]}" 2>/dev/null; then
  exit 0
fi

# One build at a time per venv (two checkouts may share it).
exec 9>"$venv/.interfaces.lock"
if command -v flock >/dev/null; then
  flock 9
  if [ -f "$stamp" ] && check "${packages[@]}" 2>/dev/null; then
    exit 0  # built by the other one meanwhile
  fi
fi

# cmake >= 3.21 from PATH, else the PyPI wheel inside the venv (not on PATH: the venv's bin
# stays free of it); a C and a C++ compiler and make or ninja from the system.
cmake_ok() {
  local version
  version=$("$1" --version 2>/dev/null | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
  [ -n "$version" ] && [ "$(printf '3.21\n%s\n' "$version" | sort -V | head -1)" = 3.21 ]
}
cmake=$(command -v cmake || true)
if [ -z "$cmake" ] || ! cmake_ok "$cmake"; then
  cmake="$venv/.build-tools/cmake/data/bin/cmake"
  if ! cmake_ok "$cmake"; then
    echo "setup: no cmake >= 3.21 on PATH; installing $cmake_wheel into $venv/.build-tools"
    "$py" -m pip install -q --target "$venv/.build-tools" "$cmake_wheel" \
      || fail "no cmake >= 3.21 on PATH and installing $cmake_wheel failed: install cmake"
    cmake_ok "$cmake" || fail "the $cmake_wheel wheel gave no working cmake: install cmake"
  fi
fi
for tool in cc c++; do
  command -v "$tool" >/dev/null \
    || fail "building ${packages[*]} needs a C and a C++ compiler (cc, c++): install gcc and g++"
done
if command -v ninja >/dev/null; then
  generator=Ninja
elif command -v make >/dev/null; then
  generator='Unix Makefiles'
else
  fail "building ${packages[*]} needs make or ninja: install make"
fi

echo "setup: building ${packages[*]} into $venv (one time)"
build=$(mktemp -d "${TMPDIR:-/tmp}/spann3r-interfaces.XXXXXX")
trap 'rm -rf "$build"' EXIT
rm -f "$venv"/.interfaces-????????????????
: > "$log"
jobs=$(nproc 2>/dev/null || echo 2)
for pkg in "${packages[@]}"; do
  manifest="$venv/.interfaces-$pkg-manifest.txt"
  if ! { "$cmake" -S "interfaces/$pkg" -B "$build/$pkg" -G "$generator" \
           -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
           -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
           -DPython3_EXECUTABLE="$py" -DPython3_FIND_VIRTUALENV=FIRST \
         && "$cmake" --build "$build/$pkg" --parallel "$jobs" \
         && { [ ! -f "$manifest" ] || xargs -d '\n' rm -f < "$manifest"; } \
         && "$cmake" --install "$build/$pkg" \
         && cp "$build/$pkg/install_manifest.txt" "$manifest"; } >> "$log" 2>&1; then
    first=$(grep -n -m 1 -E 'CMake Error|FAILED:|error:|Error' "$log" | cut -d: -f1 || true)
    if [ -n "$first" ]; then
      sed -n "${first},$((first + 30))p" "$log" >&2
    else
      tail -n 30 "$log" >&2
    fi
    fail "building interfaces/$pkg failed (the error is above; the whole log: $log)"
  fi
done

if ! error=$(check "${packages[@]}" 2>&1); then
  fail "${packages[*]} was built into $venv but does not load: $(echo "$error" | tail -n 1)" \
    "(build log: $log)"
fi
touch "$stamp"
