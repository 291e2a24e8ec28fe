#!/usr/bin/env bash
# Install bids-syncact with its pretrained weights and TemplateFlow files.
# Shared by the Dockerfile and CI (DESIGN.md section 7); CI runs the --offline mode.
#
#   scripts/install.sh [--python PY] [--torch VARIANT] [--editable] [--offline] [--deps-only]
#
#   --python PY       interpreter whose environment receives the install (default: python3)
#   --torch VARIANT   install torchvision (and the torch it requires) first: cpu (the published
#                     image's default), cu126, cu128, ... from the PyTorch index of VARIANT; pypi
#                     from the configured package index (a CUDA build with its libraries, several
#                     GB: the only torch reachable on machines without the PyTorch index). Without
#                     it pip resolves torchvision>0.28 from the configured index (never pin torch:
#                     the local CPU-only torch 2.13 wheel cannot load torchvision's ops)
#   --editable        pip install -e (a development checkout)
#   --offline         download no weights or templates: resolve and list them (every weights
#                     enum, every TemplateFlow query), which fails if one no longer exists
#   --deps-only       install torch and the dependencies listed in pyproject.toml, not the package
#                     (the image's dependency layer: a source change does not reinstall torch)
set -euo pipefail

python=python3
torch_variant=''
editable=''
offline=''
deps_only=''
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --torch) torch_variant="$2"; shift 2 ;;
        --editable) editable='-e'; shift ;;
        --offline) offline='--offline'; shift ;;
        --deps-only) deps_only=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done

src=$(cd "$(dirname "$0")/.." && pwd)
pip=("$python" -m pip --disable-pip-version-check --no-cache-dir)

case "$torch_variant" in
    '') ;;
    pypi) "${pip[@]}" install 'torchvision>0.28' ;;
    cpu|cu[0-9]*)
        "${pip[@]}" install --index-url "https://download.pytorch.org/whl/${torch_variant}" \
            --extra-index-url https://pypi.org/simple 'torchvision>0.28' ;;
    *) echo "install.sh: --torch $torch_variant is not cpu, cuNNN or pypi" >&2; exit 64 ;;
esac
# The guard holds the choice made: cpu must give a CPU build; pypi and cuNNN may bring CUDA.
if [ "$torch_variant" = cpu ] && ! "$python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    echo "install.sh: --torch cpu installed a CUDA build of torch: the PyTorch CPU index lacks a torchvision>0.28 for this Python" >&2
    exit 1
fi
if [ -n "$deps_only" ]; then
    # pyproject.toml's [project] dependencies, read with the target interpreter (Python >= 3.11).
    mapfile -t deps < <("$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$src/pyproject.toml")
    "${pip[@]}" install "${deps[@]}"
    echo "install.sh: dependencies installed (${#deps[@]} from pyproject.toml)"
    exit 0
fi
if [ -n "$editable" ]; then
    "${pip[@]}" install -e "$src"
else
    "${pip[@]}" install "$src"
fi

"$python" -m bids_syncact.cli.run --version
"$python" -m bids_syncact.resources $offline
echo "install.sh: done${offline:+ (offline: resources listed, not fetched)}"
