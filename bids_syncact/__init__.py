"""Sync-ACT (Synchronized Activations) as a BIDS-App.

Couples the units of a convolutional neural network with the functional brain networks that follow
them, from movie-watching fMRI preprocessed by fMRIPrep.
"""

from bids_syncact._version import __version__

__all__ = ['__version__']
