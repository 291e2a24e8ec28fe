"""The science on arrays: video, activations, sync, denoise, coupling, annotation, group.

Imports NumPy, SciPy, nilearn, PyAV and torch only: no Nipype, no pybids (import-linter checks).
"""
