#!/usr/bin/env python
"""Run every benchmark script (scripts/bench_*.py) in turn; each prints its figures and records them in reports/benchmarks/.

    python scripts/bench_all.py [--only synthetic,t2i]

The machines are shared: each script reports Timer.cpu_ratio so a contended timing can be spotted.
"""
import argparse, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', default='', help='comma-separated names (bench_<name>.py)')
    a = ap.parse_args()
    only = {s for s in a.only.split(',') if s}
    scripts = [p for p in sorted(HERE.glob('bench_*.py')) if p.name != 'bench_all.py' and (not only or p.stem[6:] in only)]
    if not scripts: sys.exit(f"no benchmark scripts matched {sorted(only)}")
    failed = []
    for p in scripts:
        print(f"\n=== {p.name}", flush=True); t0 = time.time()
        rc = subprocess.call([sys.executable, str(p)], cwd=HERE.parent)
        print(f"=== {p.name}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
        if rc: failed.append(p.name)
    if failed: sys.exit(f"failed: {failed}")
