"""Meta-training over ranks (issue 20, item 2): the rater's population dealt out over 2 CPU processes (gloo, 1 thread each)
ends with the rater of the 1-process run of the same population, every rank keeps the same rater, and a stopped 2-process
run resumes (under 2 or 1 processes) to the rater of an uninterrupted run."""
import json, os, shutil
from pathlib import Path

import pytest, torch
import torch.multiprocessing as mp

from alchemist.bilevel import MetaConfig, meta_train, toy_meta_splits
from alchemist.core import ConfigError, config_from_dict
from alchemist.train import free_port, torchrun_env

torch.set_num_threads(1)
STEPS, STOP = 6, 2
BASE = dict(proxy='tiny', resolution=8, batch=8, lam_step=0.5, lr=3e-3, rater_lr=3e-3, rater=dict(width=8, depth=1),
            meta_steps=STEPS, log_every=2, population=2, reset_every=3)
UNET8 = dict(proxy='unet', proxy_kwargs=dict(channels=(8, 16)), warm_steps=4, warm_batch=16, warm_lr=3e-3, warm_probe=8, lr=1e-3, rater_lr=1e-3)
RUNS = {   # name: what differs from BASE
    'penalty': dict(probe_n=16),                                               # rank 0 scores the probe set, broadcasts the row
    'alignment_updates': dict(mode='alignment', meta_average='updates', timesteps='stratified', strata=2),
    'unrolled_p4': dict(mode='unrolled', population=4),                        # two members a rank
    'warm': dict(UNET8, meta_steps=3, log_every=1),                            # the warm proxy: rank 0 trains it, both load it
    'stop': dict(rater_lr=0.0, meta_steps=20, log_every=1, probe_n=16, stop_spearman=0.99, stop_patience=2),
}
# Why a tolerance at all: the population's mean meta-gradient (or mean step) is a sum over members, and over ranks it is
# summed per rank, then across ranks by the all-reduce. With one member a rank (population 2 over 2 processes) the
# all-reduce adds the same two numbers as one process does, and a + b == b + a in floating point: the runs agree bit for
# bit (measured here: gap 0.0 for every population-2 run). With two members a rank (population 4) the four are grouped
# (m0 + m2) + (m1 + m3) instead of ((m0 + m1) + m2) + m3: float32 rounding, carried through AdamW. Measured here (2-core
# x86 box, torch 2.14): largest rater weight gap 7.9e-6 after 6 unrolled meta-steps; the bound leaves room for other CPUs.
P4_TOL = 1e-4


def _splits(): return toy_meta_splits(96, 8, seed=0)


def _cfg(name: str, out: Path, warm_dir: Path, **kw) -> MetaConfig:
    d = {**BASE, **RUNS[name], 'out_dir': str(out), **kw}
    if 'warm_steps' in d: d['warm_dir'] = str(warm_dir)
    return config_from_dict(MetaConfig, d)



