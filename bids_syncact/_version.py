"""The release version: set here only, bumped by a commit (DESIGN.md section 7).

The package metadata (hatchling reads this file), ``bids-syncact --version``, the image tag and its
``org.opencontainers.image.version`` label (``scripts/image.sh`` reads this file),
``GeneratedBy.Version`` and the Boutiques descriptor's ``tool-version`` all come from it.
Image tags cannot hold ``+``: keep it a plain PEP 440 release or pre-release.
"""

__version__ = '0.2.0'
