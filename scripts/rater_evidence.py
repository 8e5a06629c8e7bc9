#!/usr/bin/env python
"""Where do the planted defects land in a meta-trained rater's ranking? (issue 5 item 5; PAPER.md 1.2-1.4)

Usage: .venv/bin/python scripts/rater_evidence.py [--n 8000] [--resolution 16] [--seed 0] [--modes penalty unrolled alignment]
                                                  [--epochs 20] [--lr 1e-3] [--rater_lr 1e-3]

For each meta-training mode (plus `init`, the untrained rater with the same seed, as a control):
meta-train a rater on the synthetic corpus (alchemist.bilevel.meta_train; resumes if the run exists), score the train
split with the paper's protocol (alchemist.scoring.score_corpus: fixed batches of 256 in dataset order), then report
- the percentile rank (0 = top-rated) of every planted defect type (box + strip plot),
- AUROC of clean vs each defect type (P(a clean pair outscores a defective one); 0.5 = no separation, < 0.5 = the
  defect is rated *above* clean),
- the share of each defect type in each 10-point percentile band and picture grids of the bands (Fig. 5 analogue),
- Spearman between batch-relative and batch-independent scores (how batch-relative the paper's scores are),
- the defect share of the subsets that each sampler keeps at 20% retention, and a (mu, sigma) grid for Shift-Gsample.
Figures go to reports/figures/rater_*.png, tables and the run record into the auto section of reports/rater_evidence.md
(between the `auto` markers; the hand-written observations around it are kept).
"""
from __future__ import annotations
import argparse, dataclasses, json, os, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

EPOCHS: dict = {}   # mode -> what its meta-training reached (filled by train_rater)
START, END = '<!-- auto:start (scripts/rater_evidence.py rewrites this section) -->', '<!-- auto:end -->'


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    "P(score of a random `pos` > score of a random `neg`), ties count half (Mann-Whitney U / (n_pos n_neg))."
    from scipy.stats import rankdata
    s = np.r_[pos, neg]; r = rankdata(s)
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def train_rater(mode: str, corpus: Path, splits: dict, a) -> Path:
    from alchemist.bilevel import MetaConfig, meta_train, corpus_fingerprint
    from alchemist.core import config_from_dict, runs_dir
    from alchemist.rater import Rater, save_rater
    import torch
    out = runs_dir()/'evidence'/f'{corpus.name}'/f'{mode}-s{a.seed}'
    cfg = config_from_dict(MetaConfig, dict(mode='penalty' if mode == 'init' else mode, corpus=str(corpus), resolution=a.resolution,
                                            epochs=a.epochs, max_steps_per_epoch=a.max_steps, batch=a.batch, lr=a.lr, rater_lr=a.rater_lr,
                                            seed=a.seed, out_dir=str(out), device=a.device, proxy=a.proxy, proxy_size=a.proxy_size))
    if mode == 'init':        # control: the rater before any meta-training (same seed, same architecture)
        torch.manual_seed(a.seed)
        r = Rater(dataclasses.replace(cfg.rater, resolution=a.resolution, text_dim=splits['train'].pooled.shape[1]))
        EPOCHS[mode] = dict(epochs=0, steps=0, seconds=0)
        return save_rater(r, out/'rater.pt', corpus=corpus_fingerprint(cfg, splits), mode='init', epoch=-1)
    if a.reuse and (out/'rater.pt').exists():   # take the last finished epoch as it is (a run stopped at a deadline)
        h = json.loads((out/'history.json').read_text())
        print(f"  reusing {out/'rater.pt'}: {len(h)} epochs, {sum(x['steps'] for x in h)} steps, {sum(x['seconds'] for x in h):.0f}s", flush=True)
        EPOCHS[mode] = dict(epochs=len(h), steps=sum(x['steps'] for x in h), seconds=round(sum(x['seconds'] for x in h)),
                            group=round(h[-1].get('group', float('nan')), 5), w_std=h[-1].get('w_std'), l_val=round(h[-1]['l_val'], 4))
        return out/'rater.pt'
    t0 = time.perf_counter()
    res = meta_train(cfg, splits=splits)
    h = res['history']
    EPOCHS[mode] = dict(epochs=len(h), steps=sum(x['steps'] for x in h), seconds=round(sum(x['seconds'] for x in h)),
                        group=round(h[-1].get('group', float('nan')), 5), w_std=h[-1].get('w_std'), l_val=round(h[-1]['l_val'], 4))
    print(f"  meta_train {mode}: {len(res['history'])} epochs, {sum(h['steps'] for h in res['history'])} steps, "
          f"{sum(h['seconds'] for h in res['history']):.0f}s recorded ({time.perf_counter() - t0:.0f}s this call)", flush=True)
    return Path(res['rater_checkpoint'])


