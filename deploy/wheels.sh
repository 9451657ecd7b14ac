#!/bin/sh
# Wheels for the image, fetched here so that `docker build` needs no network (deploy/Dockerfile):
# strom's runtime dependencies and its build backend, for CPython 3.11 on this machine's CPU
# (whatever Python runs this script), into deploy/wheels/.
#
#   deploy/wheels.sh [PYTHON]      # default python3; make wheels uses the project's venv
set -eu
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"
OUT=deploy/wheels
ARCH=$(uname -m)

# pyproject.toml is the one list: [project].dependencies, the `console` extra the image installs
# (the compose file's console service runs from it) and [build-system].requires.
"$PYTHON" - > "$OUT/requirements.txt" <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
wanted = (
    project["project"]["dependencies"]
    + project["project"]["optional-dependencies"]["console"]
    + project["build-system"]["requires"]
)
print("\n".join(wanted))
PY
# Binary wheels only, chosen for the image's interpreter (cp311) and glibc (Debian bookworm has
# 2.36; python:3.11-slim is bookworm too), not for the Python that runs pip here.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$OUT" \
    --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform "manylinux_2_36_$ARCH" --platform "manylinux_2_28_$ARCH" \
    --platform "manylinux_2_17_$ARCH" --platform "manylinux2014_$ARCH" \
    --requirement "$OUT/requirements.txt"
echo "$(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT"
