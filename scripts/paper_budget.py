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
"""
import argparse, datetime, json, os, platform, subprocess, sys
from collections import defaultdict
from pathlib import Path

from alchemist.reproduce import TABLES, plan, finished_runs
from alchemist.experiments import RATER_SAMPLERS

# one-thread training images/s at 32 px, UNet s measured (T3 paper runs: 32-35 img/s); others scaled by bench ratios
TRAIN_RATE_32 = {('unet', 's'): 33.0, ('unet', 'm'): 33.0 * 35.1 / 62.3, ('unet', 'l'): 33.0 * 12.2 / 62.3,
                 ('pixart', 's'): 33.0 * 128.1 / 62.3, ('pixart', 'm'): 33.0 * 48.8 / 62.3, ('pixart', 'l'): 33.0 * 19.3 / 62.3}
SAMPLE_S_PER_IMG_32 = 55.0 / 128   # UNet s, 20 DDIM steps with guidance, one thread (T3 paper: 41-70 s for 128)
EVAL_FIXED_S = 15.0                # features + judges per evaluation
RUN_OVERHEAD_S = 30.0              # kernel start, imports, corpus and caption loading
RATER_PENALTY_S_PER_EPOCH = 90.0   # T3 paper: 150-200 s for 2 meta-epochs, Fig5 paper: 220-240 s for 3
MODE_FACTOR = {'penalty': 1.0, 'unrolled': 4.51 / 2.06, 'alignment': 3.9 / 2.06}
TRAIN_SHARE = 0.8026               # train split / corpus_n (16,052 of 20,000)
CACHE_S = {'synthetic': 600.0, 'web': 1500.0}   # judge + reference features + caption embeddings, once per corpus


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
    imgs = c['corpus_n'] * TRAIN_SHARE * (1.0 if c['method'] == 'full' else c['retention']) * c['epochs']
    train = imgs / TRAIN_RATE_32[(fam, size)] * scale(res)
    samp = c['eval_samples'] * SAMPLE_S_PER_IMG_32 * scale(res) * TRAIN_RATE_32[('unet', 's')] / TRAIN_RATE_32[(fam, size)]
    needs = c['method'] in RATER_SAMPLERS or c['method'] == 'alchemist'
    return RUN_OVERHEAD_S + train + samp + EVAL_FIXED_S, (rk if needs else None)


def rater_cost(rk) -> float:
    corpus, n, res, seed, mode, mlp, epochs, proxy = rk
    return RATER_PENALTY_S_PER_EPOCH * epochs * MODE_FACTOR[mode] * scale(res) * n / 20000


def budget(profile: str):
    "Per table: runs (shared runs counted once, where first listed), finished runs, estimated and measured seconds."
    seen, raters = set(), set()
    done_keys = finished_runs(None, profile)
    per = defaultdict(lambda: dict(runs=0, done=0, raters=0, est=0.0, est_left=0.0, measured=0.0, est_of_done=0.0))
    corpora = set()
    for name, t in TABLES.items():
        for r in plan(name, profile):
            c = json.loads(r.config_key)
            if t.shares_runs:
                if r.config_key in seen: continue
                seen.add(r.config_key)
            corpora.add(c['corpus'])
            done_dir = r.dir if r.done else done_keys.get(r.config_key) if t.shares_runs else None
            s, rk = run_cost(c, not t.shares_runs, name)
            if rk is not None and rk not in raters:   # a rater is trained once, by the first run that needs it
                raters.add(rk); per[name]['raters'] += 1; s_rater = rater_cost(rk)
            else: s_rater = 0.0
            p = per[name]; p['runs'] += 1; p['est'] += s + s_rater
            if done_dir is None: p['est_left'] += s + s_rater; continue
            p['done'] += 1; p['est_of_done'] += s
            try: p['measured'] += float(json.loads((Path(done_dir)/'run.json').read_text()).get('wall_s', 0) or 0)
            except (OSError, ValueError): pass
    return per, corpora


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
    ap.add_argument('--out', default='', help='also write the table, with its record (date, git, machine), to this file')
    a = ap.parse_args(argv)
    text = report(a.profile)
    print(text, end='')
    if a.out:
        git = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        head = (f"# What the `{a.profile}` profile costs on this machine\n\nWritten by `python scripts/paper_budget.py --profile {a.profile} --out {a.out}` "
                f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC (git {git}; {platform.platform()}, {os.cpu_count()} cores).\n"
                f"The estimate is a cost model (see the script's docstring); the last column checks it against the recorded wall time of finished runs.\n\n")
        Path(a.out).write_text(head + text)
    return 0


if __name__ == '__main__': sys.exit(main())
