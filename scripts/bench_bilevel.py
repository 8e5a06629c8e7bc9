"""Cost of one meta step of each bilevel mode relative to one plain proxy step, measured side by side.

    .venv/bin/python scripts/bench_bilevel.py [--proxy unet] [--size s] [--resolution 32] [--batch 64] [--reps 5]

Per repetition the plain step and every mode's meta step run back to back on fresh batches of the same shape, so
machine contention hits them alike; the script prints medians, the ratio meta/plain (aims: penalty <= 2.5x,
unrolled K=1 <= 4x), each timing's cpu/wall ratio (near the thread count = the process got its cores) and the
fraction of the fp32 matmul bound it implies for the plain step.
"""
import argparse, json, statistics, sys, time
import numpy as np, torch
from alchemist.bilevel import MetaConfig, MetaState, build_proxy, make_batch, n_train_timesteps, toy_meta_splits
from alchemist.core import Timer, config_from_dict, machine_info, seed_everything
from alchemist.rater import Rater

VARIANTS = {  # name: (mode, inner_steps, lam)
    'penalty-warmup': ('penalty', 1, 1.0),    # lam = 1 (epoch 0): the train loss needs no graph
    'penalty': ('penalty', 1, 0.5),           # lam < 1: one forward/backward over both batches
    'unrolled-K1': ('unrolled', 1, 0.5),
    'unrolled-K2': ('unrolled', 2, 0.5),
    'alignment': ('alignment', 1, 0.5),
}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--proxy', default='unet'); ap.add_argument('--size', default='s')
    ap.add_argument('--resolution', type=int, default=32); ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated subset of: ' + ', '.join(VARIANTS))
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default); 1 is steadier on a crowded box')
    ap.add_argument('--json', default='', help='also write the results here')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    seed_everything(0)
    names = [v.strip() for v in a.variants.split(',')]
    for n in names:
        if n not in VARIANTS: sys.exit(f"unknown variant {n!r}; choose from {list(VARIANTS)}")
    sp = toy_meta_splits(max(8 * a.batch, 512), a.resolution, seed=0)
    states = {}
    def state(mode, K):
        if (mode, K) not in states:
            cfg = config_from_dict(MetaConfig, dict(mode=mode, proxy=a.proxy, proxy_size=a.size, resolution=a.resolution, batch=a.batch, inner_steps=K))
            torch.manual_seed(0)
            P = build_proxy(cfg); R = Rater(cfg.rater.__class__(**{**cfg.rater.__dict__, 'resolution': a.resolution}))
            states[(mode, K)] = MetaState(cfg, P, R)
        return states[(mode, K)]
    plain = state('penalty', 1)
    T = n_train_timesteps(plain.proxy)
    n_params = sum(p.numel() for p in plain.proxy.parameters())
    rng = np.random.default_rng(0)
    def batch(split, i):
        return make_batch(sp[split], rng.choice(len(sp[split]), a.batch, replace=False), torch.Generator().manual_seed(i), T)
    times = {k: [] for k in ['plain', *names]}; ratios = {k: [] for k in times}
    for rep in range(a.warmup + a.reps):
        for k in times:
            bv, bts = batch('heldout', 2*rep), [batch('train', 2*rep + 1 + j) for j in range(2)]
            with Timer() as t:
                if k == 'plain': plain.plain_step(bts[0])
                else:
                    mode, K, lam = VARIANTS[k]
                    state(mode, K).step(bv, bts[:K], lam)
            if rep >= a.warmup: times[k].append(t.wall); ratios[k].append(t.cpu_ratio)
            print(f"  rep {rep}{' (warm-up)' if rep < a.warmup else ''} {k}: {t.wall:.3f} s (cpu/wall {t.cpu_ratio:.2f})", file=sys.stderr, flush=True)
    base = statistics.median(times['plain'])
    res = dict(proxy=f'{a.proxy}-{a.size}', params=n_params, resolution=a.resolution, batch=a.batch, reps=a.reps,
               torch_threads=torch.get_num_threads(), rows={})
    print(f"proxy {a.proxy}-{a.size} ({n_params/1e6:.2f}M params), {a.resolution} px, batch {a.batch}, {a.reps} reps (+{a.warmup} warm-up), torch threads {torch.get_num_threads()}")
    print(f"{'step':16s} {'median s':>9s} {'x plain':>8s} {'cpu/wall':>9s} {'images/s':>9s}")
    for k in times:
        m = statistics.median(times[k]); r = statistics.median(ratios[k])
        res['rows'][k] = dict(median_s=m, ratio=m / base, cpu_ratio=r, all_s=times[k])
        print(f"{k:16s} {m:9.3f} {m/base:8.2f} {r:9.2f} {a.batch/m:9.1f}")
    if a.json:
        with open(a.json, 'w') as f: json.dump(dict(res, machine=machine_info(), date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())), f, indent=2)
    return res

if __name__ == '__main__':
    main()
