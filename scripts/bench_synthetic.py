#!/usr/bin/env python
"""Throughput of the synthetic generator (alchemist.synthetic.generate_samples), optionally also of writing the corpus.

    .venv/bin/python scripts/bench_synthetic.py                 # 20k samples at 32 px, 3 repeats
    .venv/bin/python scripts/bench_synthetic.py --n 5000 --resolution 64 --write

Prints samples/s per repeat (wall and per CPU-second), the median, and Timer.cpu_ratio (near 1 means the
single-threaded generator had a core to itself; the box is shared)."""
import argparse, os, statistics, tempfile
from pathlib import Path

from alchemist.core import Timer, machine_info
from alchemist.synthetic import SyntheticConfig, build_synthetic, generate_samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=20000, help='samples per repeat')
    ap.add_argument('--resolution', type=int, default=32, choices=(16, 32, 64))
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--write', action='store_true', help='also time build_synthetic (png + tar shards + manifest) once')
    a = ap.parse_args(argv)
    os.environ.setdefault('ALCHEMIST_PROGRESS', '0')
    print(f"machine: {machine_info()}  loadavg(1,5,15 min): {os.getloadavg()}")
    rates = []
    for r in range(a.repeats):
        cfg = SyntheticConfig(n=a.n, resolution=a.resolution, seed=a.seed + r)
        with Timer() as t:
            k = sum(1 for _ in generate_samples(cfg))
        rates.append(k / t.wall)
        print(f"generate n={k} res={a.resolution}: {t.wall:.2f} s wall, {k / t.wall:.0f} samples/s, "
              f"{k / max(t.cpu, 1e-9):.0f} samples per CPU-second, cpu_ratio {t.cpu_ratio:.2f}")
    print(f"median: {statistics.median(rates):.0f} samples/s -> {a.n} samples in {a.n / statistics.median(rates):.1f} s")
    if a.write:
        with tempfile.TemporaryDirectory() as d, Timer() as t:
            build_synthetic(SyntheticConfig(n=a.n, resolution=a.resolution, seed=a.seed), Path(d)/'bench')
        print(f"build_synthetic n={a.n}: {t.wall:.2f} s wall, {a.n / t.wall:.0f} samples/s, cpu_ratio {t.cpu_ratio:.2f}")


if __name__ == '__main__':
    main()
