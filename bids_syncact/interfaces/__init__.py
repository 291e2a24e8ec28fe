"""Thin Nipype interfaces: load files, call :mod:`bids_syncact.core`, save files."""

import os

# Nipype asks a server for newer versions when imported (etelemetry): never from a cluster node.
os.environ.setdefault('NIPYPE_NO_ET', '1')
