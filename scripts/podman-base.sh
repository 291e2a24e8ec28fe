#!/usr/bin/env bash
# Make the stand-in base image for podman builds where no image registry is reachable
# (DESIGN.md section 7): Debian bookworm minbase with python3, venv and pip from Debian's
# packages, imported into podman's store. Made once: an existing image is kept.
#
#   scripts/podman-base.sh [IMAGE]      (default localhost/bids-syncact-base:bookworm)
#
# Needs root, debootstrap and podman; PODMAN may hold podman with its options
# (scripts/image.sh passes --storage-driver vfs --runtime runc). Exit 69 when a tool is missing.
set -euo pipefail

image=${1:-localhost/bids-syncact-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
read -r -a podman <<< "${PODMAN:-podman}"

if "${podman[@]}" image exists "$image"; then
    echo "podman-base.sh: $image exists (kept)"
    exit 0
fi
for tool in debootstrap "${podman[0]}"; do
    command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null || {
        echo "podman-base.sh: $tool not found: apt-get install podman runc debootstrap" >&2
        exit 69
    }
done
if [ "$(id -u)" != 0 ]; then
    echo "podman-base.sh: debootstrap needs root" >&2
    exit 69
fi

dir=$(mktemp -d "${TMPDIR:-/var/tmp}/bids-syncact-base.XXXXXX")
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"  # the image root: mktemp made it 0700, which locks out non-root users
start=$(date +%s)
PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$dir" "$mirror" \
    > "$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | "${podman[@]}" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "podman-base.sh: made $image in $(( $(date +%s) - start )) s"
