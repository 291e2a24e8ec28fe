#!/usr/bin/env bash
# Build the bids-syncact image: `make image` (DESIGN.md sections 7 and 8).
#
#   scripts/image.sh              build
#   scripts/image.sh --version    print the tag it makes
#   scripts/image.sh --source-digest   print the digest of the last build's source snapshot
#
# Tags localhost/bids-syncact:<version> and :latest, the version (and the image's
# org.opencontainers.image.version label) read from bids_syncact/_version.py. The engine is docker
# when `docker info` succeeds, else podman with PODMAN_OPTS (default: --storage-driver vfs
# --runtime runc) and CONTAINERS_CONF (default: scripts/containers.conf). Settings, from the
# environment (the Makefile passes its variables of the same names):
#   ENGINE           docker or podman: skip the detection
#   BASE_IMAGE       the Dockerfile's base; default with docker: the Dockerfile's (the official
#                    Python image); with podman: localhost/bids-syncact-base:bookworm, the
#                    debootstrap stand-in made once by scripts/podman-base.sh
#   TORCH_VARIANT    cpu (default), cuNNN or pypi (see the Dockerfile)
#   FETCH_RESOURCES  1 (default) or 0: fetch weights and TemplateFlow files at build time
#   PIP_CERT         a CA bundle mounted into podman's RUN steps and passed as a build argument
#   IMAGE_DISK_GB    free disk (GB) required where the engine stores images (default with podman's
#                    vfs driver, which copies every layer whole: 30, or 16 with the dependency
#                    image cached; else 12)
# Prints the image size, the build time and the peak disk used; writes them to
# .cache/image-build.json. Exit codes: 64 bad usage, 65 no release version in _version.py, 66 no
# snapshot (--source-digest before any build), 69 no engine or a download out of reach (one line
# says which setting to change), 73 the disk is short (checked first, and watched while building),
# 74 the source snapshot failed; else the engine's own.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" bids_syncact/_version.py)
if ! [[ "$version" =~ ^[0-9]+(\.[0-9]+)*([a-z]+[0-9]+)?(\.dev[0-9]+)?$ ]]; then
    echo "image.sh: bids_syncact/_version.py holds no plain release version ('$version')" >&2
    exit 65
fi
image=localhost/bids-syncact
# The build context is a snapshot of the source (tracked and untracked files git does not ignore)
# in .cache/image-context, kept after the build: what the image installed, whatever happens to
# the checkout meanwhile (the container test runs its pip reference on it). Its digest is the
# image's org.bids-syncact.source label.
context=.cache/image-context
source_digest() {
    # __pycache__ left out: the pip reference run writes Numba's cache there
    (cd "$context" && find . -type f -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum \
        | sha256sum | cut -c1-16)
}
if [ "${1:-}" = --version ]; then  # the tag this build makes
    echo "$image:$version"
    exit 0
elif [ "${1:-}" = --source-digest ]; then  # of the last build's snapshot
    [ -d "$context" ] || { echo "image.sh: no $context: run make image" >&2; exit 66; }
    source_digest
    exit 0
elif [ $# -gt 0 ]; then
    echo "image.sh: unknown argument $1 (settings come from the environment: see the top of $0)" >&2
    exit 64
fi

engine=${ENGINE:-}
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    else
        echo "image.sh: no container engine: 'docker info' fails and podman is not installed" \
            "(apt-get install podman runc debootstrap)" >&2
        exit 69
    fi
fi
build_opts=(--network host)
case "$engine" in
    docker)
        cmd=(docker)
        store=$(docker info --format '{{.DockerRootDir}}')
        need=${IMAGE_DISK_GB:-12}
        ;;
    podman)
        read -r -a opts <<< "${PODMAN_OPTS:---storage-driver vfs --runtime runc}"
        cmd=(podman "${opts[@]}")
        export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
        store=$("${cmd[@]}" info --format '{{.Store.GraphRoot}}')
        driver=$("${cmd[@]}" info --format '{{.Store.GraphDriverName}}')
        # vfs, measured with torch from the package index: a cold build peaked at 28 GB above
        # the start; with the deps image cached, 13-14 GB (the last step's container and layer)
        if [ "$driver" != vfs ]; then need=12
        elif "${cmd[@]}" image exists localhost/bids-syncact-deps:latest; then need=16
        else need=30; fi
        need=${IMAGE_DISK_GB:-$need}
        build_opts+=(--format docker)  # SHELL and the labels as docker has them
        if [ -z "${BASE_IMAGE:-}" ]; then
            BASE_IMAGE=localhost/bids-syncact-base:bookworm
            PODMAN="${cmd[*]}" scripts/podman-base.sh "$BASE_IMAGE"
        fi
        if [ -n "${PIP_CERT:-}" ]; then
            build_opts+=(-v "$PIP_CERT:/run/host-ca.pem:ro" --build-arg PIP_CERT=/run/host-ca.pem)
        fi
        ;;
    *) echo "image.sh: ENGINE=$engine is neither docker nor podman" >&2; exit 64 ;;
esac
# Fail fast, in one line, where the build would wait on a download it cannot make.
reachable() {  # any HTTP answer counts; no answer in 15 s does not
    python3 -c 'import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=15)
except urllib.error.HTTPError:
    pass
except OSError:
    sys.exit(1)' "$1"
}
variant=${TORCH_VARIANT:-cpu}
if [ "$variant" != pypi ] && ! reachable "https://download.pytorch.org/whl/$variant/"; then
    echo "image.sh: the PyTorch index https://download.pytorch.org/whl/$variant/ cannot be" \
        "reached: build with TORCH_VARIANT=pypi (torch and its CUDA libraries from the package index)" >&2
    exit 69
