"""How many threads a step may use: torch's intra-op pool, and BLAS/OpenMP through threadpoolctl."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from threadpoolctl import threadpool_info, threadpool_limits


@contextlib.contextmanager
def limited_threads(n_threads: int) -> Iterator[dict[str, Any]]:
    """Limit torch, BLAS and OpenMP to ``n_threads`` inside the block; yield what is in force.

    torch's setting is restored afterwards (threadpoolctl restores its own).

    >>> with limited_threads(1) as settings:
    ...     settings['torch'], set(settings['blas'])
    (1, {1})
    """
    n_threads = max(1, int(n_threads))
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(n_threads):
            yield thread_settings()
    finally:
        torch.set_num_threads(before)


def thread_settings() -> dict[str, Any]:
    """Return the threads torch and each loaded BLAS/OpenMP library would use now."""
    pools = threadpool_info()
    return {
        'torch': torch.get_num_threads(),
        'blas': [pool['num_threads'] for pool in pools if pool['user_api'] == 'blas'],
        'openmp': [pool['num_threads'] for pool in pools if pool['user_api'] == 'openmp'],
    }
