"""What a profile costs on this kind of machine: runs per table after sharing, finished runs, estimated CPU-hours.

Usage: python scripts/paper_budget.py [--profile paper] [--out reports/paper_budget.md]

The estimate is a cost model, not a measurement: one thread per run (`alchemist reproduce --jobs 2` on 2 cores).
- downstream training: images seen / the one-thread training rate of the model (UNet s at 32 px: 33 img/s, measured in
  the paper-profile Table 3 runs; other presets scaled by their two-thread rates in reports/benchmarks/t2i.md);
- evaluation: sampling (scaled the same way) + a fixed part (EfficientNet features, CLIP-like, attribute oracle);
- rater meta-training: once per (corpus, seed, mode, Group MLP, meta-epochs), penalty mode as measured in Table 3,
  unrolled / alignment scaled by the meta-step ratios of reports/benchmarks/bilevel.md;
- one-off caches per corpus (judge, reference features, baseline scorer): a fixed guess, printed separately.
Finished runs also print their recorded wall time next to the model's estimate, so the model can be checked.

The compute floor (`--floor`) is a lower bound, not an estimate: the FLOPs of the downstream training and sampling that
the finished runs recorded in reports/results/<table>_<profile>.csv did (FLOPs per image counted by
torch.utils.flop_counter), divided by one core's share of the fp32 matmul rate torch reaches on these machines
(DESIGN.md: 179 GFLOP/s on 2 idle cores). It leaves out rater meta-training, proxy training, features and start-up, and
convolutions on 8-32 px maps run well below the matmul rate, so in fp32 the profile cannot cost less than this here.
`--bf16` also times a bare fp32 and a bf16-autocast training step of the small UNet side by side, one thread.
"""
import argparse, datetime, json, os, platform, subprocess, sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))   # bench_t2i (FLOP counting, DESIGN.md's matmul figure)
from alchemist.reproduce import TABLES, plan, finished_runs, restore_runs, tables_for
from alchemist.experiments import RATER_SAMPLERS

# one-thread training images/s at 32 px, UNet s measured (T3 paper runs: 32-35 img/s); others scaled by bench ratios
TRAIN_RATE_32 = {('unet', 's'): 33.0, ('unet', 'm'): 33.0 * 35.1 / 62.3, ('unet', 'l'): 33.0 * 12.2 / 62.3,
                 ('pixart', 's'): 33.0 * 128.1 / 62.3, ('pixart', 'm'): 33.0 * 48.8 / 62.3, ('pixart', 'l'): 33.0 * 19.3 / 62.3}
# at 16 px the small UNet trains faster than the 32 px rate / 4 (fixed per-step costs): the regime runs measured
# 166-168 img/s a job (2 jobs on 2 cores, cpu/wall 0.94; reports/archive/regime-2400-pilot/)
TRAIN_RATE_MEASURED = {('unet', 's', 16): 167.0}
SAMPLE_S_PER_IMG_32 = 55.0 / 128   # UNet s, 20 DDIM steps with guidance, one thread (T3 paper: 41-70 s for 128)
SAMPLE_S_PER_IMG_MEASURED = {('unet', 's', 16): 36.0 / 512}   # regime pilot: 35.8-36.2 s for 512 samples
EVAL_FIXED_S = 10.0                # features + judges per evaluation: a fixed part ...
EVAL_S_PER_SAMPLE = 0.047          # ... and a part per sample (regime pilot: 34 s besides sampling at 512 samples)
RUN_OVERHEAD_S = 30.0              # kernel start, imports, corpus and caption loading
RATER_PENALTY_S_PER_EPOCH = 90.0   # T3 paper: 150-200 s for 2 meta-epochs, Fig5 paper: 220-240 s for 3
MODE_FACTOR = {'penalty': 1.0, 'unrolled': 4.51 / 2.06, 'alignment': 3.9 / 2.06}
TRAIN_SHARE = 0.8026               # train split / corpus_n (16,052 of 20,000)
CACHE_S = {'synthetic': 600.0, 'web': 1500.0, 'web-planted': 1500.0}   # judge + reference features + caption embeddings, once per corpus


def scale(res: int) -> float: return (res / 32) ** 2


def rater_key(c: dict):
    return (c['corpus'], c['corpus_n'], c['resolution'], c['seed'], c.get('meta_mode', 'penalty'),
            c.get('group_mlp', True), c.get('meta_epochs', 2), c.get('proxy_size', 's'))


