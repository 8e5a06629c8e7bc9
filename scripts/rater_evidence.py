#!/usr/bin/env python
"""Does a meta-trained rater find the planted defects? A grid of meta-training modes x rater inputs x seeds (issue 17 item 6).

Usage:
    .venv/bin/python scripts/rater_evidence.py --profile smoke|quick|paper
        [--corpora synthetic web-planted] [--corpus_n N] [--modes init penalty ...] [--inputs pixels+pooled ...]
        [--seeds 0 1 2] [--heldout clean] [--set key=value ...] [--device cpu]
        [--results FILE] [--report FILE] [--figures DIR] [--runs DIR] [--out DIR] [--no_signals] [--no_fit] [--fit_only] [--plan]

For each corpus (`alchemist.experiments.build_corpus(ExperimentConfig(corpus=..., corpus_n=..., resolution=...))`), mode
variant (`VARIANTS`), rater input (`<image>+<text>`, `alchemist.rater.rater_inputs`) and seed: meta-train a rater
(`alchemist.bilevel.meta_train`, every variant at the same `meta_steps` budget; a finished run is reused, an unfinished one
resumed), score the train split with the paper's protocol (`alchemist.bilevel.score_split`: fixed batches of 256 in split
order, softmax x |B| x g), and measure for each planted defect the AUROC of clean vs that defect (P(a clean pair outscores a
defective one); 0.5 = no separation, < 0.5 = the defect is rated above clean) and the median percentile rank of its pairs
(0 = top-rated). `init` is the control: the same rater before any meta-training. The other control, `signal:<name>` with
inputs `warm-proxy`, reads the warm proxy's own per-sample signals (`alchemist.bilevel.proxy_signals`: gradient alignment
with the reference, conditioning gain, low loss): what the meta-gradient has to teach. The third, `fit:<name>` (`fit_rows`), is its supervised upper bound: the same rater
architecture and inputs fitted directly to that signal on half of the train split and scored on the other half.

Writes (paths can be redirected with the flags: `--out DIR` puts all three under DIR; `smoke` is for checking the pipeline,
not for results, and writes under `<runs>/evidence/smoke/reports/` unless told otherwise):
- `reports/results/rater_auroc_<profile>.csv`: corpus, mode, inputs, seed, defect, auroc, median_rank
- `reports/results/rater_auroc_<profile>_records.json`: the run record of every rater (config, seed, command, date, machine,
  load average, cpu/wall seconds, the warm proxy's measurement, meta-steps done and the rank-stability trace)
- `reports/figures/rater_auroc_<profile>.png`, `reports/figures/rater_stability_<profile>.png`
- the section of `reports/rater_evidence.md` between the `auto` markers (hand-written text around it is kept).
"""
from __future__ import annotations
import argparse, dataclasses, json, os, sys, time
from pathlib import Path

import numpy as np
import pandas as pd

START, END = '<!-- auto:start (scripts/rater_evidence.py rewrites this section) -->', '<!-- auto:end -->'

# Mode variants: every one runs at the profile's meta_steps budget. `init` is the untrained rater (the control).
VARIANTS = {
    'init': None,
    'penalty': dict(mode='penalty'),                                              # the released code: the paper-faithful row
    'penalty-centered': dict(mode='penalty', rater_signal='centered'),            # ... with its Group-MLP collapse fixed
    'unrolled': dict(mode='unrolled', inner_steps=1, outer='conditional'),        # DataRater style, K = 1
    'unrolled-k2': dict(mode='unrolled', inner_steps=2, outer='conditional'),     # K = 2
    'alignment': dict(mode='alignment', outer='conditional', align_normalize=True),  # Ren et al., cosine alignment
    'alignment-rank': dict(mode='alignment', outer='conditional', align_normalize=True, align_distill='rank'),  # ... the rater fitted to ranks (ours)
    'alignment-rank-gain': dict(mode='alignment', outer='conditional', align_normalize=True, align_distill='rank_gain'),  # ... to ranks of alignment and conditioning gain (ours)
}
SIGNAL_TIMESTEPS = 8   # fixed stratified timesteps of the warm proxy's per-sample signals (issue 17's table used 8)
ALL_INPUTS = ('pixels+pooled', 'pixels+tokens', 'randconv+pooled', 'effnet+pooled', 'effnet+tokens')

