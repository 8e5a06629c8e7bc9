#!/usr/bin/env python
"""Execute the notebooks and store their outputs: the stored outputs are the documentation.

Runs each notebook's cells in order, as `nbdev_test` does, in a fresh process per notebook, and writes the outputs
back into the notebook (then `nbdev_clean` keeps them: `clear_all = False` in settings.ini). Cells flagged `#| slow`
or `#| notest` (and `#| eval: false`) are not run and keep the outputs they already have; `--slow` runs the slow
cells too (minutes to hours; they may rewrite the reports they produce, e.g. `reports/oracle.md`).

    python scripts/run_notebooks.py                    # every module notebook and index.ipynb, fast cells only
    python scripts/run_notebooks.py --only 05_t2i,09_select
    python scripts/run_notebooks.py --only 02b_oracle --slow
"""
import argparse, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_FLAGS = {'slow', 'notest'}


def directives(source: str) -> dict:
    "nbdev cell directives of a cell (`#| slow`, `#| eval: false`) as {name: [args]}."
    out = {}
    for line in source.splitlines():
        s = line.strip()
        if not s.startswith('#|'): continue
        parts = s[2:].split()
        if parts: out[parts[0].rstrip(':')] = parts[1:]
    return out


def skipped(source: str, run_slow: bool = False) -> bool:
    "Whether a code cell is left alone: a skip flag (unless `run_slow`), `eval: false`, or an export call."
    d = directives(source)
    flags = SKIP_FLAGS - ({'slow'} if run_slow else set())
    return bool(flags & d.keys()) or d.get('eval', [''])[0].lower() == 'false' or 'nbdev_export(' in source


def run_one(path: Path, run_slow: bool = False) -> None:
    "Execute `path` in this process and write its outputs back (the child side of `main`)."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)
    def pre(cell):
        if cell.cell_type != 'code' or skipped(cell.source, run_slow): return True
        cell.outputs = []   # a cell that prints nothing now must not keep an old output
        return False
    shell = CaptureShell(path)
    os.chdir(path.parent)
    shell.run_all(nb, exc_stop=True, preproc=pre)
    write_nb(nb, path)


def notebooks(only: list | None) -> list[Path]:
    nbs = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if p.name[:2].isdigit() or p.name == 'index.ipynb')
    if only:
        missing = set(only) - {p.stem for p in nbs}
        if missing: sys.exit(f"error: no notebook {sorted(missing)} in nbs/")
        nbs = [p for p in nbs if p.stem in only]
    return nbs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', default='', help='comma-separated notebook stems (default: all)')
    ap.add_argument('--slow', action='store_true', help='run the #| slow cells too')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        run_one(Path(a.child), a.slow); return 0
    env = dict(os.environ, ALCHEMIST_PROGRESS='0', ALCHEMIST_ROOT=str(ROOT))
    failed = []
    for p in notebooks([s for s in a.only.split(',') if s]):
        t0 = time.time()
        r = subprocess.run([sys.executable, __file__, '--child', str(p)] + (['--slow'] if a.slow else []), env=env,
                           capture_output=True, text=True)
        status = 'ok' if r.returncode == 0 else 'FAILED'
        print(f"{status:6s} {p.name} ({time.time() - t0:.0f} s)", flush=True)
        if r.returncode: failed.append(p.name); print(r.stderr[-3000:], file=sys.stderr)
        else: subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(p)], cwd=ROOT, check=True)
    if failed: print(f"failed: {', '.join(failed)} (their outputs were not written)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
