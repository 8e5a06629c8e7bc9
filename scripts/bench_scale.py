"""Throughput at 1 and N processes on this machine (issue 20, item 5), each process one thread (gloo on CPU):
downstream training under DDP (`alchemist.train.fit`, the same global batch), streaming a corpus's shards split by rank
(`alchemist.data.corpus_dataset`), scoring a corpus with a rater (`alchemist.scoring.score_corpus`, chunks of whole
batches dealt to ranks) and meta-training a rater's population over ranks (`alchemist.bilevel.meta_train`).

    .venv/bin/python scripts/bench_scale.py --out reports/benchmarks/scale.md   # the measurement (run it on a quiet box)
    .venv/bin/python scripts/bench_scale.py --tiny                              # a minute: checks the script works, numbers meaningless

Every part runs in the same spawned processes, with the environment torchrun gives its ranks, so a row of N processes
is what `torchrun --nproc_per_node N` would run. What each row times (warm-ups excluded):
- train: the training steps after the first (`fit`'s `on_step` hook, on rank 0; DDP keeps the ranks in step, and the
  other ranks' CPU share comes from `fit`'s own per-step clocks); rate = global images per second.
- read: one pass over the corpus's shards, each rank its own shards; rate = samples per second, all ranks together.
- score: an untrained default-size rater over a synthetic corpus (`--score-resolution`, 32 px): the scoring loop and
  merge (the `Timer` whose rate `score_corpus` records; chunks of whole batches, chunk c to rank c % N); the caches are
  built before by a 1-process warm-up run to a throwaway table, so every timed run starts from warm caches. The N-process
  table is checked to equal the 1-process one bit for bit.
- meta: the meta-steps after the first of `meta_train` (population `--population` dealt out over the ranks, one
  member a rank at N = population), plus a population of population / max(N) on one process: the same members a
  process, so its meta-step time against the N-process row's says whether more ranks buy a larger population at the
  same wall time (ratio 1). Warm proxy, probe scoring, resets and early stopping are off (one-off costs).
Per row: wall seconds of the timed window (slowest rank), cpu/wall summed over the ranks (the cores the row got: near N
means every process had its core; far from N means a contended box, and the row measures the contention), the 1-minute
load average before and after, threads per process (torch's intra-op threads / the OS threads, gloo's included), and
the rate's ratio to one process (ideal: N on a box with N free cores). `--out` also writes the tables as a markdown
report (date, git revision, machine, command, load, a reading); a JSON line after the printed tables holds the rows.
A failed check (a sample read twice or never, N-process scores unlike 1-process ones) exits non-zero after the report.
On a shared box, `OMP_WAIT_POLICY=PASSIVE` (as the Makefile sets it) keeps waiting threads from spinning.
"""
import argparse, json, math, os, platform, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import alchemist.bilevel as bilevel
import alchemist.scoring as scoring
from alchemist.core import atomic_path, config_from_dict, git_revision, machine_info
from alchemist.data import corpus_dataset, read_scores, write_corpus
from alchemist.rater import Rater, RaterConfig, save_rater
from alchemist.synthetic import SyntheticConfig, build_synthetic
from alchemist.train import TrainConfig, fit, free_port, init_distributed, torchrun_env

PARTS = ('train', 'read', 'score', 'meta')
# Settings of --tiny: a few steps and batches of everything (the UNet proxy would take minutes even at one step)
TINY = dict(steps=3, batch=8, n_images=48, shard_size=8, score_n=128, score_resolution=16, score_batch=16, chunk_batches=2,
            meta_steps=2, meta_batch=8, meta_resolution=8, meta_proxy='tiny', meta_n=96)
CONTENDED = 0.25   # a row's cpu/wall further than this fraction from N gets a note



def _os_threads() -> int:
    "Threads of this process (Linux /proc; -1 elsewhere)."
    try:
        for line in open('/proc/self/status'):
            if line.startswith('Threads:'): return int(line.split()[1])
    except OSError: pass
    return -1


def _load() -> float: return os.getloadavg()[0]


def _sync(world: int):
    if world > 1: dist.barrier()