# Sizes. `meta` holds MetaConfig fields shared by every run of the profile (the variant's fields go on top), `rater` RaterConfig fields.
# quick and paper start from alchemist.bilevel.LEARNING; their learning rates are our choice (not tuned): the proxy keeps the
# paper's 1e-4 (it starts warm), the rater gets 1e-3 (thousands of meta-steps, not the paper's tens of thousands).
PROFILES = {
    'smoke': dict(corpora=['synthetic'], corpus_n=600, resolution=16, seeds=[0], modes=['init', 'penalty', 'unrolled', 'alignment'],
                  inputs=['pixels+pooled', 'effnet+tokens'],
                  meta=dict(proxy='unet', proxy_size='s', proxy_kwargs=dict(channels=[16, 32]), batch=16, meta_steps=4, log_every=2,
                            warm_steps=20, warm_batch=32, warm_probe=24, population=2, reset_every=2, timesteps='stratified', strata=2,
                            probe_n=64, lr=1e-3, rater_lr=1e-3),
                  rater=dict(width=16, depth=2, effnet_size=64), fit_steps=20),
    # quick: about an hour of CPU (`--plan`): one corpus, one seed, the three modes and the two clean image inputs, a smaller
    # population and budget than LEARNING. A first look, not evidence.
    'quick': dict(corpora=['synthetic'], corpus_n=2000, resolution=16, seeds=[0], modes=['init', 'penalty-centered', 'unrolled', 'alignment'],
                  inputs=['pixels+pooled', 'randconv+pooled'],
                  meta=dict(learning=True, meta_steps=300, log_every=30, warm_steps=600, population=2, reset_every=150, strata=2, batch=32,
                            probe_n=512, lr=1e-4, rater_lr=1e-3),
                  rater=dict(effnet_size=96)),
    'paper': dict(corpora=['synthetic', 'web-planted'], corpus_n=6000, resolution=16, seeds=[0, 1, 2], modes=list(VARIANTS),
                  inputs=list(ALL_INPUTS),
                  meta=dict(learning=True, batch=64, lr=1e-4, rater_lr=1e-3),
                  rater=dict(effnet_size=224)),
}

# The cost model of `--plan` (estimates, not measurements of the runs): cpu-seconds of one population member's meta-step with
# the UNet 's' proxy at 16 px, batch 64, 4 stratified timesteps, one torch thread, measured on this 2-core box on 2026-12-02
# (median of 2 `MetaState.step` calls, `time.process_time`, beside the regime sweep). Scaled linearly in batch x timesteps
# x pixels (the fixed overheads make that an underestimate for 1-2 timesteps); other proxy sizes are not measured.
STEP_COST = dict(penalty=2.47, alignment=3.36, unrolled=5.34)   # + 4.23 per extra inner step (K = 2: 9.57)
UNROLLED_EXTRA_K, PLAIN_STEP, SIGNAL_ROW = 4.23, 0.30, 0.14     # a warm-up step (batch 64, 1 timestep); proxy_signals per row (8 timesteps)


def run_cost(cfg) -> float:
    "Estimated cpu-seconds of `meta_train(cfg)` at its full `meta_steps` budget (no early stop), from the cost model above."
    base = STEP_COST[cfg.mode] + (UNROLLED_EXTRA_K * (cfg.inner_steps - 1) if cfg.mode == 'unrolled' else 0)
    S = cfg.strata if cfg.timesteps == 'stratified' else 1
    steps = cfg.meta_steps or cfg.epochs * 10   # an epochs budget: ~10 steps a pass (the clean reference of a 6k corpus at batch 32)
    return base * cfg.batch / 64 * S / 4 * (cfg.resolution / 16) ** 2 * cfg.population * steps


