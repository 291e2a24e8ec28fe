"""Thin Nipype interfaces: load files, call :mod:`bids_syncact.core`, save files."""

import logging
import os

# Nipype asks a server for newer versions when imported (etelemetry): never from a cluster node.
os.environ.setdefault('NIPYPE_NO_ET', '1')


def _quiet_nipype() -> None:
    """Keep Nipype's own stdout handler off the terminal (in MultiProc workers too).

    The parent re-attaches the app's handlers (the log file; stderr with -v) when it runs a
    workflow; failures reach the user through crash files and one line.
    """
    nipype_logger = logging.getLogger('nipype')
    for handler in list(nipype_logger.handlers):
        nipype_logger.removeHandler(handler)
    nipype_logger.addHandler(logging.NullHandler())
    nipype_logger.propagate = False


import nipype  # noqa: F401 - its logger exists once imported

_quiet_nipype()
