#!/bin/sh
# A local base image for deploy/Dockerfile, for machines whose Docker engine cannot pull images
# (no registry): Debian bookworm's own packages (its python3 is 3.11) as a minimal root
# filesystem made by mmdebstrap from this machine's apt sources, imported with `docker import`.
#
#   deploy/base-image.sh [IMAGE]        # default strom-base:bookworm; does nothing if it exists
#   STROM_BASE_REBUILD=1 deploy/base-image.sh   # rebuild anyway
#
# Then build strom on it: `make image STROM_BASE_IMAGE=strom-base:bookworm`. Elsewhere the
# Dockerfile's default base, python:3.11-slim, needs none of this.
#
# Needs Debian's mmdebstrap (apt-get install mmdebstrap); as root it builds in a chroot, as
# another user in a user namespace. The image holds python3 and python3-venv (whose ensurepip
# gives each venv its own pip) and nothing else beyond Debian's minimal base: no compiler.
set -eu

IMAGE="${1:-strom-base:bookworm}"
SUITE=bookworm

if [ -z "${STROM_BASE_REBUILD:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists (STROM_BASE_REBUILD=1 rebuilds it)"
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
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" - $MIRROR \
    | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$IMAGE" >/dev/null
echo "base image $IMAGE built in $(( $(date +%s) - start )) s:" \
    "$(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
