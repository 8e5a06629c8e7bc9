#!/usr/bin/env python
"""FastGDA's evaluation of our attribution index, as its paper measures it (issue 19 item 2).

Usage:
    .venv/bin/python scripts/attribution_eval.py --profile smoke|quick|paper [--out DIR] [--work DIR] [--seeds 0 1 2]
        [--device cpu] [--set key=value ...]

Trains (or reuses) the profile's T2I model on its corpus, builds (or loads) the run's attribution index, and measures on
held-out evaluation queries (generated images of captions no calibration query shares) the mAP@k of the learned ranker,
raw feature cosine (image, caption, both), chance, the teacher recomputed and the teacher re-drawn against the gradient
teacher's top-k; storage and index-only query time of each method; the share of top-k pairs showing the query's shape and
colour; and, when the profile asks for it, the counterfactual check (retrain without the top-k pairs vs k random pairs).
All of it is `alchemist.attribution.evaluate_attribution(attribution_eval_config(profile, **overrides))`.

Profiles (`alchemist.attribution.ATTRIBUTION_EVAL_PROFILES`): `smoke` checks the pipeline in seconds; `quick` is a first
look, estimated at about ten minutes on a quiet 2-core CPU (one seed, a 2,000-pair corpus, UNet s trained 400 steps, 48
queries, 2 counterfactual queries); `paper` is the full evaluation without the counterfactual check (6,000 pairs, 1,200
steps, 3 seeds, 64 queries drawn and real): 22-36 min a seed on one core here (the counterfactual would add ~2 h a seed;
`--set n_counterfactual=8` asks for it). Each seed's finished evaluation is kept in its run folder, so seeds can run in
separate processes (`--seeds 1`, `--seeds 2`) and a last call with every seed assembles the report in seconds.

Writes (`--out DIR` puts them under DIR; the smoke profile writes under <runs>/attribution_eval/smoke/reports unless told,
so a pipeline check never overwrites a result):
- `reports/results/attribution_<profile>.csv`: one row per seed, query kind, method and k (mAP@k, shares, costs, with SEs)
- `reports/results/attribution_<profile>_counterfactual.csv`: one row per seed, query and removal (when the check runs)
- `reports/results/attribution_<profile>_records.json`: the run record (config, date, git, machine, load, per-seed runs, queries)
- `reports/attribution.md`: the tables, the record and the reading paragraph generated from the numbers.
Runs, the corpus and the indexes go under `--work` (default <runs>/attribution_eval/<profile>); a second call reuses them.
"""
from __future__ import annotations
import argparse, os, sys
from pathlib import Path


def paths(profile: str, out: str | None) -> dict:
    "Where the report, the CSVs and the record go."
    from alchemist.core import reports_dir, runs_dir
    root = Path(out) if out else runs_dir()/'attribution_eval'/'smoke'/'reports' if profile == 'smoke' else reports_dir()
    res = root/'results'
    return dict(report=root/'attribution.md', rows=res/f'attribution_{profile}.csv', counterfactual=res/f'attribution_{profile}_counterfactual.csv',
                record=res/f'attribution_{profile}_records.json')


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument('--profile', choices=('smoke', 'quick', 'paper'), default='smoke')
    ap.add_argument('--out', help='write the report and results under this folder instead of reports/')
    ap.add_argument('--work', help='corpus, runs and indexes (default <runs>/attribution_eval/<profile>)')
    ap.add_argument('--seeds', nargs='+', type=int, help="the profile's seeds by default")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='AttributionEvalConfig overrides, e.g. n_queries=32 index={"hidden":128}')
    a = ap.parse_args(argv)

    from alchemist.attribution import attribution_eval_config, attribution_report, evaluate_attribution
    from alchemist.core import ConfigError, atomic_path, parse_key_values, reports_dir, write_json
    try: over = parse_key_values(a.set, '--set')
    except ConfigError as e: ap.error(str(e))
    over.update(device=a.device, **({'seeds': a.seeds} if a.seeds else {}), **({'work_dir': a.work} if a.work else {}))
    cfg = attribution_eval_config(a.profile, **over)          # every field checked before any work
    p = paths(a.profile, a.out)
    print(f"# attribution_eval {a.profile}: {' '.join(sys.argv)}  (load {tuple(round(x, 2) for x in os.getloadavg())})", flush=True)
    res = evaluate_attribution(cfg)
    p['rows'].parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p['rows']) as tmp: res['rows'].to_csv(tmp, index=False)
    if len(res['counterfactual']):
        with atomic_path(p['counterfactual']) as tmp: res['counterfactual'].to_csv(tmp, index=False)
    write_json(p['record'], res['record'])
    text = attribution_report(res, results_path=os.path.relpath(p['rows'], p['report'].parent))
    with atomic_path(p['report']) as tmp: tmp.write_text(text + '\n')
    print(text[text.index('## Reading'):].split('\n## ')[0], flush=True)
    print(f"wrote {p['report']}, {p['rows']}" + (f", {p['counterfactual']}" if len(res['counterfactual']) else '') + f", {p['record']}")
    if p['report'].parent == reports_dir():   # the real report: the README headline carries its verdicts
        from alchemist.reports import refresh_readme_headline
        if refresh_readme_headline(): print('README.md headline updated')
    return dict(paths=p, **res)


if __name__ == '__main__':
    main()
