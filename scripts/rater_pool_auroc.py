#!/usr/bin/env python
"""AUROC of clean vs each planted defect for raters that already exist (issue 17): the raters that Table 1's Alchemist runs
meta-trained (`<corpus>/raters/<name>/b<batch>/rater.pt`), scored on the pool they selected from (the corpus's train split).

    python scripts/rater_pool_auroc.py --corpus synthetic --corpus_n 6000 --raters data/synthetic-16px-6000-s0/raters/*randconv*
    python scripts/rater_pool_auroc.py ... --out reports/results/rater_pool_auroc_paper.csv

Writes one row per rater and defect: corpus, rater, seed, defect, auroc, median_rank (0 = top-rated), plus a record
(command, git, date, machine, load) beside the CSV. Nothing is trained here; a rater whose checkpoint is missing is an error
that names its folder.
"""
from __future__ import annotations
import argparse, json, os, sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rater_evidence import defect_rows   # the same AUROC / median-rank rows as the evidence report


def rater_checkpoint(folder: Path) -> Path:
    "The final rater of a rater folder (`rater.pt`, directly or under its batch subfolder)."
    hits = sorted(Path(folder).glob('rater.pt')) + sorted(Path(folder).glob('b*/rater.pt'))
    if not hits: raise SystemExit(f"{folder}: no rater.pt (has its meta-training finished?)")
    return hits[0]


def seed_of(ck: Path) -> int:
    "The meta-training seed recorded beside a rater checkpoint (its `run.json`), -1 if none was recorded."
    run = Path(ck).parent/'run.json'
    return int(json.loads(run.read_text()).get('config', {}).get('seed', -1)) if run.exists() else -1


def main(argv=None):
    from alchemist.bilevel import attach_image_features, corpus_splits, score_split
    from alchemist.core import atomic_path, run_record, write_json
    from alchemist.experiments import ExperimentConfig, build_corpus
    from alchemist.rater import load_rater
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--corpus', default='synthetic'); ap.add_argument('--corpus_n', type=int, default=6000)
    ap.add_argument('--resolution', type=int, default=16); ap.add_argument('--heldout', default='clean')
    ap.add_argument('--raters', nargs='+', required=True, help='rater folders (each holding rater.pt or b<batch>/rater.pt)')
    ap.add_argument('--device', default='cpu'); ap.add_argument('--out', help='CSV to write (default: print only)')
    a = ap.parse_args(argv)
    cks = [(Path(f), rater_checkpoint(Path(f))) for f in a.raters]   # every folder checked before any scoring
    rec = run_record(vars(a), load=tuple(round(x, 2) for x in os.getloadavg()))
    corpus = build_corpus(ExperimentConfig(corpus=a.corpus, corpus_n=a.corpus_n, resolution=a.resolution))
    base = corpus_splits(corpus, a.resolution, heldout=a.heldout)
    rows = []
    for folder, ck in cks:
        rater = load_rater(ck, device=a.device)
        split = attach_image_features(base, rater.cfg, a.device, corpus/'cache')['train']
        got = defect_rows(score_split(rater, split, 256, 'paper'), split.defect, corpus=a.corpus, rater=folder.name, seed=seed_of(ck))
        rows += got
        print(f"{folder.name}: " + ', '.join(f"{x['defect']} {x['auroc']:.3f}" for x in got), flush=True)
    df = pd.DataFrame(rows)
    if a.out:
        out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp: df.to_csv(tmp, index=False)
        write_json(out.with_name(out.stem + '_records.json'), dict(run=rec, raters=[str(c) for _, c in cks]))
        print(f"wrote {out}")
    else: print(df.pivot_table(index='rater', columns='defect', values='auroc').round(3).to_string())


if __name__ == '__main__':
    main()