fi
if [ "${FETCH_RESOURCES:-1}" != 0 ]; then
    for url in https://download.pytorch.org/models/ https://templateflow.s3.amazonaws.com/; do
        reachable "$url" || {
            echo "image.sh: $url cannot be reached to fetch weights and TemplateFlow files:" \
                "build with FETCH_RESOURCES=0 (the image then needs --weights PATH|none)" >&2
            exit 69
        }
    done
fi
[ -n "${BASE_IMAGE:-}" ] && build_opts+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
build_opts+=(--build-arg "TORCH_VARIANT=$variant"
             --build-arg "FETCH_RESOURCES=${FETCH_RESOURCES:-1}")

if [ "$engine" = podman ]; then
    # podman rebuilds the last stage every time (its cache cannot see the bind-mounted source):
    # the old image, a whole copy under vfs, goes first, so that it does not add to the peak.
    for tag in "$image:latest" "$image:$version"; do
        if "${cmd[@]}" image exists "$tag"; then "${cmd[@]}" rmi "$tag" >/dev/null; fi
    done
fi
mkdir -p "$store"
avail() { df --output=avail -B1 "$store" | tail -1 | tr -d ' '; }
used() { df --output=used -B1 "$store" | tail -1 | tr -d ' '; }
free_gb=$(( $(avail) / 1024**3 ))
if [ "$free_gb" -lt "$need" ]; then
    echo "image.sh: $free_gb GB free under $store, the build needs about $need GB" \
        "(set IMAGE_DISK_GB to override; '${cmd[*]} system prune' frees old images)" >&2
    exit 73
fi

build_opts+=(--label "org.opencontainers.image.version=$version")

rm -rf "$context"
mkdir -p "$context"
if git rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -z | xargs -0 cp -P --parents -t "$context" 2>/dev/null || true
    [ -f "$context/Dockerfile" ] || { echo "image.sh: could not snapshot the source" >&2; exit 74; }
else
    tar --exclude=./.cache --exclude=./.venv -c . | tar -C "$context" -x
fi
build_opts+=(--label "org.bids-syncact.source=$(source_digest)")

# Peak disk: sample the store's file system while the build runs; stop it before the disk fills.
floor=$(( 2 * 1024**3 ))
before=$(used)
peak=$before
start=$(date +%s)
stage_file=$(mktemp)
trap 'rm -f "$stage_file"; [ "$engine" != podman ] || drop_step_containers' EXIT
build() {  # build OPTIONS...: in the background, sampled; returns the build's exit status
    "${cmd[@]}" build "${build_opts[@]}" "$@" &
    local pid=$! u
    while kill -0 "$pid" 2>/dev/null; do
        u=$(used); [ "$u" -gt "$peak" ] && peak=$u
        if [ "$(avail)" -lt "$floor" ]; then
            kill "$pid"; wait "$pid" || true
            echo "image.sh: stopped the build: under 2 GB left under $store" \
                "(peak $(( (peak - before) / 1024**3 )) GB above the start); free disk and rerun" >&2
            exit 73
        fi
        sleep 2
    done
    wait "$pid"
}
# podman leaves its step containers behind (whole copies under vfs): remove those of the build.
drop_step_containers() {
    local id name
    "${cmd[@]}" ps -a --external --format '{{.ID}} {{.Names}}' | while read -r id name; do
        case "$name" in *-working-container) "${cmd[@]}" rm -f "$id" >/dev/null ;; esac
    done
}
echo "image.sh: building $image:$version with ${cmd[*]} (${build_opts[*]})"
if [ "$engine" = podman ]; then
    # The deps stage with the layer cache; then the last stage from the Dockerfile's `FROM deps`
    # line on, as one step without the cache (each cached step is a whole copy under vfs).
    build --target deps -t localhost/bids-syncact-deps:latest -f "$context/Dockerfile" "$context"
    drop_step_containers
    sed -n '/^FROM deps$/,$p' "$context/Dockerfile" | sed 's|^FROM deps$|FROM localhost/bids-syncact-deps:latest|' \
        > "$stage_file"
    build --layers=false -t "$image:$version" -t "$image:latest" -f "$stage_file" "$context"
    drop_step_containers
else
    build -t "$image:$version" -t "$image:latest" -f "$context/Dockerfile" "$context"
fi
seconds=$(( $(date +%s) - start ))

# Intermediate and replaced images: dangling ones go (the cached layers of :latest stay).
"${cmd[@]}" image prune -f >/dev/null
size=$("${cmd[@]}" image inspect "$image:$version" --format '{{.Size}}')
size_gb=$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1024^3 }')
peak_gb=$(awk -v p="$peak" -v b="$before" 'BEGIN { printf "%.1f", (p - b) / 1024^3 }')
left_gb=$(awk -v u="$(used)" -v b="$before" 'BEGIN { printf "%.1f", (u - b) / 1024^3 }')
mkdir -p .cache
cat > .cache/image-build.json <<JSON
{"image": "$image:$version", "engine": "${cmd[*]}", "base": "${BASE_IMAGE:-default}",
 "torch_variant": "$variant", "fetch_resources": "${FETCH_RESOURCES:-1}",
 "build_s": $seconds, "size_gb": $size_gb, "peak_disk_gb": $peak_gb, "disk_after_gb": $left_gb}
JSON
echo "image.sh: $image:$version and :latest built in $seconds s; image $size_gb GB;" \
    "peak disk $peak_gb GB above the start, $left_gb GB after pruning"