def _clock(world: int, body) -> tuple:
    """Run `body()` on every rank from a common start: (its result, this rank's wall and CPU seconds of the call, the
    1-minute load average before and after it, torch's and the OS's thread count of this process)."""
    _sync(world)
    load0, t0, c0 = _load(), time.perf_counter(), time.process_time()
    out = body()
    m = dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0, load_before=load0, load_after=_load(),
             torch_threads=torch.get_num_threads(), os_threads=_os_threads())
    _sync(world)
    return out, m


def _window(marks: list) -> tuple:
    "(timed steps, wall s, CPU s) between the first and the last (wall, cpu) clock mark: the steps after the first."
    if len(marks) < 2: raise ValueError(f"need at least 2 steps to time the ones after the warm-up step, got {len(marks)}")
    return len(marks) - 1, marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]


def _mark() -> tuple: return time.perf_counter(), time.process_time()


class _StepClock:
    """Measurement hook: a (wall, cpu) clock mark after every `MetaState.population_step` of this process (one meta-step
    of its members, the all-reduce included), so the meta-steps after the first are timed without the run's setup."""
    def __enter__(self):
        self.marks, self._orig = [], bilevel.MetaState.population_step
        orig, marks = self._orig, self.marks
        def population_step(st, *a, **k):
            out = orig(st, *a, **k); marks.append(_mark()); return out
        bilevel.MetaState.population_step = population_step
        return self
    def __exit__(self, *exc): bilevel.MetaState.population_step = self._orig


class _ScoringClock:
    """Measurement hook: the wall and CPU seconds of the `Timer`s `score_corpus` runs in this process; the outermost
    (the largest: it encloses every chunk's) is the window its recorded rate is taken over (the scoring loop and merge)."""
    def __enter__(self):
        self.runs, self._orig = [], scoring.Timer
        runs = self.runs
        class Timer(self._orig):
            def __exit__(s, *exc): super().__exit__(*exc); runs.append((s.wall, s.cpu))
        scoring.Timer = Timer
        return self
    def __exit__(self, *exc): scoring.Timer = self._orig
    def window(self) -> tuple:
        if not self.runs: raise RuntimeError("score_corpus ran no Timer: the scoring clock hook no longer matches alchemist.scoring")
        return max(self.runs)


# --- the parts, as each rank runs them -----------------------------------------------------------------------------------

def _train_data(n: int, res: int):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, res, res, 3), generator=g, dtype=torch.uint8)
    toks = torch.randn(n, 8, 384, generator=g).half(); mask = torch.zeros(n, 8, dtype=torch.bool); mask[:, :6] = True
    return imgs, toks, mask, [f'u{i}' for i in range(n)]


def _train(rank: int, world: int, a: dict, work: Path) -> list:
    cfg = config_from_dict(TrainConfig, dict(model=dict(resolution=a['resolution']), budget='steps', steps=a['steps'], batch_size=a['batch'],
                                             ckpt_every=10**9, warmup_steps=0, device='cpu', resume=False))
    marks, data = [], _train_data(a['n_train'], a['resolution'])
    def on_step(step, model):                                            # rank 0 only: after every optimiser step (and at 0, before the first)
        if step: marks.append(_mark())
    res, m = _clock(world, lambda: fit(cfg, *data, work/f'train-n{world}', on_step=on_step))
    if rank == 0: k, m['wall'], m['cpu'] = _window(marks)               # the world's steps: DDP's all-reduce keeps the ranks in step
    else: k, m['wall'], m['cpu'] = 0, None, None                         # fit calls on_step on rank 0 alone: this rank's CPU share from
    m['cpu_ratio_self'] = res['images_per_s'] / res['images_per_cpu_s']  # fit's own per-step clocks (CPU s per wall s over its steady steps)
    return [dict(part='train', world=world, units=k * a['batch'], **m)]


def _read(rank: int, world: int, a: dict, work: Path) -> list:
    n, m = _clock(world, lambda: sum(1 for _ in corpus_dataset(a['corpus'])))   # decoded samples of this rank's shards
    return [dict(part='read', world=world, units=n, **m)]