def plan(prof: dict, a, runs: Path) -> str:
    "The runs a profile makes, which are done, and their estimated CPU time (`--plan`: nothing is trained)."
    rows, warm = [], 0.0
    for c in prof['corpora']:
        label = Path(c).name
        for seed in prof['seeds']:
            trained = [v for v in prof['modes'] if VARIANTS[v]]
            if trained:
                cfg = meta_config(prof, trained[0], prof['inputs'][0], seed, Path(c), a, runs)
                if cfg.warm_steps:
                    warm += cfg.warm_steps * PLAIN_STEP * cfg.warm_batch / 64 * (cfg.resolution / 16) ** 2
                    if not a.no_signals: warm += SIGNAL_ROW * 0.8 * prof['corpus_n'] * (cfg.resolution / 16) ** 2
            for inputs in prof['inputs']:
                for v in prof['modes']:
                    out = runs/label/f'{v}-{inputs}-s{seed}'
                    cfg = meta_config(prof, v, inputs, seed, Path(c), a, out)
                    done = (out/'done.json').exists()
                    rows.append(dict(corpus=label, mode=v, inputs=inputs, seed=seed, done=done,
                                     cpu_h=0.0 if (done or not VARIANTS[v]) else run_cost(cfg) / 3600))
    df = pd.DataFrame(rows)
    by = df.groupby(['mode', 'inputs']).agg(runs=('seed', 'size'), done=('done', 'sum'), cpu_h=('cpu_h', 'sum')).round(1)
    total = df.cpu_h.sum() + warm / 3600
    proxy = '' if (cfg.proxy_size == 's' and not cfg.proxy_kwargs) else f' (proxy {cfg.proxy_size} {cfg.proxy_kwargs}: scaled from the UNet s costs, unmeasured)'
    return '\n'.join([f"plan of profile {a.profile}: {len(df)} runs over corpora {prof['corpora']}, seeds {prof['seeds']}{proxy}", '',
                      by.to_markdown(), '',
                      f"warm-ups and proxy signals: {warm / 3600:.1f} cpu-h; total still to run: {total:.1f} cpu-h at full budgets "
                      f"(the rank-stability stop can end runs early), about {total / 1.6:.1f} h of wall time on 2 cores at cpu/wall 1.6 "
                      "(one process, torch using both cores; the script runs the grid in sequence)."])


def meta_config(prof: dict, variant: str, inputs: str, seed: int, corpus: Path, a, out: Path):
    from alchemist.bilevel import LEARNING, MetaConfig
    from alchemist.core import config_from_dict
    from alchemist.rater import rater_inputs
    meta = dict(prof['meta']); learning = meta.pop('learning', False)
    from alchemist.core import ConfigError, parse_key_values
    try: over = parse_key_values(a.set, '--set')
    except ConfigError as e: raise SystemExit(str(e))
    rater = dict(prof.get('rater', {}), **{k[6:]: v for k, v in over.items() if k.startswith('rater.')}, **rater_inputs(inputs))
    var = VARIANTS[variant] or dict(mode='penalty')
    d = {**(LEARNING if learning else {}), **meta, **var, **{k: v for k, v in over.items() if not k.startswith('rater.')},
         'corpus': str(corpus), 'resolution': prof['resolution'], 'heldout': a.heldout, 'seed': seed, 'device': a.device,
         'rater': rater, 'out_dir': str(out)}
    if var['mode'] == 'penalty': d.pop('outer', None); d.pop('align_normalize', None)
    if variant == 'init': d.update(warm_steps=0, population=1, reset_every=0)   # the control trains nothing
    return config_from_dict(MetaConfig, d, where=f'MetaConfig of {variant} {inputs} seed {seed}')


def init_rater(cfg, splits, out: Path) -> Path:
    "The control: the rater `meta_train` would start from (same seed, same architecture), saved untrained."
    from alchemist.bilevel import corpus_fingerprint
    from alchemist.core import seed_everything
    from alchemist.rater import Rater, save_rater
    seed_everything(cfg.seed)
    r = Rater(dataclasses.replace(cfg.rater, resolution=cfg.resolution, text_dim=splits['train'].pooled.shape[1]))
    return save_rater(r, out/'rater.pt', corpus=corpus_fingerprint(cfg, splits), mode='init', epoch=-1)


