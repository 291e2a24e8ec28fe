# bids-syncact BIDS-App image (DESIGN.md section 7). `make image` builds it with docker, or with
# podman where there is no docker engine, and tags it localhost/bids-syncact:<version> and :latest,
# the version read from bids_syncact/_version.py (also the org.opencontainers.image.version label).
# By hand (BuildKit, for RUN --mount):
#   docker build -t bids-syncact:latest --label org.opencontainers.image.version="$(sed -n \
#       "s/^__version__ = '\(.*\)'/\1/p" bids_syncact/_version.py)" .
# Build arguments:
#   BASE_IMAGE       a Debian-based image with python3 >= 3.11 and its venv module; the podman build
#                    on machines without an image registry uses a debootstrap stand-in
#                    (scripts/podman-base.sh)
#   TORCH_VARIANT    cpu (default): the PyTorch CPU index; cu126, cu128, ...: CUDA builds; pypi: the
#                    configured package index (a CUDA build with its libraries, several GB)
#   FETCH_RESOURCES  1 (default): download the preset CNNs' pretrained weights and the TemplateFlow
#                    files into the image; 0: resolve and list them only (offline builds: that image
#                    needs --weights none|PATH and --reference-networks seitzman2018|PATH)
#   PIP_CERT         a CA bundle for pip inside RUN steps, mounted by the build command (podman
#                    build -v); empty (default): pip's own
#
# Two layers over the base (dependencies, then the package), every instruction that makes no files
# before them: podman's vfs driver stores each layer, and each build step's container, as a whole
# copy of the file system. scripts/image.sh builds the deps stage with podman's layer cache, then
# the last stage (from its `FROM deps` line on) without it, as one step (podman's cache does not
# look into bind mounts: the last stage is always rebuilt there; docker's BuildKit caches it by
# the mounted content).
ARG BASE_IMAGE=python:3.11-slim-bookworm
# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS deps

ARG TORCH_VARIANT=cpu
ARG PIP_CERT=

# Weights and templates live in read-only /opt; the app points matplotlib, XDG and Deno caches
# at its work dir when they are unset or not writable. The image runs with -u $(id -u),
# --read-only --tmpfs /tmp, and under Apptainer with the host's HOME. The virtual environment
# works on both bases (Debian's python3 is externally managed, PEP 668).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/opt/bids-syncact/torch \
    TEMPLATEFLOW_HOME=/opt/bids-syncact/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    HOME=/tmp \
    NIPYPE_NO_ET=1 \
    BIDS_SYNCACT_CONTAINER=docker
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /tmp
ENTRYPOINT ["bids-syncact"]
CMD ["--help"]
LABEL org.opencontainers.image.title="bids-syncact" \
      org.opencontainers.image.description="Sync-ACT: CNN units coupled with brain networks (BIDS-App)" \
      org.opencontainers.image.source="https://github.com/bids-syncact/bids-syncact" \
      org.opencontainers.image.licenses="Apache-2.0"

# Dependencies first, from pyproject.toml alone: a source change does not reinstall torch.
COPY pyproject.toml /src/pyproject.toml
COPY scripts/install.sh /src/scripts/install.sh
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi \
    && python3 -m venv /opt/venv \
    && /src/scripts/install.sh --python /opt/venv/bin/python --torch "${TORCH_VARIANT}" --deps-only \
    && rm -rf /src

FROM deps
ARG FETCH_RESOURCES=1
ARG PIP_CERT=
# The source is bind-mounted (read-only), not copied: no layer holds it, and pip builds the
# wheel from it in place (hatchling writes nothing into the tree).
RUN --mount=type=bind,source=.,target=/mnt/src \
    if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi \
    && if [ "${FETCH_RESOURCES}" = 0 ]; then set -- --offline; fi \
    && /mnt/src/scripts/install.sh --python /opt/venv/bin/python "$@" \
    && mkdir -p /opt/bids-syncact \
    && python -m bids_syncact.cli.boutiques /opt/bids-syncact/boutiques.json \
    && chmod -R a+rX /opt/bids-syncact
