"""Sync-ACT (Synchronized Activations) as a BIDS-App.

Couples the units of a convolutional neural network with the functional brain networks that follow
them, from movie-watching fMRI preprocessed by fMRIPrep.
"""

try:
    from bids_syncact._version import __version__
except ImportError:  # a source tree that was never installed
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version('bids-syncact')
    except PackageNotFoundError:
        __version__ = '0.0.0+unknown'

__all__ = ['__version__']