def signal_rows(prof, seed, corpus, label, base, a, runs) -> tuple:
    """The control from the other side: AUROC of the warm proxy's own per-sample signals (`alchemist.bilevel.proxy_signals`:
    alignment, conditioning gain, low loss), i.e. what the meta-gradient could teach the rater. The warm proxy is the fully
    warmed member of the runs' population (the same cache key: it trains once). Returns (rows, record, signals); None for the
    last two when the profile has no warm proxy."""
    from alchemist.bilevel import proxy_signals, warm_proxy
    from alchemist.core import Timer, atomic_path, config_to_dict
    from alchemist.train import load_trained
    trained = [v for v in prof['modes'] if VARIANTS[v]]
    if not trained: return [], None, None
    cfg = meta_config(prof, trained[0], prof['inputs'][0], seed, corpus, a, runs/label/f'signals-s{seed}')
    if not cfg.warm_steps: return [], None, None
    load = tuple(round(x, 2) for x in os.getloadavg())
    with Timer() as tm:
        w = warm_proxy(cfg, base)
        cache = Path(cfg.out_dir)/f"signals-{w['key']}-t{SIGNAL_TIMESTEPS}.npz"   # one per warm proxy: a re-run only reads it
        hit = cache.exists()
        if hit: sig = dict(np.load(cache))
        else:
            sig = proxy_signals(load_trained(w['dir'], device=a.device), base['train'], base['heldout'], n_timesteps=SIGNAL_TIMESTEPS, seed=seed)
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                with open(tmp, 'wb') as f: np.savez(f, **sig)
    got = []
    for name, v in sig.items(): got += defect_rows(v, base['train'].defect, corpus=label, mode=f'signal:{name}', inputs='warm-proxy', seed=seed)
    r = dict(corpus=label, mode='signal', inputs='warm-proxy', seed=seed, config=config_to_dict(cfg), date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
             load=load, wall_s=round(tm.wall, 1), cpu_ratio=round(tm.cpu_ratio, 2), reused=w['cached'] and hit, meta_steps_done=0, stopped_at=None,
             last_rank_spearman=None, history=[], warm=w['report'], rater=None)
    return got, r, sig


FIT_STEPS, FIT_BATCH, FIT_LR = 600, 64, 1e-3   # the supervised control: Adam steps (a profile's `fit_steps` overrides), batch and lr