def band_grid(corpus: Path, df: pd.DataFrame, resolution: int, path: Path, title: str, per_band: int = 12, seed: int = 0):
    from alchemist.data import image_cache, read_manifest, save_image_grid
    man = read_manifest(corpus).reset_index(drop=True)
    pos = pd.Series(np.arange(len(man)), index=man['uid'])
    imgs = image_cache(corpus, resolution)
    rng = np.random.default_rng(seed); rows, caps, labels = [], [], []
    for b in range(10):
        band = df[(df['rank'] >= 10 * b) & (df['rank'] < 10 * b + 10 + (b == 9))]
        pick = band.iloc[np.sort(rng.choice(len(band), size=min(per_band, len(band)), replace=False))]
        comp = band['defect'].value_counts(normalize=True)
        labels.append(f"s{10 * b}-{10 * b + 10}\nclean {comp.get('clean', 0):.0%}")
        for _, r in pick.iterrows():
            rows.append(imgs[pos[r['uid']]]); caps.append(f"[{r['defect'][:9]}] {r['caption']}")
        for _ in range(per_band - len(pick)): rows.append(np.full_like(imgs[0], 255)); caps.append('')
    save_image_grid(np.stack(rows), path, captions=caps, ncol=per_band, cell=1.25, title=title, row_labels=labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=8000); ap.add_argument('--resolution', type=int, default=16)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--modes', nargs='+', default=['init', 'penalty', 'unrolled', 'alignment'])
    ap.add_argument('--epochs', type=int, default=20); ap.add_argument('--max_steps', type=int, default=0)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--rater_lr', type=float, default=1e-3)
    ap.add_argument('--proxy', default='unet'); ap.add_argument('--proxy_size', default='s')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--retention', type=float, default=0.2)
    ap.add_argument('--report', default=None, help='markdown report (default reports/rater_evidence.md)')
    ap.add_argument('--reuse', action='store_true', help='use an existing rater.pt as is, without training further epochs')
    ap.add_argument('--train_only', action='store_true', help='meta-train the raters and stop (run modes in parallel, then report)')
    a = ap.parse_args()

    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt, seaborn as sns
    from alchemist.core import config_from_dict, reports_dir, run_record, atomic_path, Timer
    from alchemist.synthetic import SyntheticConfig, build_synthetic
    from alchemist.bilevel import corpus_splits
    from alchemist.data import read_manifest, read_scores
    from alchemist.scoring import ScoringConfig, score_corpus, batch_relativity
    from alchemist.select import percentile_ranks, select_indices, SAMPLERS

    figs = reports_dir()/'figures'; figs.mkdir(parents=True, exist_ok=True)
    report = Path(a.report) if a.report else reports_dir()/'rater_evidence.md'
    rec = run_record(vars(a))
    print(f"# rater_evidence {rec['date']}  {rec['command']}  git {rec['git']}  loadavg {os.getloadavg()}", flush=True)

    scfg = SyntheticConfig(n=a.n, resolution=a.resolution, seed=a.seed)
    corpus = build_synthetic(scfg)
    man = read_manifest(corpus)
    splits = corpus_splits(corpus, a.resolution)
    print(f"corpus {corpus}: {len(man)} pairs, train {len(splits['train'])}, heldout {len(splits['heldout'])}", flush=True)

    if a.train_only:
        for mode in a.modes: print(mode, '->', train_rater(mode, corpus, splits, a), flush=True)
        return
    all_ranks, aucs, rhos, sel_rows, grid_rows, comp_rows, timings = [], [], [], [], [], [], {}
    for mode in a.modes:
        with Timer() as tm: ck = train_rater(mode, corpus, splits, a)
        timings[mode] = round(tm.wall, 1)
        cfg = config_from_dict(ScoringConfig, dict(rater=str(ck), corpus_dir=str(corpus), split='train', batch_size=256,
                                                   device=a.device, out=str(ck.parent/'scores.parquet')))
        df = read_scores(score_corpus(cfg)).merge(man[['uid', 'defect', 'caption']], on='uid', how='left')
        if df['defect'].isna().any(): raise SystemExit(f"{mode}: scored uids missing from the manifest of {corpus}")
        df['rank'] = percentile_ranks(df['score'].to_numpy())
        df['mode'] = mode
        all_ranks.append(df)
        rel = batch_relativity(config_from_dict(ScoringConfig, {**dataclasses.asdict(cfg), 'out': str(ck.parent/'rel.parquet')}))
        rhos.append(dict(mode=mode, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rel.items()}))
        clean = df.loc[df['defect'] == 'clean', 'score'].to_numpy()
        for d, g in df.groupby('defect'):
            comp_rows.append(dict(mode=mode, defect=d, n=len(g), median_rank=round(float(g['rank'].median()), 1),
                                  top10=round(float((g['rank'] < 10).mean()), 3), bottom10=round(float((g['rank'] >= 90).mean()), 3)))
            if d != 'clean': aucs.append(dict(mode=mode, defect=d, auroc=round(auroc(clean, g['score'].to_numpy()), 3)))
        s = df['score'].to_numpy(); dfl = df['defect'].to_numpy()
        for m in SAMPLERS:
            kw = dict(start=40.0) if m == 'block' else {}
            idx = select_indices(m, s, a.retention, a.seed, **kw)
            sel_rows.append(dict(mode=mode, method=m, clean=round(float((dfl[idx] == 'clean').mean()), 3),
                                 **{f'{d}': round(float((dfl[idx] == d).mean()), 3) for d in ('plain', 'chaotic', 'caption_mismatch', 'noise', 'duplicate_exact')}))
        for mu in (35, 45, 53, 60, 70, 80):
            for sg in (5, 10, 20):
                idx = select_indices('shift_gsample', s, a.retention, a.seed, mu=float(mu), sigma=float(sg))
                grid_rows.append(dict(mode=mode, mu=mu, sigma=sg, clean=float((dfl[idx] == 'clean').mean())))
        band_grid(corpus, df, a.resolution, figs/f'rater_bands_{mode}.png',
                  title=f'{mode}: random pairs from each percentile band of the rating (s0 = top-rated); [planted defect] caption')
        print(f"{mode}: scored {len(df)}; median rank by defect: " +
              ', '.join(f"{d} {g['rank'].median():.0f}" for d, g in df.groupby('defect')), flush=True)

    ranks = pd.concat(all_ranks, ignore_index=True)
    auc = pd.DataFrame(aucs).pivot(index='defect', columns='mode', values='auroc')[a.modes]
    comp = pd.DataFrame(comp_rows)
    sel = pd.DataFrame(sel_rows)
    grid = pd.DataFrame(grid_rows).pivot_table(index=['mode', 'sigma'], columns='mu', values='clean').round(3)
    rho = pd.DataFrame(rhos)
    order = ['clean'] + sorted(set(ranks['defect']) - {'clean'})
    # figure 1: percentile rank per defect type, one panel per mode
    g = sns.catplot(ranks, x='rank', y='defect', col='mode', col_wrap=2, kind='box', order=order, col_order=a.modes,
                    height=3.6, aspect=1.25, fliersize=0, color='#cfe0f0', linewidth=0.8)
    for ax, m in zip(g.axes.flat, a.modes):
        sub = pd.concat([x.sample(min(len(x), 60), random_state=0) for _, x in ranks[ranks['mode'] == m].groupby('defect')])
        sns.stripplot(sub, x='rank', y='defect', order=order, ax=ax, size=1.6, color='k', alpha=0.5, jitter=0.25)
        ax.axvline(50, color='grey', lw=0.5, ls='--'); ax.set_xlim(0, 100); ax.set_xlabel('percentile rank (0 = top-rated)')
    g.figure.suptitle(f'where planted defects land in the rating (synthetic {a.resolution}px, n={a.n}, seed {a.seed})', y=1.02)
    with atomic_path(figs/'rater_ranks.png') as tmp: g.figure.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    plt.close(g.figure)
    # figure 2: AUROC heat map
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(a.modes), 4.2))
    sns.heatmap(auc, annot=True, fmt='.2f', cmap='RdBu', vmin=0, vmax=1, center=0.5, ax=ax, cbar_kws=dict(label='AUROC clean > defect'))
    ax.set_title('AUROC of clean vs each defect type\n(> 0.5: clean rated higher)')
    fig.tight_layout()
    with atomic_path(figs/'rater_auroc.png') as tmp: fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)
    # figure 3: defect share per 10-point band
    ranks['band'] = np.minimum(ranks['rank'] // 10, 9).astype(int) * 10
    share = ranks.groupby(['mode', 'band'])['defect'].value_counts(normalize=True).rename('share').reset_index()
    fig, axes = plt.subplots(1, len(a.modes), figsize=(3.2 * len(a.modes) + 1.5, 3.4), sharey=True, squeeze=False)
    pal = dict(zip(order, sns.color_palette('tab20', len(order))))
    for ax, m in zip(axes[0], a.modes):
        p = share[share['mode'] == m].pivot(index='band', columns='defect', values='share').reindex(columns=order).fillna(0)
        p.plot.bar(stacked=True, ax=ax, color=[pal[c] for c in p.columns], width=0.9, legend=False)
        ax.set(title=m, xlabel='band start (percentile, 0 = top)', ylabel='share of band')
    axes[0][-1].legend(order, fontsize=6, bbox_to_anchor=(1.02, 1), loc='upper left')
    fig.tight_layout()
    with atomic_path(figs/'rater_band_composition.png') as tmp: fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)

    med = comp.pivot(index='defect', columns='mode', values='median_rank')[a.modes]
    auto = [START, '', f"Run: `{rec['command']}` — {rec['date']}, git `{rec['git']}`, machine {rec['machine']['platform']} "
            f"({rec['machine']['cpu_count']} cores, torch {rec['machine']['torch']}), load average at start {tuple(round(x, 1) for x in os.getloadavg())}.",
            f"Corpus `{corpus.name}` ({len(man)} pairs; train split scored: {len(all_ranks[0])}); wall seconds per mode (meta-training, incl. resume) {timings}.",
            '', '### Meta-training reached (last epoch: mean batch scalar g of the Group MLP, std of the weights W, held-out loss)', '',
            pd.DataFrame(EPOCHS).T.to_markdown(),
            '', '### Median percentile rank per defect type (0 = top-rated, 50 = middle)', '', med.to_markdown(), '',
            '### AUROC clean vs defect (P(clean pair outscores the defective one); < 0.5 = the defect is rated higher)', '', auc.to_markdown(), '',
            '### Share of each type in the top and bottom 10% of the ranking', '',
            comp.pivot(index='defect', columns='mode', values='top10')[a.modes].add_suffix(' top10').join(
                comp.pivot(index='defect', columns='mode', values='bottom10')[a.modes].add_suffix(' bottom10')).to_markdown(), '',
            '### Batch relativity (Spearman between orderings of the same rater)', '', rho.to_markdown(index=False), '',
            f'### Defect shares of the subsets each sampler keeps at {a.retention:.0%} retention', '', sel.to_markdown(index=False), '',
            f'### Shift-Gsample (mu, sigma) grid: clean share of the kept {a.retention:.0%} (n = default_shift = {25}%)', '', grid.to_markdown(), '',
            'Figures: `figures/rater_ranks.png`, `figures/rater_auroc.png`, `figures/rater_band_composition.png`, '
            + ', '.join(f'`figures/rater_bands_{m}.png`' for m in a.modes) + '.', '', END]
    auto = '\n'.join(auto)
    text = report.read_text() if report.exists() else f"# Where planted defects land in the rating\n\n{START}\n{END}\n"
    if START in text and END in text: text = text[:text.index(START)] + auto + text[text.index(END) + len(END):]
    else: text = text + '\n' + auto + '\n'
    with atomic_path(report) as tmp: tmp.write_text(text)
    print(auto)


if __name__ == '__main__':
    main()
