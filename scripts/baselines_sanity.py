"""Sanity checks of every baseline scorer on the synthetic corpus (planted defects = ground truth).

Prints, per baseline: AUROC of clean-vs-defect (P(score of a clean row > score of a defect row); > 0.5 = the
defect is ranked low), the defect rate of the top-50% subset, SemDeDup's duplicate handling, the attribution
ranker's mAP@k, and wall times with Timer.cpu_ratio (the box is shared).

    .venv/bin/python scripts/baselines_sanity.py --n 2000 --resolution 32 --seed 0
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    "P(a random positive scores above a random negative), ties counted half."
    from scipy.stats import rankdata
    if not len(pos) or not len(neg): return float('nan')
    r = rankdata(np.r_[pos, neg]); return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2000); ap.add_argument('--resolution', type=int, default=32)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--baselines', default='clarity,frequency,edge_density,clip_score,aesthetic,semdedup,curator,fastgda')
    ap.add_argument('--clip-steps', type=int, default=300); ap.add_argument('--t2i-steps', type=int, default=200)
    ap.add_argument('--t2i-resolution', type=int, default=16, help='curator/fastgda work at this resolution (cheaper)')
    ap.add_argument('--items', type=int, default=256); ap.add_argument('--queries', type=int, default=32)
    ap.add_argument('--out', default=''); ap.add_argument('--rebuild', action='store_true')
    a = ap.parse_args(argv)
    from alchemist.core import Timer, config_from_dict, data_dir, run_record
    from alchemist.synthetic import SyntheticConfig, build_synthetic
    from alchemist.baselines import BaselineConfig, score_baseline
    corpus = data_dir() / f'baselines-sanity-synthetic-{a.resolution}px-{a.n}-s{a.seed}'
    if not (corpus / 'manifest.parquet').exists() or a.rebuild:   # built once, then frozen (the generator may change under us)
        build_synthetic(SyntheticConfig(n=a.n, resolution=a.resolution, seed=a.seed), out_dir=corpus, overwrite=True)
    from alchemist.data import read_manifest
    man = read_manifest(corpus).set_index('uid')
    from alchemist.data import corpus_info
    gen = corpus_info(corpus).get('record', {})
    print(f"# baselines sanity  {run_record(None)['date']}  git {run_record(None)['git']}  corpus {corpus}  n={a.n} res={a.resolution} seed={a.seed}")
    print(f"# corpus built {gen.get('date')} at git {gen.get('git')}")
    print(f"# command: {' '.join(sys.argv)}")
    rows, extra, shared = [], {}, {}
    names = a.baselines.split(',')
    if {'curator', 'fastgda'} & set(names):   # one T2I model trained on the pool (alchemist.train, cached in its run folder), read by both
        from alchemist.curator import curator_train_config
        from alchemist.train import load_checkpoint, load_trained, train
        tcfg = config_from_dict(BaselineConfig, dict(resolution=a.t2i_resolution, seed=a.seed, curator=dict(train_steps=a.t2i_steps)))
        with Timer() as t: run = train(curator_train_config(corpus, tcfg))
        shared['model'] = load_trained(run['run_dir'], device=tcfg.device)
        l = [h[1] for h in load_checkpoint(run['run_dir'])['history']]
        extra['t2i'] = dict(steps=a.t2i_steps, run_dir=run['run_dir'], wall_s=round(t.wall, 1), cpu_ratio=round(t.cpu_ratio, 2),
                            loss_first20=float(np.mean(l[:20])), loss_last20=float(np.mean(l[-20:])))
        print('t2i', json.dumps(extra['t2i']), flush=True)
    for name in names:
        res = a.t2i_resolution if name in ('curator', 'fastgda') else a.resolution
        cfg = config_from_dict(BaselineConfig, dict(resolution=res, seed=a.seed, clip_steps=a.clip_steps,
                                                    curator=dict(train_steps=a.t2i_steps),
                                                    attribution=dict(train_steps=a.t2i_steps, n_train_items=a.items, n_queries=a.queries)))
        kw = {'model': shared['model']} if name in ('curator', 'fastgda') else {}
        with Timer() as t: sc = score_baseline(name, corpus, cfg, **kw)
        rec = json.loads((Path(corpus) / 'scores' / f'{name}.json').read_text())
        tab = man.join(sc.set_index('uid'), how='inner')
        clean = tab.score[tab.defect == 'clean'].to_numpy()
        row = dict(baseline=name, n=len(tab), wall_s=round(t.wall, 1), cpu_ratio=round(t.cpu_ratio, 2))
        for d in sorted(set(tab.defect) - {'clean'}): row[d] = round(auroc(clean, tab.score[tab.defect == d].to_numpy()), 3)
        top = tab.sort_values('score', ascending=False, kind='stable').iloc[:len(tab) // 2]
        row['defect_rate_all'] = round(float((tab.defect != 'clean').mean()), 3)
        row['defect_rate_top50'] = round(float((top.defect != 'clean').mean()), 3)
        rows.append(row)
        if name == 'semdedup':
            kept = tab.score >= 1; g = tab.groupby('group_id')
            multi = g.size()[g.size() > 1].index
            per = kept[tab.group_id.isin(multi)].groupby(tab.group_id[tab.group_id.isin(multi)]).sum()
            singles = tab[~tab.group_id.isin(multi)]
            extra['semdedup'] = dict(kept=int(kept.sum()), dropped=int((~kept).sum()), planted_groups=len(multi),
                                     groups_reduced_to_one=int((per == 1).sum()), groups_all_kept=int((per == g.size()[per.index]).sum()),
                                     singleton_rows_dropped=int((singles.score < 1).sum()), singleton_rows=len(singles))
        if name in ('fastgda', 'curator', 'aesthetic', 'clip_score'):
            extra[name] = {k: v for k, v in rec.items() if k not in ('config', 'machine', 'command', 'git', 'date', 'baseline', 'n')}
        print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows).set_index('baseline')
    print('\n## AUROC clean vs defect (> 0.5 = defect ranked low), defect rate of top 50%, timing\n')
    print(df.T.to_markdown() if hasattr(df, 'to_markdown') else df.T.to_string())
    print('\n## extra\n'); print(json.dumps(extra, indent=1, default=str))
    if a.out: Path(a.out).write_text(json.dumps(dict(rows=rows, extra=extra, args=vars(a)), indent=1, default=str))


if __name__ == '__main__':
    main()
