"""Thin Nipype interfaces: load files, call :mod:`bids_syncact.core`, save files."""