def fit_rows(sig: dict, splits: dict, rater_cfg, resolution: int, seed: int, device: str = 'cpu', steps: int = FIT_STEPS, **key) -> list:
    """The supervised upper bound of the meta-gradient: the same rater architecture and inputs, fitted *directly* to each warm-proxy
    signal (its percentile in the fitting half as a BCE target for the instance head) on a random half of the train split, and
    scored on the other half. If this cannot carry a signal to pairs it has not seen, no meta-gradient that teaches the same
    signal will. Rows: mode `fit:<signal>`, AUROC and median rank on the held-out half only."""
    import torch, torch.nn.functional as F
    from alchemist.core import seed_everything
    from alchemist.data import images_to_tensor
    from alchemist.rater import Rater
    from alchemist.select import percentile_ranks
    sp, n = splits['train'], len(splits['train'])
    perm = np.random.default_rng(seed).permutation(n); fit_i, test_i = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    def inputs(idx):
        t = torch.as_tensor(idx)
        f = None if sp.image_features is None else sp.image_features[t].to(device, torch.float32)
        return (images_to_tensor(sp.images[idx]).to(device), sp.pooled[t].float().to(device), sp.tokens[t].float().to(device), sp.mask[t].to(device), f)
    out = []
    for name, v in sig.items():
        v = np.asarray(v, dtype=np.float64)
        target = torch.as_tensor(1 - percentile_ranks(v[fit_i]) / 100, dtype=torch.float32)   # 1 = the signal's best pair
        seed_everything(seed)
        R = Rater(dataclasses.replace(rater_cfg, resolution=resolution, text_dim=sp.pooled.shape[1])).to(device)
        params = [p for n_, p in R.named_parameters() if not n_.startswith('group_mlp')]
        opt = torch.optim.Adam(params, lr=FIT_LR)
        g = np.random.default_rng(seed + 1)
        for _ in range(steps):
            b = g.choice(len(fit_i), size=min(FIT_BATCH, len(fit_i)), replace=False)
            img, pooled, tok, mask, f = inputs(fit_i[b])
            inst, _ = R.heads(R.features(img, pooled, tok, mask, f))
            loss = F.binary_cross_entropy(inst, target[b].to(device))
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        R.eval(); scores = []
        with torch.no_grad():
            for c in np.array_split(test_i, max(1, len(test_i) // 256)):
                img, pooled, tok, mask, f = inputs(c)
                scores.append(R.heads(R.features(img, pooled, tok, mask, f))[0].cpu().numpy())
        out += defect_rows(np.concatenate(scores), list(np.asarray(sp.defect)[test_i]), mode=f'fit:{name}', seed=seed, **key)
    return out


def defect_rows(scores: np.ndarray, defects: list, **key) -> list:
    from alchemist.bilevel import auroc
    from alchemist.select import percentile_ranks
    d, rank = np.asarray(defects), percentile_ranks(scores)
    clean = scores[d == 'clean']
    return [dict(**key, defect=k, auroc=round(auroc(clean, scores[d == k]), 4), median_rank=round(float(np.median(rank[d == k])), 1))
            for k in sorted(set(d)) if k != 'clean']


def mean_std(s: pd.Series) -> str:
    return f"{s.mean():.3f}" if len(s) < 2 else f"{s.mean():.3f} ± {s.std(ddof=1):.3f}"


def write_figures(df: pd.DataFrame, records: list, profile: str, figs: Path) -> list:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from alchemist.core import atomic_path
    figs.mkdir(parents=True, exist_ok=True); out = []
    corpora = list(dict.fromkeys(df['corpus']))
    fig, axes = plt.subplots(1, len(corpora), figsize=(1.5 + 0.9 * df['defect'].nunique() * len(corpora), 1.2 + 0.35 * df.groupby(['mode', 'inputs']).ngroups), squeeze=False)
    for ax, c in zip(axes[0], corpora):
        p = df[df.corpus == c].groupby(['mode', 'inputs', 'defect'])['auroc'].mean().unstack('defect')
        im = ax.imshow(p.to_numpy(), cmap='RdBu', vmin=0, vmax=1)
        ax.set_xticks(range(p.shape[1]), p.columns, rotation=45, ha='right', fontsize=7)
        ax.set_yticks(range(p.shape[0]), [f'{m} | {i}' for m, i in p.index], fontsize=7)
        for (y, x), v in np.ndenumerate(p.to_numpy()): ax.text(x, y, f'{v:.2f}', ha='center', va='center', fontsize=6)
        ax.set_title(f'{c}: AUROC clean > defect (mean over seeds)', fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6); path = figs/f'rater_auroc_{profile}.png'
    with atomic_path(path) as tmp: fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig); out.append(path)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for r in records:
        h = [x for x in r.get('history', []) if x.get('rank_spearman') is not None]
        if h: ax.plot([x['step_end'] for x in h], [x['rank_spearman'] for x in h], lw=0.8, alpha=0.8, marker='.', label=f"{r['corpus']} {r['mode']} {r['inputs']} s{r['seed']}")
    ax.set(xlabel='meta-steps', ylabel='Spearman with the previous scoring', title='rank stability of the probe set', ylim=(-0.05, 1.05))
    if len(ax.lines) <= 12: ax.legend(fontsize=5)
    path = figs/f'rater_stability_{profile}.png'
    with atomic_path(path) as tmp: fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig); out.append(path)
    return out