def _score(rank: int, world: int, a: dict, work: Path) -> list:
    cfg = config_from_dict(scoring.ScoringConfig, dict(rater=a['rater'], corpus_dir=a['score_corpus'], split=None, batch_size=a['score_batch'],
                                                       chunk_batches=a['chunk_batches'], device='cpu', out=str(work/f'scores-n{world}.parquet')))
    with _ScoringClock() as clock: out, m = _clock(world, lambda: scoring.score_corpus(cfg))
    m['wall'], m['cpu'] = clock.window()
    return [dict(part='score', world=world, units=a['score_n'], table=str(out), **m)]


def meta_config(a: dict, population: int, out_dir: Path) -> bilevel.MetaConfig:
    """The recommended setting of `--meta-mode` (`learning_config`) at the benchmark's size, with the one-off costs off
    (warm proxy, probe scoring, resets, early stopping): one warm-up meta-step, then `meta_steps` timed ones in one row."""
    n = 1 + a['meta_steps']
    kw = dict(proxy=a['meta_proxy'], resolution=a['meta_resolution'], batch=a['meta_batch'], population=population, meta_steps=n,
              log_every=n, warm_steps=0, reset_every=0, probe_n=0, stop_spearman=0.0, device='cpu', seed=0, out_dir=str(out_dir), resume=False)
    if a['tiny']: kw.update(rater=dict(width=8, depth=1), strata=2)
    return bilevel.learning_config(a['meta_mode'], **kw)


