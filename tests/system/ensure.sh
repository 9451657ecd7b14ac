#!/usr/bin/env bash
# Installs the Debian packages of tests/system/packages.txt that are missing, when this runs as
# root with apt; otherwise says which are missing (the tests that need them skip, one line each
# kind). With --strict (CI) a package that could not be installed is an error.
set -euo pipefail
cd "$(dirname "$0")"
strict=0
[ "${1:-}" = "--strict" ] && strict=1

mapfile -t wanted < <(grep -v '^\s*\(#\|$\)' packages.txt)
missing=()
for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages for the tests: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    then
        exit 0
    fi
    echo "could not install ${missing[*]} with apt" >&2
elif ! command -v dpkg-query >/dev/null; then
    echo "not a Debian system: cannot check system packages (${wanted[*]})" >&2
else
    echo "system packages missing (run as root with apt to install them): ${missing[*]}" >&2
fi
if [ "$strict" = 1 ]; then
    exit 1
fi
echo "tests that need them will be skipped" >&2