def report_section(df, records, a, prof, rec, figures, report: Path, results: Path, wall) -> str:
    rel = lambda p: os.path.relpath(p, report.parent)
    lines = [START, '', f"Run: `{rec['command']}` — {rec['date']}, git `{rec['git']}`, machine {rec['machine']['platform']} "
             f"({rec['machine']['cpu_count']} cores, {rec['machine']['torch_threads']} torch threads, torch {rec['machine']['torch']}), "
             f"load average at start {rec['load']}; total wall {wall:.0f} s.",
             f"Profile `{a.profile}`: corpora {prof['corpora']} (n = {prof['corpus_n']}, {prof['resolution']} px), reference `heldout={a.heldout}`, "
             f"seeds {prof['seeds']}, modes {prof['modes']}, inputs {prof['inputs']}.",
             f"Results: `{rel(results)}` and the run records in `{rel(results.with_name(results.stem + '_records.json'))}`.", '']
    first = next((r for r in records if r['mode'] not in ('init', 'signal')), None)
    if first: lines += ['Meta-training configuration of the first trained run (the others differ in mode, inputs and seed):', '',
                        '```json', json.dumps(first['config'], sort_keys=True), '```', '']
    for c in dict.fromkeys(df['corpus']):
        d = df[df.corpus == c]
        n_seeds = d['seed'].nunique()
        au = d.groupby(['mode', 'inputs', 'defect'])['auroc'].apply(mean_std).unstack('defect')
        mr = d.groupby(['mode', 'inputs', 'defect'])['median_rank'].mean().round(1).unstack('defect')
        lines += [f'### {c}: AUROC of clean vs each defect (mean ± std over {n_seeds} seed{"s" if n_seeds > 1 else ""}; 0.5 = no separation)', '',
                  au.to_markdown(), '', f'### {c}: median percentile rank of each defect (mean over seeds; 0 = top-rated, 50 = middle)', '',
                  mr.to_markdown(), '']
    warm = {}
    for r in records:
        if r.get('warm'): warm[(r['corpus'], r['seed'], r['warm']['key'])] = r['warm']
    if warm:
        rows = []
        for (c, s, k), w in warm.items():
            b, f, p = w['before']['reference'], w['after']['reference'], w['after']['pool']
            rows.append(dict(corpus=c, seed=s, key=k, warm_on=w['warm_on'], steps=w['fit']['steps'], fit_wall_s=round(w['fit']['wall_s']),
                             ref_loss=f"{b['loss']:.4f} → {f['loss']:.4f}", gain_own=round(f['gain_own'], 4), gain_swapped=round(f['gain_swapped'], 4),
                             gain_auroc=f"{b['gain_auroc']:.3f} → {f['gain_auroc']:.3f}", pool_loss=round(p['loss'], 4)))
        lines += ['### Warm proxies (measured on the reference; before → after the warm-up; gain = loss(x, ∅) − loss(x, c))', '',
                  pd.DataFrame(rows).to_markdown(index=False), '']
    runs = pd.DataFrame([dict(corpus=r['corpus'], mode=r['mode'], inputs=r['inputs'], seed=r['seed'], meta_steps=r['meta_steps_done'],
                              stopped_at=r.get('stopped_at'), last_rank_spearman=r.get('last_rank_spearman'), wall_s=r['wall_s'],
                              cpu_ratio=r['cpu_ratio'], load=r['load'][0], date=r['date'], reused=r['reused']) for r in records])
    lines += ['### Runs (meta-steps done, rank stability at the end, wall seconds and cpu/wall of this call, 1-min load at its start)', '',
              runs.to_markdown(index=False), '', 'Figures: ' + ', '.join(f'`{rel(p)}`' for p in figures) + '.', '', END]
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument('--profile', choices=list(PROFILES), default='smoke')
    ap.add_argument('--corpora', nargs='+', help='corpus names of alchemist.experiments (synthetic, web-planted, ...) or corpus folders')
    ap.add_argument('--corpus_n', type=int); ap.add_argument('--seeds', nargs='+', type=int)
    ap.add_argument('--modes', nargs='+', choices=list(VARIANTS)); ap.add_argument('--inputs', nargs='+')
    ap.add_argument('--heldout', default='clean', help="MetaConfig.heldout: the reference ('clean', 'as_is' or a subset manifest)")
    ap.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='MetaConfig overrides for every run (rater.<field> for the rater)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--plan', action='store_true', help='list the runs of the profile, which are done, and their estimated CPU time; train nothing')
    ap.add_argument('--no_signals', action='store_true', help="skip the warm proxy's own per-sample signals (rows mode='signal:<name>')")
    ap.add_argument('--fit_only', action='store_true', help="the warm proxy's signals and the supervised control only: no meta-training "
                                                           "(cheap: a look at which rater inputs can carry a signal at all)")
    ap.add_argument('--no_fit', action='store_true', help="skip the supervised control: the rater fitted directly to each signal on half "
                                                         "the pool, scored on the other half (rows mode='fit:<name>')")
    ap.add_argument('--results', help='CSV (default reports/results/rater_auroc_<profile>.csv)')
    ap.add_argument('--report', help='markdown report (default reports/rater_evidence.md)')
    ap.add_argument('--figures', help='figure folder (default reports/figures)')
    ap.add_argument('--runs', help='meta-training run folders (default <runs>/evidence/<profile>)')
    ap.add_argument('--out', help='write the report, results and figures under this folder instead of reports/ (default for the smoke '
                                  'profile: <runs>/evidence/smoke/reports, so a pipeline check never overwrites the evidence)')
    a = ap.parse_args(argv)

    from alchemist.bilevel import attach_image_features, corpus_splits, meta_train, score_split
    from alchemist.core import Timer, atomic_path, config_to_dict, reports_dir, run_record, runs_dir, write_json
    from alchemist.experiments import ExperimentConfig, build_corpus
    from alchemist.rater import load_rater, rater_inputs

    prof = dict(PROFILES[a.profile])
    for k in ('corpora', 'corpus_n', 'seeds', 'modes', 'inputs'):
        if getattr(a, k) is not None: prof[k] = getattr(a, k)
    for i in prof['inputs']: rater_inputs(i)            # a bad label fails before any training
    runs = Path(a.runs) if a.runs else runs_dir()/'evidence'/a.profile
    root = Path(a.out) if a.out else runs/'reports' if a.profile == 'smoke' else reports_dir()
    results = Path(a.results) if a.results else root/'results'/f'rater_auroc_{a.profile}.csv'
    report = Path(a.report) if a.report else root/'rater_evidence.md'
    figs = Path(a.figures) if a.figures else root/'figures'
    if a.plan: print(plan(prof, a, runs)); return
    rec = run_record(vars(a), profile=prof, load=tuple(round(x, 2) for x in os.getloadavg()))
    print(f"# rater_evidence {rec['date']}  {rec['command']}  git {rec['git']}  load {rec['load']}", flush=True)

    rows, records, t_all = [], [], time.perf_counter()
    for corpus_name in prof['corpora']:
        corpus = build_corpus(ExperimentConfig(corpus=corpus_name, corpus_n=prof['corpus_n'], resolution=prof['resolution']))
        base = corpus_splits(corpus, prof['resolution'], heldout=a.heldout)
        label = Path(corpus_name).name
        print(f"corpus {corpus}: train {len(base['train'])}, reference {len(base['heldout'])} ({a.heldout})", flush=True)
        signals = {}
        if not a.no_signals:
            for seed in prof['seeds']:
                got, r, sig = signal_rows(prof, seed, corpus, label, base, a, runs)
                if r is None: continue
                rows += got; records.append(r); signals[seed] = sig
                print(f"{label} warm-proxy signals s{seed}: {r['wall_s']:.0f}s; AUROC "
                      + ', '.join(f"{x['mode'][7:]}/{x['defect']} {x['auroc']:.2f}" for x in got if x['defect'] in ('caption_mismatch', 'caption_swap', 'noise')), flush=True)
        by_input, fitted = {}, set()
        for inputs in prof['inputs']:
            for seed in prof['seeds']:
                for variant in prof['modes']:
                    out = runs/label/f'{variant}-{inputs}-s{seed}'
                    cfg = meta_config(prof, variant, inputs, seed, corpus, a, out)
                    if inputs not in by_input:   # frozen features once per corpus and input (cached in the corpus)
                        by_input[inputs] = attach_image_features(base, dataclasses.replace(cfg.rater, resolution=cfg.resolution), a.device, corpus/'cache')
                    splits = by_input[inputs]
                    if seed in signals and not a.no_fit and (label, inputs, seed) not in fitted:   # the supervised control, once per input
                        fitted.add((label, inputs, seed))
                        with Timer() as tf: got = fit_rows(signals[seed], splits, cfg.rater, cfg.resolution, seed, a.device, prof.get('fit_steps', FIT_STEPS), corpus=label, inputs=inputs)
                        rows += got
                        print(f"{label} fit to signals  {inputs:16s} s{seed}: {tf.wall:.0f}s; held-out AUROC "
                              + ', '.join(f"{x['mode'][4:]}/{x['defect']} {x['auroc']:.2f}" for x in got if x['defect'] in ('caption_mismatch', 'caption_swap', 'noise')), flush=True)
                    if a.fit_only: continue
                    load = tuple(round(x, 2) for x in os.getloadavg())
                    done = out/'done.json'
                    with Timer() as tm:
                        if variant == 'init': ck, res = init_rater(cfg, splits, out), dict(history=[])
                        else:
                            res = meta_train(cfg, splits=splits); ck = res['rater_checkpoint']
                        scores = score_split(load_rater(ck, device=a.device), splits['train'], 256, 'paper')
                    key = dict(corpus=label, mode=variant, inputs=inputs, seed=seed)
                    got = defect_rows(scores, splits['train'].defect, **key)
                    rows += got
                    h = res['history']; step_end = np.cumsum([x['steps'] for x in h]).tolist()
                    trace = [dict(step_end=int(s), rank_spearman=x.get('rank_spearman'), l_val=x.get('l_val')) for s, x in zip(step_end, h)]
                    spear = [x['rank_spearman'] for x in trace if x['rank_spearman'] is not None]
                    r = dict(**key, config=config_to_dict(cfg), date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), load=load, wall_s=round(tm.wall, 1), cpu_ratio=round(tm.cpu_ratio, 2),
                             reused=done.exists(), meta_steps_done=int(step_end[-1]) if step_end else 0, stopped_at=res.get('stopped_at'),
                             last_rank_spearman=spear[-1] if spear else None, history=trace, warm=res.get('warm'), rater=str(ck))
                    records.append(r)
                    if variant != 'init': write_json(done, dict(rater=str(ck), wall_s=r['wall_s']))
                    print(f"{label} {variant:16s} {inputs:16s} s{seed}: {r['meta_steps_done']} meta-steps, {tm.wall:.0f}s; AUROC "
                          + ', '.join(f"{x['defect']} {x['auroc']:.2f}" for x in got), flush=True)

    df = pd.DataFrame(rows, columns=['corpus', 'mode', 'inputs', 'seed', 'defect', 'auroc', 'median_rank'])
    results.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(results) as tmp: df.to_csv(tmp, index=False)
    write_json(results.with_name(results.stem + '_records.json'), dict(run=rec, runs=records))
    figures = write_figures(df, records, a.profile, figs)
    auto = report_section(df, records, a, prof, rec, figures, report, results, time.perf_counter() - t_all)
    text = report.read_text() if report.exists() else (
        "# Does the meta-trained rater find the planted defects?\n\nIssue 17: `scripts/rater_evidence.py` meta-trains a grid of modes x rater "
        "inputs x seeds and measures, per planted defect, the AUROC of clean vs that defect and its median rank in the rating.\n\n"
        f"{START}\n{END}\n")
    text = text[:text.index(START)] + auto + text[text.index(END) + len(END):] if START in text and END in text else text + '\n' + auto + '\n'
    report.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(report) as tmp: tmp.write_text(text)
    print(auto)


if __name__ == '__main__':
    main()
