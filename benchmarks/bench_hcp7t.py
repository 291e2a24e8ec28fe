"""One HCP-7T-sized subject through the whole participant level: peak memory, wall time, stages.

The subject (issue 10): 4 runs of 900 volumes at TR 1 s on the 2 mm MNI grid (the demo's
MNI152 grid and brain mask at 2 mm: 97 x 115 x 94 voxels, about 230,000 in the mask), a
15-minute movie per run (4 different movies), AlexNet's preset layers at ``--max-units 64``,
every other setting at its default (``--alpha auto``, ``simple`` confounds, all CPUs). Random
weights (``--weights none``): the same computation as the pretrained ones, which cannot be
downloaded here.

Memory is sampled every 0.5 s over the whole process tree of ``bids-syncact`` (the parent,
the forkserver and every Nipype worker): the sum of RSS, which counts a page that two
processes share twice (the memmapped BOLD read by two coupling nodes), and the sum of PSS,
which splits it between them. The target (issue 10) is peak RSS <= 6 GB. The stage breakdown
comes from the runtime Nipype records in each node's result, with the peak memory while that
stage ran.

This is a benchmark, not a test: minutes to generate the data (cached in ``--data``), then the
run itself. Usage: ``python benchmarks/bench_hcp7t.py [--data .cache/bench-hcp7t]
[--out benchmarks/results_hcp7t.json] [--mem-gb GB]``; the last results are
``results_hcp7t.json`` (defaults) and ``results_hcp7t_mem6.json`` (``--mem-gb 6``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from bids_syncact._demo import movie as demo_movie
from bids_syncact.demo import DemoSpec, blob_frames, make_dataset

SPEC = DemoSpec(subjects=('01',), runs=(1, 2, 3, 4), n_vols=900, t_r=1.0, voxel_mm=2.0,
                movie_s=900.0, movie_fps=8, natural_movie=False, planted=False)  # fmt: skip
ARGS = ('--weights', 'none', '--max-units', '64', '--skip-bids-validation')


def make_subject(root: Path) -> Path:
    """Write the subject once (cached); runs 2-4 get movies of their own."""
    bids = root / 'bids'
    if (bids / '.bids-syncact-demo.json').exists():
        return bids
    make_dataset(bids, SPEC)
    for run in SPEC.runs[1:]:
        name = f'movie-run{run}.mp4'
        frames = blob_frames(SPEC.movie_length_s, fps=SPEC.movie_fps, size=SPEC.movie_size,
                             seed=run)  # fmt: skip
        demo_movie.write_movie_file(iter(frames), bids / 'stimuli' / name, fps=SPEC.movie_fps)
        events = bids / 'sub-01' / 'func' / f'sub-01_task-movie_run-{run}_events.tsv'
        table = pd.read_csv(events, sep='\t')
        table['stim_file'] = name
        table.to_csv(events, sep='\t', index=False)
    return bids


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir('/proc'):
        if entry.name.isdigit():
            try:
                stat = Path(f'/proc/{entry.name}/stat').read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(')', 1)[1].split()[1])
            tree[ppid].append(int(entry.name))
    return tree


def _memory_kb(pid: int) -> tuple[int, int]:
    """RSS and PSS (kB) of one process; zeros when it is gone."""
    try:
        rollup = Path(f'/proc/{pid}/smaps_rollup').read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(':')[0]: int(line.split()[1]) for line in rollup[1:] if ':' in line}
    return values.get('Rss', 0), values.get('Pss', 0)


class TreeSampler(threading.Thread):
    """Sum RSS and PSS over a process and its descendants, every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, int, int, int]] = []  # time, rss, pss, processes
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tree, pids, todo = _children(), [], [self.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(tree.get(pid, []))
            rss, pss = map(sum, zip(*(_memory_kb(p) for p in pids), strict=True))
            self.samples.append((time.time(), rss, pss, len(pids)))
            self.stop.wait(self.period_s)


def stage_breakdown(work: Path, samples) -> dict[str, dict[str, float]]:
    """Per stage (node kind): nodes, summed node seconds, its span and the peak memory then."""
    from nipype.utils.filemanip import loadpkl

    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for result in work.rglob('result_*.pklz'):
        runtime = loadpkl(result).runtime
        kind = result.parent.name.split('_')[0]
        start = pd.Timestamp(runtime.startTime).timestamp()
        end = pd.Timestamp(runtime.endTime).timestamp()
        spans[kind].append((start, end))
    stages = {}
    for kind, times in sorted(spans.items(), key=lambda kv: min(s for s, _ in kv[1])):
        first, last = min(s for s, _ in times), max(e for _, e in times)
        # a node shorter than the sampling period: the samples within one period of it
        during = [s for s in samples if first - 0.5 <= s[0] <= last + 0.5] or [(0, 0, 0, 0)]
        stages[kind] = {
            'nodes': len(times),
            'node_seconds': round(sum(e - s for s, e in times), 1),
            'span_seconds': round(last - first, 1),
            'peak_rss_gb': round(max(s[1] for s in during) / 2**20, 2),
            'peak_pss_gb': round(max(s[2] for s in during) / 2**20, 2),
        }
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', type=Path, default=Path('.cache/bench-hcp7t'))
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results_hcp7t.json'))
    parser.add_argument('--timeout-s', type=float, default=None, help='stop the run then')
    parser.add_argument('--mem-gb', type=float, default=None,
                        help="passed on: the scheduler's memory budget")  # fmt: skip
    args = parser.parse_args()
    started = time.time()
    bids = make_subject(args.data)
    generation_s = time.time() - started
    out, work = args.data / 'out', args.data / 'work'
    for folder in (out, work):
        subprocess.run(['rm', '-rf', str(folder)], check=True)
    extra = ('--mem-gb', f'{args.mem_gb:g}') if args.mem_gb else ()
    command = [str(Path(sys.executable).parent / 'bids-syncact'), str(bids), str(out),
               'participant', '-w', str(work), *ARGS, *extra]  # fmt: skip
    started = time.time()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        _, err = proc.communicate(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:  # report the stages that finished
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate()
        err += f'\nstopped after --timeout-s {args.timeout_s:g}'
    wall_s = time.time() - started
    sampler.stop.set()
    sampler.join()
    samples = sampler.samples
    peak = max(samples, key=lambda s: s[1])
    size = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
    results = {
        'subject': {
            **{
                k: getattr(SPEC, k)
                for k in (
                    'runs',
                    'n_vols',
                    't_r',
                    'voxel_mm',
                    'movie_s',
                    'movie_fps',
                    'movie_size',
                )
            },
            'grid': list(_grid_shape(bids)),
            'voxels_in_mask': _in_mask(bids),
            'movies': 4,
        },
        'command': ' '.join(['bids-syncact', 'BIDS', 'OUT', 'participant', *ARGS, *extra]),
        'exit_code': proc.returncode,
        'completed': proc.returncode == 0,
        'stderr_tail': err.strip().splitlines()[-3:],
        'generation_seconds': round(generation_s, 1),
        'wall_seconds': round(wall_s, 1),
        'peak_rss_gb': round(peak[1] / 2**20, 2),
        'peak_pss_gb': round(max(s[2] for s in samples) / 2**20, 2),
        'processes_at_peak': peak[3],
        'target_peak_rss_gb': 6.0,
        'output_mb': round(size / 2**20, 1),
        'stages': stage_breakdown(work, samples),
        'machine': {
            'cpu_count': os.cpu_count(),
            'platform': platform.platform(),
            'python': platform.python_version(),
        },
    }
    args.out.write_text(json.dumps(results, indent=1) + '\n')
    print(json.dumps(results, indent=1))


def _grid_shape(bids: Path) -> tuple[int, ...]:
    import nibabel as nib

    return nib.load(next(bids.rglob('*desc-brain_mask.nii.gz'))).shape


def _in_mask(bids: Path) -> int:
    import nibabel as nib
    import numpy as np

    return int((np.asarray(nib.load(next(bids.rglob('*desc-brain_mask.nii.gz'))).dataobj) > 0)
               .sum())  # fmt: skip


if __name__ == '__main__':
    main()