def _meta(rank: int, world: int, a: dict, work: Path) -> list:
    splits = bilevel.toy_meta_splits(a['meta_n'], a['meta_resolution'], seed=0)
    pops = [a['population']] + ([a['population'] // a['max_world']] if world == 1 and a['population'] // a['max_world'] != a['population'] else [])
    rows = []
    for P in pops:
        cfg = meta_config(a, P, work/f'meta-n{world}-p{P}')
        with _StepClock() as clock: _, m = _clock(world, lambda: bilevel.meta_train(cfg, splits=splits))
        k, m['wall'], m['cpu'] = _window(clock.marks)
        rows.append(dict(part='meta', world=world, population=P, members_a_rank=P // world, units=k, **m))
    return rows


PART_FNS = dict(train=_train, read=_read, score=_score, meta=_meta)


def _rank(rank: int, world: int, port: int, a: dict, work: str):
    "One process of a world of `world` (the environment torchrun would give it): every part in turn; its rows to rank<r>.json."
    os.environ.update(torchrun_env(rank, world, port))
    torch.set_num_threads(1)
    init_distributed('cpu')
    try:
        rows = [r for part in a['parts'] for r in PART_FNS[part](rank, world, a, Path(work))]
        Path(work, f'rank{rank}-n{world}.json').write_text(json.dumps(rows))
    finally:
        if world > 1: dist.destroy_process_group()


# --- the parent: prepare, spawn, aggregate, report -----------------------------------------------------------------------

def _merge_ranks(ranks: list) -> list:
    "One row per measurement from every rank's: wall = the slowest rank's, cpu/wall summed over ranks, rank 0's load, most threads."
    rows = []
    for rs in zip(*ranks):
        r0, wall = rs[0], max(r['wall'] for r in rs if r['wall'] is not None)
        units = sum(r['units'] for r in rs) if r0['part'] == 'read' else r0['units']   # read: each rank its own samples
        cpu = sum(r['cpu'] if r['cpu'] is not None else r['cpu_ratio_self'] * wall for r in rs)   # (train: ranks > 0 from fit's clocks)
        row = {k: v for k, v in r0.items() if k not in ('wall', 'cpu', 'units', 'torch_threads', 'os_threads', 'cpu_ratio_self')}
        row.update(units=units, wall_s=wall, rate=units / max(wall, 1e-9), cpu_ratio=cpu / max(wall, 1e-9),
                   torch_threads=max(r['torch_threads'] for r in rs), os_threads=max(r['os_threads'] for r in rs))
        if row['part'] == 'meta': row['member_rate'] = row['rate'] * row['population']
        rows.append(row)
    return rows


def measure(world: int, a: dict, work: Path) -> list:
    "Every part's rows with `world` processes (spawned, as torchrun would start them)."
    mp.spawn(_rank, args=(world, free_port(), a, str(work)), nprocs=world, join=True)
    return _merge_ranks([json.loads((work/f'rank{r}-n{world}.json').read_text()) for r in range(world)])


def _prepare_scoring(a: dict, d: Path) -> dict:
    "A synthetic corpus, an untrained rater for it, and a 1-process warm-up scoring that builds the image and caption caches."
    res = a['score_resolution']
    corpus = build_synthetic(SyntheticConfig(n=a['score_n'], resolution=res, seed=0, shard_size=max(64, a['score_n'] // 8)), d/'synthetic')
    torch.manual_seed(0)
    rater = Rater(RaterConfig(resolution=res))                      # untrained, default size: throughput does not depend on the weights
    ck = save_rater(rater, d/'rater.pt', corpus=dict(name=corpus.name, resolution=res))
    t0 = time.perf_counter()
    scoring.score_corpus(config_from_dict(scoring.ScoringConfig, dict(rater=str(ck), corpus_dir=str(corpus), split=None, batch_size=a['score_batch'],
                                                                      chunk_batches=a['chunk_batches'], device='cpu', out=str(d/'warmup.parquet'))))
    print(f"scoring warm-up (builds the caches, not timed): {time.perf_counter() - t0:.1f}s", flush=True)
    return dict(rater=str(ck), score_corpus=str(corpus))


def _ratios(rows: list) -> None:
    "Each row's rate over the one-process row of its part (and population): `ratio`; meta: member-steps per second likewise."
    for r in rows:
        same = [b for b in rows if b['part'] == r['part'] and b.get('population') == r.get('population')]
        base = min(same, key=lambda b: b['world'])
        r['ratio'], r['ratio_to'] = r['rate'] / base['rate'], base['world']


def _notes(r: dict, cpus: int, a: dict) -> list:
    N, notes = r['world'], []
    if abs(r['cpu_ratio'] - N) > CONTENDED * N:
        notes.append(f"cpu/wall {r['cpu_ratio']:.2f} for {N} process{'es' if N > 1 else ''}: "
                     + ("contended box, the processes did not get their cores" if r['cpu_ratio'] < N else "more CPU than one thread a process (extra threads busy)"))
    if r['part'] == 'meta' and r['population'] != a['population']:
        notes.append(f"the same-wall reference: {r['population']} member{'s' if r['population'] > 1 else ''} a process, as at N={a['max_world']}")
    if r['part'] == 'score':
        n_chunks = math.ceil(a['score_n'] / (a['score_batch'] * a['chunk_batches']))
        shares = [len(scoring.rank_chunks(n_chunks, k, N)) for k in range(N)]
        if len(set(shares)) > 1: notes.append(f"uneven chunks a rank {shares}: the ideal ratio is {n_chunks / max(shares):.2f}, not {N}")
    return notes


UNITS = dict(train='images/s', read='samples/s', score='pairs/s', meta='meta-steps/s')
TITLES = dict(train='Downstream training under DDP (`alchemist.train.fit`)', read='Shard streaming by rank (`alchemist.data.corpus_dataset`)',
              score='Scoring (`alchemist.scoring.score_corpus`)', meta='Meta-training, population over ranks (`alchemist.bilevel.meta_train`)')


def _table(part: str, rows: list, cpus: int, a: dict) -> str:
    rs = [r for r in rows if r['part'] == part]
    meta = part == 'meta'
    head = ['processes'] + (['population', 'members a rank'] if meta else []) + [UNITS[part]] + (['member-steps/s'] if meta else []) \
        + ['ratio to N=1', 'timed', 'wall s', 'cpu/wall', 'load before → after', 'threads (torch / OS)', 'note']
    timed = dict(train=lambda r: f"{r['units'] // a['batch']} steps", read=lambda r: f"{r['units']} samples",
                 score=lambda r: f"{r['units']} pairs", meta=lambda r: f"{r['units']} meta-step{'s' if r['units'] > 1 else ''}")[part]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rs:
        cells = [str(r['world'])] + ([str(r['population']), str(r['members_a_rank'])] if meta else []) + [f"{r['rate']:,.3g}" if meta else f"{r['rate']:,.1f}"] \
            + ([f"{r['member_rate']:.3g}"] if meta else []) \
            + [f"{r['ratio']:.2f}" + ('' if r['ratio_to'] == 1 else f" (to N={r['ratio_to']})"), timed(r), f"{r['wall_s']:.2f}", f"{r['cpu_ratio']:.2f}",
               f"{r['load_before']:.2f} → {r['load_after']:.2f}", f"{r['torch_threads']} / {r['os_threads']}", '; '.join(_notes(r, cpus, a)) or '-']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _meta_same_wall(rows: list) -> dict | None:
    "The population P on max N processes against P / max N members on one process: meta-step wall ratio (1 = a N times larger population at the same wall time)."
    ms = [r for r in rows if r['part'] == 'meta']
    if not ms: return None
    big = max(ms, key=lambda r: (r['world'], r['population']))
    ref = [r for r in ms if r['world'] == 1 and r['population'] == big['members_a_rank'] and big['world'] > 1]
    if not ref: return None
    ref = ref[0]
    return dict(big=big, ref=ref, ratio=(1 / big['rate']) / (1 / ref['rate']))


def _reading(rows: list, checks: dict, same_wall: dict | None, tiny: bool, load_start: float, cpus: int) -> str:
    "A one-paragraph reading of the tables, from the numbers."
    top = max(r['world'] for r in rows)
    parts = []
    for part in PARTS:
        r = [x for x in rows if x['part'] == part and x['world'] == top]
        if r and top > 1: parts.append(f"{part} {r[0]['ratio']:.2f}x")
    bad = [f"{r['part']} at N={r['world']}" for r in rows if abs(r['cpu_ratio'] - r['world']) > CONTENDED * r['world']]
    s = []
    if tiny: s.append("A --tiny run: it checks that the script works; its numbers are meaningless.")
    if load_start > 0.5: s.append(f"The box was not quiet: load average {load_start:.2f} on {cpus} cores at the start.")
    if parts: s.append(f"With {top} processes against one (ideal: {top} on a box with {top} free cores): " + ', '.join(parts) + '.')
    if same_wall:
        b, r = same_wall['big'], same_wall['ref']
        s.append(f"Meta-training a population of {b['population']} over {b['world']} processes took {same_wall['ratio']:.2f}x the wall time per "
                 f"meta-step of a population of {r['population']} on one process (1.00 = a {b['population'] // r['population']}x larger population at the same wall time).")
    if 'scores_equal' in checks:
        s.append(f"The {top}-process score table {'equals' if checks['scores_equal'] else 'DIFFERS FROM'} the 1-process one "
                 f"{'bit for bit' if checks['scores_equal'] else '(a bug: see tests/test_scale.py)'}.")
    if bad: s.append(f"cpu/wall was far from N for {', '.join(bad)}: the box was contended there, so those rates measure the contention, not the code; measure again on a quiet box.")
    elif rows: s.append("Every row's cpu/wall is within 25% of its process count: each process had its core, so the ratios measure the code's scaling.")
    return ' '.join(s)


def _cpu_model() -> str:
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown'


def report(a: argparse.Namespace, rows: list, checks: dict, same_wall: dict | None, loads: tuple, started: str, cpus: int, args: dict) -> str:
    "The markdown report: when, what, where, the tables, the checks and a reading."
    mi = machine_info()
    ms = ['# Scale benchmark: 1 and N processes (`scripts/bench_scale.py`)', '',
          f"- Date: {started} (UTC); git `{git_revision()}`",
          f"- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`" + (' (--tiny: numbers meaningless)' if a.tiny else ''),
          f"- Machine: {_cpu_model()}, {cpus} cores, {mi['platform']}, Python {mi['python']}, torch {mi['torch']}"
          + (f", GPU {mi['gpu']}" if mi['cuda'] else ', CPU only') + "; every process 1 torch thread, gloo",
          f"- Load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in loads[0])} at start, {' / '.join(f'{x:.2f}' for x in loads[1])} at the end",
          f"- Sizes: " + ', '.join(f"{k}={v}" for k, v in args.items() if k not in ('corpus', 'rater', 'score_corpus', 'parts', 'max_world', 'tiny')), '']
    for part in PARTS:
        if any(r['part'] == part for r in rows): ms += [f"## {TITLES[part]}", '', _table(part, rows, cpus, args), '']
    if same_wall:
        b, r = same_wall['big'], same_wall['ref']
        ms += [f"Population {b['population']} on {b['world']} processes: {1 / b['rate']:.3g} s a meta-step; population {r['population']} on 1 process: "
               f"{1 / r['rate']:.3g} s; ratio **{same_wall['ratio']:.2f}** (1.00 = more ranks buy a larger population at the same wall time).", '']
    if 'scores_equal' in checks:
        ms += [f"Scores at N = {checks['scores_world']} equal N = {checks['scores_base']} bit for bit: **{checks['scores_equal']}** ({checks['scores_n']} pairs).", '']
    ms += ['## Reading', '', _reading(rows, checks, same_wall, a.tiny, loads[0][0], cpus), '']
    return '\n'.join(ms)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--nproc', default='1,2', help='process counts to measure, comma-separated (default 1,2)')
    p.add_argument('--parts', default=','.join(PARTS), help=f"what to measure, comma-separated (default {','.join(PARTS)})")
    p.add_argument('--steps', type=int, default=60, help='training steps per measurement; the first is not timed (default 60)')
    p.add_argument('--batch', type=int, default=64, help='global training batch (default 64; a multiple of every process count)')
    p.add_argument('--resolution', type=int, default=16, help='image side in px of training and of the corpus read (default 16)')
    p.add_argument('--n-images', type=int, default=2000, help='images in the training set and in the corpus read (default 2000)')
    p.add_argument('--shard-size', type=int, default=100, help='samples per shard of the corpus read (default 100)')
    p.add_argument('--score-n', type=int, default=40960, help='pairs in the synthetic corpus scored (default 40960)')
    p.add_argument('--score-resolution', type=int, default=32, help='image side in px of the corpus scored and its rater: 16, 32 or 64 (default 32)')
    p.add_argument('--score-batch', type=int, default=256, help='scoring batch (default 256, the paper)')
    p.add_argument('--chunk-batches', type=int, default=4, help='batches a scoring chunk (default 4: 40 chunks of 1024 pairs, 20 a rank at N=2)')
    p.add_argument('--population', type=int, default=2, help='meta-training population (default 2; a multiple of every process count)')
    p.add_argument('--meta-mode', default='alignment', choices=bilevel.MODES, help='meta-training mode, at its learning_config setting (default alignment)')
    p.add_argument('--meta-proxy', default='unet', help="proxy T2I: 'unet' (alchemist.t2i, size s) or 'tiny' (default unet)")
    p.add_argument('--meta-resolution', type=int, default=16, help='meta-training image side in px (default 16)')
    p.add_argument('--meta-batch', type=int, default=64, help='meta-training held-out and train batch (default 64)')
    p.add_argument('--meta-steps', type=int, default=5, help='timed meta-steps, after one warm-up step (default 5)')
    p.add_argument('--meta-n', type=int, default=512, help='pairs of the toy meta-training splits (default 512)')
    p.add_argument('--tiny', action='store_true', help='a minute, to check the script works (numbers meaningless)')
    p.add_argument('--out', default='', help='also write a markdown report here (e.g. reports/benchmarks/scale.md); without it, only print')
    a = p.parse_args(argv)
    if a.tiny:
        for k, v in TINY.items(): setattr(a, k, v)
    worlds = [int(x) for x in a.nproc.split(',')]
    parts = [x.strip() for x in a.parts.split(',') if x.strip()]
    if any(w < 1 for w in worlds): p.error(f"--nproc: process counts must be >= 1, got {worlds}")
    if sorted(set(worlds)) != worlds: p.error(f"--nproc: give increasing process counts, without repeats, got {worlds}")
    if set(parts) - set(PARTS): p.error(f"--parts: unknown {sorted(set(parts) - set(PARTS))}; choose from {PARTS}")
    if 'train' in parts and [w for w in worlds if a.batch % w]: p.error(f"--batch {a.batch} is not a multiple of the process count(s) {[w for w in worlds if a.batch % w]}")
    if 'meta' in parts and [w for w in worlds if a.population % w]:
        p.error(f"--population {a.population} is not a multiple of the process count(s) {[w for w in worlds if a.population % w]}")
    if 'meta' in parts and a.meta_steps < 1: p.error("--meta-steps must be >= 1")
    if 'train' in parts and a.steps < 2: p.error("--steps must be >= 2 (the first is not timed)")
    if 'score' in parts and a.score_resolution not in (16, 32, 64): p.error(f"--score-resolution {a.score_resolution}: the synthetic corpus is 16, 32 or 64 px")
    os.environ.setdefault('ALCHEMIST_LOG', 'WARNING')      # the library's per-run INFO lines would bury the tables (the ranks inherit these)
    os.environ.setdefault('ALCHEMIST_PROGRESS', '0')
    torch.set_num_threads(1)
    cpus, started, load0 = os.cpu_count(), datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M'), os.getloadavg()
    args = dict(parts=parts, tiny=a.tiny, max_world=max(worlds), steps=a.steps, batch=a.batch, resolution=a.resolution,
                n_train=min(a.n_images, 10 * a.batch), n_images=a.n_images, shard_size=a.shard_size, score_n=a.score_n, score_resolution=a.score_resolution, score_batch=a.score_batch,
                chunk_batches=a.chunk_batches, population=a.population, meta_mode=a.meta_mode, meta_proxy=a.meta_proxy,
                meta_resolution=a.meta_resolution, meta_batch=a.meta_batch, meta_steps=a.meta_steps, meta_n=max(a.meta_n, 8 * a.meta_batch))
    checks = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if 'read' in parts:
            rng = np.random.default_rng(0)
            write_corpus((dict(uid=f's{i:06d}', image=rng.integers(0, 255, (a.resolution, a.resolution, 3), dtype=np.uint8), caption=f'sample {i}')
                          for i in range(a.n_images)), d/'corpus', shard_size=a.shard_size)
            args['corpus'] = str(d/'corpus')
        if 'score' in parts: args.update(_prepare_scoring(args, d))
        rows = []
        for w in worlds:
            (d/f'n{w}').mkdir()
            rows += measure(w, args, d/f'n{w}')
            print(f"measured {w} process{'es' if w > 1 else ''}", flush=True)
        if 'score' in parts and len(worlds) > 1:
            tables = {r['world']: r['table'] for r in rows if r['part'] == 'score'}
            one, many = read_scores(tables[min(worlds)]), read_scores(tables[max(worlds)])
            try: pd.testing.assert_frame_equal(one, many, check_exact=True); same = True
            except AssertionError: same = False
            checks.update(scores_equal=same, scores_n=len(one), scores_world=max(worlds), scores_base=min(worlds))
    for r in rows: r.pop('table', None)
    _ratios(rows)
    same_wall = _meta_same_wall(rows)
    text = report(a, rows, checks, same_wall, (load0, os.getloadavg()), started, cpus, args)
    print(text)
    print(json.dumps(dict(args={k: v for k, v in args.items() if k not in ('corpus', 'rater', 'score_corpus')}, rows=rows, checks=checks,
                          same_wall_ratio=same_wall['ratio'] if same_wall else None, machine=machine_info())))
    if a.out:
        out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp: Path(tmp).write_text(text)
        print(f"report: {out}")
    failed = [f"{r['world']} processes read {r['units']} of {a.n_images} samples" for r in rows if r['part'] == 'read' and r['units'] != a.n_images]
    if checks.get('scores_equal') is False: failed.append(f"the {max(worlds)}-process score table differs from the 1-process one")
    if failed: sys.exit('check failed: ' + '; '.join(failed))
    return rows


if __name__ == '__main__':
    main()