def _worker(rank: int, world: int, port: int, root: str):
    "One rank, as torchrun would start it (its environment variables); the process group starts inside `meta_train`."
    os.environ.update(torchrun_env(rank, world, port), ALCHEMIST_PROGRESS='0')
    torch.set_num_threads(1)
    root, sp, out = Path(root), _splits(), {}
    try:
        for name in RUNS:
            res = meta_train(_cfg(name, root/'ddp'/name, root/'warm-ddp'), splits=sp)
            out[name] = dict(history=res['history'], stopped_at=res.get('stopped_at'))
        meta_train(_cfg('penalty', root/'stopped', root, meta_steps=STOP), splits=sp)     # "killed" after its step-2 checkpoint ...
        if rank == 0: shutil.copytree(root/'stopped', root/'to_one')                      # (a copy is resumed under 1 process, in the test)
        torch.distributed.barrier()
        out['resumed'] = meta_train(_cfg('penalty', root/'stopped', root), splits=sp)['history']   # ... and resumed by a new call
        out['from_one'] = meta_train(_cfg('penalty', root/'from_one', root), splits=sp)['history']  # a 1-process checkpoint resumed by 2
        try: meta_train(_cfg('penalty', root/'odd', root, population=3), splits=sp)
        except ConfigError as e: out['odd'] = str(e)
        (root/f'rank{rank}.json').write_text(json.dumps(out, default=str))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp('meta_ddp')
    meta_train(_cfg('penalty', root/'from_one', root, meta_steps=STOP), splits=_splits())    # 1 process to step 2, then 2 processes
    mp.spawn(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    return root, [json.loads((root/f'rank{r}.json').read_text()) for r in range(2)]


@pytest.fixture(scope='module')
def one(tmp_path_factory):
    "The same runs in this one process: the reference (its own warm-proxy cache, trained here)."
    root = tmp_path_factory.mktemp('meta_one')
    return root, {name: meta_train(_cfg(name, root/name, root/'warm-one'), splits=_splits()) for name in RUNS}


def _rater(run_dir: Path) -> dict: return torch.load(Path(run_dir)/'checkpoint.pt', weights_only=False)['state']['rater']

def _gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize('name', [n for n in RUNS if n != 'unrolled_p4'])
def test_two_ranks_match_one_process(ddp, one, name):
    (root, ranks), (one_root, ones) = ddp, one
    a, b = _rater(one_root/name), _rater(root/'ddp'/name)
    print(f"{name}: largest rater gap, 2 processes vs 1: {_gap(a, b):.3g}")
    assert _gap(a, b) == 0.0                                            # one member a rank: the same sums, bit for bit
    h1, h2 = ones[name]['history'], ranks[0][name]['history']
    assert [h['step'] for h in h1] == [h['step'] for h in h2]
    for x, y in zip(h1, h2):
        for k in ('l_val', 'l_train', 'loss_rater'): assert x[k] == pytest.approx(y[k], rel=1e-12, abs=0), (k, x, y)
        assert y['rater_gap'] == 0.0 and 'rater_gap' not in x         # the ranks' copies of the rater are identical
    assert ranks[0][name] == ranks[1][name]                           # every rank returns the same history


def test_the_rater_moves_and_the_runs_write_what_one_process_writes(ddp, one):
    (root, _), (one_root, _) = ddp, one
    early = torch.load(root/'ddp'/'penalty'/'rater_step000002.pt', weights_only=False)['state']
    assert _gap(early, _rater(root/'ddp'/'penalty')) > 1e-4           # the rater moves from step 2 to 6: a stuck rater would match trivially
    for name in RUNS:
        assert sorted(p.name for p in (root/'ddp'/name).iterdir()) == sorted(p.name for p in (one_root/name).iterdir())
    ck = torch.load(root/'ddp'/'unrolled_p4'/'checkpoint.pt', weights_only=False)
    assert ck['world_size'] == 2 and len(ck['state']['population']) == 3   # every rank's members, in the one-process layout


def test_two_members_a_rank_match_within_float_rounding(ddp, one):
    (root, ranks), (one_root, _) = ddp, one
    gap = _gap(_rater(one_root/'unrolled_p4'), _rater(root/'ddp'/'unrolled_p4'))
    print(f"unrolled, population 4 over 2 processes: largest rater gap {gap:.3g}")
    assert gap < P4_TOL
    assert all(h['rater_gap'] == 0.0 for h in ranks[0]['unrolled_p4']['history'])


def test_warm_proxy_built_once_and_loaded_by_every_rank(ddp, one):
    (root, ranks), (_, ones) = ddp, one
    cache = list((root/'warm-ddp').iterdir())
    assert len(cache) == 1 and (cache[0]/'warm.json').exists()
    assert ones['warm']['warm']['key'] == cache[0].name.rsplit('-', 1)[1]                  # the same warm-up as one process's
    assert [h['resets'] for h in ranks[0]['warm']['history']] == [h['resets'] for h in ones['warm']['history']] == [0, 0, 1]


def test_stopping_rule_stops_every_rank(ddp):
    _, ranks = ddp
    assert [r['stop']['stopped_at'] for r in ranks] == [3, 3]
    assert [h['rank_spearman'] for h in ranks[1]['stop']['history']] == [None, 1.0, 1.0]


def test_a_stopped_two_process_run_resumes_exactly(ddp):
    root, ranks = ddp
    assert _gap(_rater(root/'stopped'), _rater(root/'ddp'/'penalty')) == 0.0
    full = torch.load(root/'ddp'/'penalty'/'checkpoint.pt', weights_only=False)['state']
    for k, v in torch.load(root/'stopped'/'checkpoint.pt', weights_only=False)['state']['population'][0]['proxy'].items():
        assert torch.equal(v, full['population'][0]['proxy'][k]), k                 # member 1 (rank 1's) went through the checkpoint
    drop = lambda h: [{k: v for k, v in r.items() if k != 'seconds'} for r in h]
    assert drop(ranks[0]['resumed']) == drop(ranks[0]['penalty']['history'])


def test_checkpoints_move_between_process_counts(ddp, one):
    "2 processes to step 2, then 1 process to step 6; and 1 process to step 2, then 2 processes: the 1-process rater."
    (root, _), (one_root, _) = ddp, one
    res = meta_train(_cfg('penalty', root/'to_one', root), splits=_splits())
    assert sum(h['steps'] for h in res['history']) == STEPS
    assert _gap(_rater(root/'to_one'), _rater(one_root/'penalty')) == 0.0
    assert _gap(_rater(root/'from_one'), _rater(one_root/'penalty')) == 0.0


def test_population_must_divide_over_ranks(ddp):
    _, ranks = ddp
    assert all('population = 3 is not a multiple of the 2 processes' in r['odd'] for r in ranks)
