"""Sanity evidence for alchemist.evaluate (issue 3, item 5): a model trained on clean data should beat one trained on
defect-only data on every metric, and metrics should improve with training steps.

Trains two small UNets (quick-profile size: 16 px, UNet 's', batch 64) on equal-size subsets of the synthetic corpus's
train split -- clean rows only vs defect rows only -- evaluates each at two step counts with the same EvalConfig
(same prompts, same noise), and prints/writes one JSON line per evaluation.

    .venv/bin/python scripts/eval_sanity.py --corpus data/synthetic-16px-8000-s0 --steps 100 400 --n 2000 --out runs/eval_sanity
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

from alchemist.core import Timer, config_to_dict, run_record, write_json
from alchemist.data import read_manifest, write_subset
from alchemist.evaluate import eval_config, evaluate_model
from alchemist.t2i import T2IConfig
from alchemist.train import TrainConfig, load_trained, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--corpus', default='data/synthetic-16px-8000-s0')
    ap.add_argument('--steps', type=int, nargs='+', default=[100, 400], help='evaluate after each of these step counts')
    ap.add_argument('--n', type=int, default=2000, help='images per training subset (both subsets the same size)')
    ap.add_argument('--n-samples', type=int, default=128)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='runs/eval_sanity')
    ap.add_argument('--effnet-size', type=int, default=224, help='EfficientNet input side (224 = its native size)')
    ap.add_argument('--clip', default='', help='ClipLikeConfig overrides as JSON, e.g. \'{"width": 64, "layers": 2, "steps": 200}\'')
    ap.add_argument('--metrics', default='fd,kid,clip,attr', help='comma-separated subset of fd,kid,clip,attr')
    ap.add_argument('--only', choices=['clean', 'defect_only'], help='run one subset (two processes can run side by side)')
    ap.add_argument('--prepare-clip', action='store_true', help='only train (and cache) the corpus CLIP-like judge')
    a = ap.parse_args(argv)
    corpus, out = Path(a.corpus), Path(a.out)
    man = read_manifest(corpus); tr = man[man.split == 'train']
    rng = np.random.default_rng(a.seed)
    subsets = {'clean': tr[tr.defect == 'clean'].uid.tolist(), 'defect_only': tr[tr.defect != 'clean'].uid.tolist()}
    ecfg = eval_config('quick', n_samples=a.n_samples, effnet_size=a.effnet_size, device='cpu', metrics=tuple(a.metrics.split(',')),
                       clip={**json.loads(a.clip or '{}'), 'device': 'cpu'})
    if a.prepare_clip:
        from alchemist.image_encoders import clip_like_for_corpus
        with Timer() as t: clip = clip_like_for_corpus(corpus, 16, ecfg.clip)
        print(json.dumps(dict(clip=clip.metrics, wall=round(t.wall, 1), cpu_ratio=round(t.cpu_ratio, 2)))); return
    rows = []
    for name, uids in subsets.items():
        if a.only and name != a.only: continue
        if len(uids) < a.n: sys.exit(f"{name}: only {len(uids)} rows < --n {a.n}")
        uids = sorted(rng.choice(uids, a.n, replace=False).tolist())
        sub = write_subset(out/name/'subset.json', uids, method=name)
        tcfg = TrainConfig(corpus_dir=str(corpus), subset=str(sub), model=T2IConfig(family='unet', size='s', resolution=16), budget='steps', steps=max(a.steps), batch_size=64,
                           ckpt_every=min(a.steps), out_dir=str(out/name/'train'), seed=a.seed, device='cpu')
        for s in sorted(a.steps):
            with Timer() as tt: info = train(tcfg, stop_at=s)
            model = load_trained(info['run_dir'], ema=True)
            with Timer() as te: m = evaluate_model(model, corpus, ecfg, out_dir=out/name/f'eval-{s}')
            row = dict(subset=name, train_step=s, train_wall=round(tt.wall, 1), train_cpu_ratio=round(tt.cpu_ratio, 2),
                       eval_wall=round(te.wall, 1), eval_cpu_ratio=round(te.cpu_ratio, 2), **m)
            print(json.dumps(row), flush=True); rows.append(row)
            write_json(out/f'results-{a.only or "all"}.json', dict(rows=rows, record=run_record(ecfg, args=vars(a))))
    return rows


if __name__ == '__main__':
    main()