def run_cost(c: dict, own: bool, name: str) -> tuple[float, tuple | None]:
    "Estimated one-thread seconds of a run without its rater, and the rater it needs (or None)."
    res, fam, size = c['resolution'], c.get('family', 'unet'), c.get('size', 's')
    rk = rater_key(c)
    if own:   # Fig3 / Fig5: meta-training, scoring and probes; Fig3 also trains a proxy with traces
        extra = c['corpus_n'] * TRAIN_SHARE * c.get('epochs', 1.0) / TRAIN_RATE_32[('unet', 's')] * scale(res) * 1.5 if name == 'Fig3' else 10.0
        return RUN_OVERHEAD_S + extra, rk
    if c.get('budget', 'epochs') == 'steps': imgs = c['steps'] * c.get('batch_size', 64)
    else: imgs = c['corpus_n'] * TRAIN_SHARE * (1.0 if c['method'] == 'full' else c['retention']) * c['epochs']
    rate = TRAIN_RATE_MEASURED.get((fam, size, res)) or TRAIN_RATE_32[(fam, size)] / scale(res)
    per_sample = SAMPLE_S_PER_IMG_MEASURED.get((fam, size, res)) or \
        SAMPLE_S_PER_IMG_32 * scale(res) * TRAIN_RATE_32[('unet', 's')] / TRAIN_RATE_32[(fam, size)]
    n_evals = 1 + len(c.get('eval_at') or [])    # the final evaluation and one per learning-curve point
    evals = n_evals * (c['eval_samples'] * (per_sample + EVAL_S_PER_SAMPLE) + EVAL_FIXED_S)
    needs = c['method'] in RATER_SAMPLERS or c['method'] == 'alchemist'
    return RUN_OVERHEAD_S + imgs / rate + evals, (rk if needs else None)


def rater_cost(rk) -> float:
    corpus, n, res, seed, mode, mlp, epochs, proxy = rk
    return RATER_PENALTY_S_PER_EPOCH * epochs * MODE_FACTOR[mode] * scale(res) * n / 20000


def budget(profile: str):
    "Per table: runs (shared runs counted once, where first listed), finished runs, estimated and measured seconds."
    seen, raters = set(), set()
    done_keys = finished_runs(None, profile)
    plans = {name: plan(name, profile) for name in tables_for(profile)}   # a table may leave a profile out
    # runs recorded in the committed results CSVs count as finished even where runs/ is empty (a new clone): reproduce restores them
    recorded = {}
    for name, runs in plans.items():
        ids = set(restore_runs(runs, write=False))
        if not ids: continue
        csv = REPO/'reports/results'/f'{name}_{profile}.csv'
        wall = pd.read_csv(csv).set_index('run_id')['wall_s'].to_dict() if csv.exists() else {}
        for r in runs:
            if r.run_id in ids: recorded[r.run_id] = wall.get(r.run_id, 0.0); done_keys.setdefault(r.config_key, r.run_id)
    per = defaultdict(lambda: dict(runs=0, done=0, raters=0, est=0.0, est_left=0.0, measured=0.0, est_of_done=0.0))
    corpora = set()
    for name, t in TABLES.items():
        for r in plans.get(name, []):
            c = json.loads(r.config_key)
            if t.shares_runs:
                if r.config_key in seen: continue
                seen.add(r.config_key)
            corpora.add(c['corpus'])
            done_dir = r.dir if r.done else r.run_id if r.run_id in recorded else done_keys.get(r.config_key) if t.shares_runs else None
            s, rk = run_cost(c, not t.shares_runs, name)
            if rk is not None and rk not in raters:   # a rater is trained once, by the first run that needs it
                raters.add(rk); per[name]['raters'] += 1; s_rater = rater_cost(rk)
            else: s_rater = 0.0
            p = per[name]; p['runs'] += 1; p['est'] += s + s_rater
            if done_dir is None: p['est_left'] += s + s_rater; continue
            p['done'] += 1; p['est_of_done'] += s
            if isinstance(done_dir, str) or r.run_id in recorded:   # recorded in a CSV only: its row has the wall time
                p['measured'] += float(recorded.get(r.run_id if r.run_id in recorded else done_dir, 0) or 0); continue
            try: p['measured'] += float(json.loads((Path(done_dir)/'run.json').read_text()).get('wall_s', 0) or 0)
            except (OSError, ValueError): pass
    return per, corpora


