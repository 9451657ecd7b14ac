#!/bin/sh
# Local base images for deploy/Dockerfile, for machines whose Docker engine cannot pull images
# (no registry): Debian bookworm's own packages (its python3 is 3.11) as minimal root
# filesystems made by mmdebstrap from this machine's apt sources, imported with `docker import`.
# One mmdebstrap run makes two images:
#
#   strom-build:bookworm   python3, python3-venv, and gcc with Python's headers: the Dockerfile's
#                          build stage compiles strom's record codec (storage/_codec.c) on it
#   strom-base:bookworm    the same system with the compiler purged: what the node image runs on
#
#   deploy/base-image.sh [BASE_IMAGE [BUILD_IMAGE]]   # nothing to do if both exist
#   STROM_BASE_REBUILD=1 deploy/base-image.sh         # rebuild anyway
#
# Then build strom on them: `make image STROM_BASE_IMAGE=strom-base:bookworm
# STROM_BUILD_IMAGE=strom-build:bookworm`. Elsewhere the Dockerfile's defaults, python:3.11
# (build stage) and python:3.11-slim (runtime), need none of this.
#
# Needs Debian's mmdebstrap (apt-get install mmdebstrap); as root it builds in a chroot, as
# another user in a user namespace.
set -eu

IMAGE="${1:-strom-base:bookworm}"
BUILD_IMAGE="${2:-strom-build:bookworm}"
SUITE=bookworm
BUILD_TOOLS="gcc libc6-dev python3-dev"

if [ -z "${STROM_BASE_REBUILD:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1 \
    && docker image inspect "$BUILD_IMAGE" >/dev/null 2>&1; then
    echo "base images $IMAGE and $BUILD_IMAGE exist (STROM_BASE_REBUILD=1 rebuilds them)"
    exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
    echo "mmdebstrap is missing: apt-get install mmdebstrap (Debian's package)" >&2
    exit 1
fi

# The machine's own apt sources (its mirror or proxy, and its security suite) when it has a
# deb822 file naming bookworm; otherwise mmdebstrap's default Debian mirror.
MIRROR=""
for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -f "$sources" ] && grep -q "$SUITE" "$sources"; then
        MIRROR="$sources"
        break
    fi
done

start=$(date +%s)
# Documentation, manuals and translations are dropped at unpack time: nobody reads them in a
# container, and they are a third of a minimal Debian. The apt lists and caches go too.
# shellcheck disable=SC2086
# The merged-usr hook sets up bookworm's merged /usr with the tiny usr-is-merged package instead
# of usrmerge, which would pull in Perl (45 MB) for a one-time conversion.
BUILD_TAR=$(mktemp)
trap 'rm -f "$BUILD_TAR"' EXIT
# The first customize hook saves the tree with the compiler (the build image); the second purges
# the compiler and what only it needed, leaving the runtime tree mmdebstrap writes out.
mmdebstrap --quiet --variant=minbase \
    --include="python3,python3-venv,$(echo $BUILD_TOOLS | tr ' ' ',')" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    --customize-hook="tar -C \"\$1\" --one-file-system -cf $BUILD_TAR ." \
    --customize-hook="chroot \"\$1\" apt-get purge -y -qq --auto-remove $BUILD_TOOLS >/dev/null" \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/dpkg.log' \
    "$SUITE" - $MIRROR \
    | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$IMAGE" >/dev/null
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$BUILD_TAR" "$BUILD_IMAGE" >/dev/null
size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
echo "base images built in $(( $(date +%s) - start )) s: $IMAGE $(size "$IMAGE")," \
    "$BUILD_IMAGE $(size "$BUILD_IMAGE")"
