# bids-syncact BIDS-App image. CPU torch by default; CUDA with --build-arg TORCH_VARIANT=cu126.
#   docker build --build-arg VERSION=$(python -c 'import bids_syncact; print(bids_syncact.__version__)') \
#       -t bids-syncact:latest .          (VERSION must be a PEP 440 version, e.g. 0.1.0)
FROM python:3.11-slim-bookworm

ARG TORCH_VARIANT=cpu
ARG VERSION=0.0.0+docker

# Weights and templates live in read-only /opt; the app points matplotlib, XDG and Deno caches
# at its work dir when they are unset or not writable. The image runs with -u $(id -u),
# --read-only --tmpfs /tmp, and under Apptainer with the host's HOME.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/opt/bids-syncact/torch \
    TEMPLATEFLOW_HOME=/opt/bids-syncact/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    HOME=/tmp \
    NIPYPE_NO_ET=1 \
    BIDS_SYNCACT_CONTAINER="docker bids-syncact:${VERSION}"

COPY . /src
# The version comes from the build argument: there is no .git in the build context.
RUN SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}" /src/scripts/install.sh --torch "${TORCH_VARIANT}" \
    && python -m bids_syncact.cli.boutiques /opt/bids-syncact/boutiques.json \
    && rm -rf /src \
    && chmod -R a+rX /opt/bids-syncact

WORKDIR /tmp
ENTRYPOINT ["bids-syncact"]
CMD ["--help"]

LABEL org.opencontainers.image.title="bids-syncact" \
      org.opencontainers.image.description="Sync-ACT: CNN units coupled with brain networks (BIDS-App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