def executed_frames(profile: str, results_dir: Path = Path('reports/results')):
    "Per results CSV of `profile`: its rows that executed here (rows reused from another table are that table's)."
    import pandas as pd
    for f in sorted(results_dir.glob(f'*_{profile}.csv')):
        d = pd.read_csv(f)
        if 'wall_s' not in d: continue                   # not a table of runs (rater_auroc_*, rater_fit_*: per-defect scores)
        yield d[d['reused_from'].isna()] if 'reused_from' in d else d


def executed_rows(profile: str, results_dir: Path = Path('reports/results')):
    "Downstream runs of `profile` that executed here, from the committed results CSVs: model preset, images trained, image-steps sampled."
    import pandas as pd
    from alchemist.experiments import ExperimentConfig
    frames = []
    for d in executed_frames(profile, results_dir):
        if 'metrics.train_steps' not in d: continue      # Fig3 / Fig5: no downstream model
        batch = [json.loads(c).get('batch_size', ExperimentConfig.batch_size) for c in d['config']]
        frames.append(pd.DataFrame(dict(family=d['family'], size=d['size'], resolution=d['resolution'].astype(int),
                                        train_images=d['metrics.train_steps'] * batch,
                                        sample_image_steps=d['metrics.n_samples'] * d['eval_steps'])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=['family', 'size', 'resolution', 'train_images', 'sample_image_steps'])


def model_flops(family: str, size: str, resolution: int) -> tuple[float, float]:
    "(forward+backward FLOPs per trained image, FLOPs per sampled image per step with guidance 3) of a model preset."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from alchemist.t2i import build_t2i
    from bench_t2i import flops_per_image
    model = build_t2i(dict(family=family, size=size, resolution=resolution), seed=0)
    train = flops_per_image(model)
    tok, mask, steps = torch.randn(2, 12, 384), torch.ones(2, 12, dtype=torch.bool), 2
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval().sample(tok, mask, guidance=3.0, steps=steps, generator=torch.Generator().manual_seed(0))
    return train, fc.get_total_flops() / 2 / steps


def floor_hours(rows, flops: dict, gflops_per_core: float):
    "Per model preset: images trained, image-steps sampled and the one-core hours they need at `gflops_per_core`."
    out = []
    for key, g in rows.groupby(['family', 'size', 'resolution']):
        f_train, f_sample = flops[key]
        train_h = float(g['train_images'].sum()) * f_train / (gflops_per_core * 1e9) / 3600
        sample_h = float(g['sample_image_steps'].sum()) * f_sample / (gflops_per_core * 1e9) / 3600
        out.append(dict(model=':'.join(map(str, key)), runs=len(g), train_images=int(g['train_images'].sum()),
                        gflop_train=f_train / 1e9, train_h=train_h, sample_image_steps=int(g['sample_image_steps'].sum()),
                        gflop_sample=f_sample / 1e9, sample_h=sample_h))
    return out


def bf16_speedup(steps: int = 3, repeats: int = 3) -> tuple[float, float, float]:
    "(fp32 img/s, bf16-autocast img/s, median ratio) of bare training steps of the small UNet at 32 px, one thread, alternating."
    import statistics, time, torch
    from alchemist.t2i import build_t2i
    torch.set_num_threads(1)
    model = build_t2i(dict(family='unet', size='s', resolution=32), seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0, tok, mask = torch.rand(64, 3, 32, 32, generator=g) * 2 - 1, torch.randn(64, 12, 384, generator=g), torch.ones(64, 12, dtype=torch.bool)

    def rate(bf16: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                loss = model.per_sample_loss(x0, tok, mask, generator=g).mean()
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return 64 * steps / (time.perf_counter() - t0)
    rate(False); rate(True)                                   # warm-up: one-off allocations and kernel selection
    pairs = [(rate(False), rate(True)) for _ in range(repeats)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[1] / p[0] for p in pairs))


def measured_hours(profile: str, results_dir: Path = Path('reports/results')) -> float:
    "Recorded wall hours of every run of `profile` that executed here."
    return sum(float(d['wall_s'].sum()) for d in executed_frames(profile, results_dir)) / 3600


def floor_report(profile: str, bf16: bool = False) -> str:
    "The compute floor of the executed downstream runs of `profile`, as markdown."
    from bench_t2i import DESIGN_GFLOPS
    rows = executed_rows(profile)
    if rows.empty: return f"\nno executed downstream runs of profile {profile} in reports/results/: no compute floor\n"
    per_core = DESIGN_GFLOPS / 2
    keys = sorted(set(map(tuple, rows[['family', 'size', 'resolution']].itertuples(index=False))))
    fl = floor_hours(rows, {k: model_flops(*k) for k in keys}, per_core)
    lines = ['', f"compute floor of profile {profile}: downstream training and sampling of the {len(rows)} executed runs at "
             f"{per_core:.1f} GFLOP/s per core (DESIGN.md: {DESIGN_GFLOPS:.0f} GFLOP/s fp32 matmul on 2 idle cores)", '',
             "| model | runs | images trained | GFLOP/img (fwd+bwd) | train floor h | image-steps sampled | GFLOP/img-step (guidance 3) | sample floor h |",
             "|---|---|---|---|---|---|---|---|"]
    for r in fl:
        lines.append(f"| {r['model']} | {r['runs']} | {r['train_images']:,} | {r['gflop_train']:.2f} | {r['train_h']:.2f} | "
                     f"{r['sample_image_steps']:,} | {r['gflop_sample']:.2f} | {r['sample_h']:.2f} |")
    total = sum(r['train_h'] + r['sample_h'] for r in fl)
    lines += [f"| all | {len(rows)} | | | {sum(r['train_h'] for r in fl):.2f} | | | {sum(r['sample_h'] for r in fl):.2f} |", '',
              f"floor for these runs: {total:.1f} CPU-h (training + sampling only; rater meta-training, proxies, features and start-up "
              f"come on top); recorded wall time of every executed run of the profile: {measured_hours(profile):.1f} CPU-h"]
    if bf16:
        f32, b16, ratio = bf16_speedup()
        lines.append(f"bf16 autocast, bare training step of unet:s:32, one thread, median of 3 alternating pairs: "
                     f"{f32:.1f} -> {b16:.1f} img/s ({ratio:.2f}x); the results in reports/ are fp32")
    return '\n'.join(lines) + '\n'


def report(profile: str) -> str:
    "The budget of `profile` as a markdown table with a few lines of reading."
    per, corpora = budget(profile)
    h = lambda s: f"{s / 3600:.1f}"
    lines = [f"profile {profile}: estimated one-thread CPU-hours per table (runs shared between tables counted once, where first listed)", '',
             "| table | runs | finished | raters | est. CPU-h | est. CPU-h left | finished: measured h / est. h |", "|---|---|---|---|---|---|---|"]
    tot = defaultdict(float)
    for name, p in per.items():
        lines.append(f"| {name} | {p['runs']} | {p['done']} | {p['raters']} | {h(p['est'])} | {h(p['est_left'])} | "
                     + (f"{h(p['measured'])} / {h(p['est_of_done'])}" if p['done'] else '-') + " |")
        for k in ('runs', 'done', 'est', 'est_left', 'measured', 'est_of_done'): tot[k] += p[k]
    cache = sum(CACHE_S.get(c, 600.0) for c in corpora)
    lines += [f"| all | {int(tot['runs'])} | {int(tot['done'])} | | {h(tot['est'] + cache)} | {h(tot['est_left'])} (+ the caches, if not yet built) | "
              f"{h(tot['measured'])} / {h(tot['est_of_done'])} |", '',
              f"one-off corpus caches (judge, reference features, captions, baseline scorer): ~{h(cache)} h, included in 'all'",
              "on 2 cores with --jobs 2: wall time ~ half the CPU-hours"]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--profile', default='paper')
    ap.add_argument('--floor', action='store_true', help='add the compute floor of the executed runs (reports/results)')
    ap.add_argument('--bf16', action='store_true', help='with --floor: also time fp32 vs bf16-autocast training steps')
    ap.add_argument('--out', default='', help='also write the table, with its record (date, git, machine), to this file')
    a = ap.parse_args(argv)
    text = report(a.profile)
    if a.floor:
        text += floor_report(a.profile, bf16=a.bf16)
    print(text, end='')
    if a.out:
        git = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        flags = (' --floor' if a.floor else '') + (' --bf16' if a.bf16 else '')
        head = (f"# What the `{a.profile}` profile costs on this machine\n\nWritten by `python scripts/paper_budget.py --profile {a.profile}{flags} --out {a.out}` "
                f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC (git {git}; {platform.platform()}, {os.cpu_count()} cores).\n"
                f"The estimate is a cost model (see the script's docstring); the last column checks it against the recorded wall time of finished runs.\n\n")
        Path(a.out).write_text(head + text)
    return 0


if __name__ == '__main__': sys.exit(main())
