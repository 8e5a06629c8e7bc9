"""Scale beyond one machine (issue 20): webdataset shards both ways, shards dealt out by rank, downstream training
under DDP (2 CPU processes, gloo, 1 thread each) matching one process, with a stopped run resumed; and scoring under
torchrun (2 processes) giving exactly the one-process table, with a stopped job resumed from its finished chunks."""
import json, os, shutil
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
import torch.multiprocessing as mp
import webdataset as wds
from PIL import Image

from alchemist import cli
from alchemist.core import config_from_dict, config_to_dict, read_json
from alchemist.data import corpus_dataset, import_webdataset, iter_samples, read_manifest, read_scores, write_corpus
from alchemist.rater import Rater, RaterConfig, save_rater
from alchemist.scoring import ScoringConfig, launch_scoring, parts_dir, score_corpus
from alchemist.toy import toy_corpus
from alchemist.train import TrainConfig, fit, free_port, load_checkpoint, torchrun_env

torch.set_num_threads(1)
N, STEPS, STOP = 16, 20, 10
# Why a tolerance at all: the ranks' gradients are averaged by an all-reduce, which adds the same numbers in another
# order than one process's batch mean; float32 rounding then drifts a little through AdamW. Measured here (2-core
# x86 box, torch 2.14): the largest relative gap over the 20 losses is 6e-7, the largest weight gap 4e-5 (AdamW divides
# by the gradient's running RMS, so near-zero gradients amplify rounding); the bounds leave room for other CPUs.
RTOL, WTOL = 1e-4, 1e-3


def _data():
    "The same tiny training set in every process (16 random 16 px images, random caption tokens)."
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (N, 16, 16, 3), generator=g, dtype=torch.uint8)
    toks = torch.randn(N, 6, 384, generator=g).half(); mask = torch.zeros(N, 6, dtype=torch.bool); mask[:, :4] = True
    return imgs, toks, mask, [f'u{i}' for i in range(N)]


def _cfg(**kw) -> TrainConfig:
    return config_from_dict(TrainConfig, dict(model=dict(resolution=16), budget='steps', steps=STEPS, batch_size=8, ckpt_every=5,
                                              warmup_steps=2, lr=2e-3, device='cpu', **kw))



def _worker(rank: int, world: int, port: int, root: str):
    "One rank, as torchrun would start it (its environment variables); the process group starts inside `fit`."
    os.environ.update(torchrun_env(rank, world, port), ALCHEMIST_PROGRESS='0')
    torch.set_num_threads(1)
    root, data, c = Path(root), _data(), _cfg()
    try:
        res = {'full': fit(c, *data, root/'ddp')}                       # 20 steps straight
        fit(c, *data, root/'stopped', stop_at=STOP)                      # killed after its step-10 checkpoint ...
        if rank == 0: shutil.copytree(root/'stopped', root/'to_one')     # (a copy is resumed under 1 process, in the test)
        torch.distributed.barrier()
        res['resumed'] = fit(c, *data, root/'stopped')                   # ... and resumed by a new fit
        res['shards'] = [s['uid'] for s in corpus_dataset(root/'corpus')]   # this rank's shards (wds.split_by_node)
        (root/f'rank{rank}.json').write_text(json.dumps(res, default=str))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    rng = np.random.default_rng(0)
    write_corpus((dict(uid=f's{i:02d}', image=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), caption=f'c {i}') for i in range(10)),
                 root/'corpus', shard_size=3)                            # 4 shards: rank 0 gets 0 and 2, rank 1 gets 1 and 3
    mp.spawn(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    return root, [json.loads((root/f'rank{r}.json').read_text()) for r in range(2)]


@pytest.fixture(scope='module')
def one(tmp_path_factory):
    "The same run in this one process: the reference."
    d = tmp_path_factory.mktemp('one')
    return d, fit(_cfg(), *_data(), d)


def _losses(run_dir: Path) -> np.ndarray: return np.array([h[1] for h in load_checkpoint(run_dir)['history']])


def test_two_processes_follow_the_one_process_loss_curve(ddp, one):
    (root, ranks), (one_dir, res) = ddp, one
    assert res['world_size'] == 1 and ranks[0]['full']['world_size'] == 2 and ranks[0]['full']['steps'] == STEPS
    a, b = _losses(one_dir), _losses(root/'ddp')
    print(f"largest relative gap of the 2-process loss curve: {np.max(np.abs(a - b) / a):.2e}")
    assert len(a) == len(b) == STEPS
    assert np.allclose(a, b, rtol=RTOL, atol=0), f"largest relative gap {np.max(np.abs(a - b) / a):.2e}"
    assert a[0] == pytest.approx(b[0], rel=1e-6)                     # step 1: the same samples and noise before any update
    assert not np.allclose(a, a[0])                                  # the curve moves: a loss stuck at its first value would pass
    # the weights too, and rank 0 alone keeps the EMA and writes the run's files
    w1, w2 = load_checkpoint(one_dir)['model'], load_checkpoint(root/'ddp')['model']
    print(f"largest weight gap: {max(float((w1[k] - w2[k]).abs().max()) for k in w1):.2e}")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < WTOL
    assert load_checkpoint(root/'ddp')['extra'] == {'world_size': 2}
    assert sorted(p.name for p in (root/'ddp').iterdir()) == ['checkpoint.pt', 'loss.csv', 'loss.png', 'train.json']


def test_a_stopped_two_process_run_resumes_exactly(ddp):
    root, ranks = ddp
    assert [r['resumed']['resumed_from'] for r in ranks] == [STOP, STOP] and ranks[0]['resumed']['steps'] == STEPS
    assert load_checkpoint(root/'stopped')['history'] == load_checkpoint(root/'ddp')['history']   # bit for bit
    ca, cb = load_checkpoint(root/'stopped'), load_checkpoint(root/'ddp')
    for k, v in ca['model'].items(): assert torch.equal(v, cb['model'][k]), k
    for k, v in ca['ema']['shadow'].items(): assert torch.equal(v, cb['ema']['shadow'][k]), k


def test_a_two_process_checkpoint_resumes_in_one_process(ddp, one):
    "The checkpoint holds the global batch, not the process count: 2 processes to step 10, then 1 process to step 20."
    (root, _), (one_dir, _) = ddp, one
    assert load_checkpoint(root/'to_one')['step'] == STOP
    res = fit(_cfg(), *_data(), root/'to_one')
    assert res['resumed_from'] == STOP and res['steps'] == STEPS and res['world_size'] == 1
    assert np.allclose(_losses(root/'to_one'), _losses(one_dir), rtol=RTOL, atol=0)


def test_each_rank_streams_its_own_shards(ddp):
    root, ranks = ddp
    man = read_manifest(root/'corpus')
    r0, r1 = ranks[0]['shards'], ranks[1]['shards']
    assert r0 == list(man[man.shard.isin(['shards/shard-000000.tar', 'shards/shard-000002.tar'])].uid)
    assert sorted(r0 + r1) == sorted(man.uid) and not set(r0) & set(r1)


# --- the shard format, both ways --------------------------------------------------------------------------------------

def test_project_shards_read_by_plain_webdataset(tmp_path):
    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 255, (6, 5, 3), dtype=np.uint8) for _ in range(5)]
    man = write_corpus((dict(uid=f'p{i}', image=a, caption=f'caption {i}', attrs={'i': i}) for i, a in enumerate(arrs)), tmp_path/'c', shard_size=2)
    urls = [str(tmp_path/'c'/s) for s in man.shard.unique()]
    got = list(wds.WebDataset(urls, shardshuffle=False).decode('rgb8'))
    assert [d['__key__'] for d in got] == list(man.uid) and [d['txt'] for d in got] == [f'caption {i}' for i in range(5)]
    assert all(np.array_equal(d['png'], a) for d, a in zip(got, arrs))     # lossless pixels
    assert [d['json']['attrs'] for d in got] == [{'i': i} for i in range(5)]


def test_plain_webdataset_shards_read_by_the_project(tmp_path):
    "wds.ShardWriter with its default encoder (PIL -> .png, str -> .txt, dict -> .json): imported exactly, pixels and all."
    (tmp_path/'w').mkdir()
    imgs = [Image.fromarray(np.full((7, 9, 3), 30 * i, np.uint8)) for i in range(5)]
    with wds.ShardWriter(str(tmp_path/'w'/'part-%04d.tar'), maxcount=2, verbose=0) as sw:
        for i, im in enumerate(imgs): sw.write({'__key__': f'k{i:03d}', 'png': im, 'txt': f'grey {i}', 'json': {'licence': 'cc0', 'i': i}})
    shards = sorted((tmp_path/'w').glob('*.tar'))
    assert len(shards) == 3
    man = import_webdataset(shards, tmp_path/'c')
    st = json.loads((tmp_path/'c'/'import_stats.json').read_text())
    assert (st['n_imported'], st['n_lost'], st['lost_exact']) == (5, 0, True)
    got = list(iter_samples(tmp_path/'c'))
    assert [s['caption'] for s in got] == [f'grey {i}' for i in range(5)]
    assert all(np.array_equal(np.asarray(s['image']), np.asarray(im)) for s, im in zip(got, imgs))
    assert list(man.file_name) == [f'part-{i // 2:04d}.tar/k{i:03d}.png' for i in range(5)]


# --- scoring in several processes (torchrun, gloo) ---------------------------------------------------------------------

def _scfg(cfg: ScoringConfig, **kw) -> ScoringConfig: return config_from_dict(ScoringConfig, {**config_to_dict(cfg), **kw})


def _same_table(a: pd.DataFrame, b: pd.DataFrame):
    "Exact equality of two score tables: columns, dtypes, row order, values."
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.fixture(scope='module')
def scoring(tmp_path_factory):
    """A toy corpus (90 pairs in the train split: 12 batches of 8, 6 chunks of 2 batches, so each of 2 ranks scores 3), a tiny
    rater whose batch statistics matter, and its table scored in this one process: the reference. This run also builds the
    image and MiniLM caption caches the ranks then read."""
    d = tmp_path_factory.mktemp('scoring')
    toy_corpus(d/'toy', n=120, resolution=16, shard_size=32)
    torch.manual_seed(0)
    rater = Rater(RaterConfig(resolution=16, width=16, depth=2))
    with torch.no_grad():
        for p in rater.parameters(): p.mul_(3.0)                     # non-trivial heads, as in tests/test_scoring.py
    ck = save_rater(rater, d/'rater.pt', corpus=dict(name='toy', resolution=16))
    cfg = config_from_dict(ScoringConfig, dict(rater=str(ck), corpus_dir=str(d/'toy'), split='train', batch_size=8, chunk_batches=2, device='cpu'))
    one = score_corpus(_scfg(cfg, out=str(d/'one.parquet')))
    return d, cfg, read_scores(one), read_json(one.with_suffix('.json'))


def test_two_process_scores_equal_one_process(scoring, monkeypatch):
    d, cfg, one, rec1 = scoring
    assert rec1['world_size'] == 1 and rec1['chunks'] == 6 and one['batch'].nunique() == 12
    monkeypatch.setenv('ALCHEMIST_PROGRESS', '0')
    out = launch_scoring(_scfg(cfg, out=str(d/'two.parquet')), 2)      # torchrun, 2 processes, gloo
    two, rec2 = read_scores(out), read_json(out.with_suffix('.json'))
    assert two['uid'].tolist() == one['uid'].tolist()                  # the same order
    for col in one.columns: assert np.array_equal(two[col].to_numpy(), one[col].to_numpy()), col   # the same values, bit for bit
    _same_table(two, one)
    assert rec2['world_size'] == 2 and (rec2['chunks'], rec2['chunks_scored'], rec2['chunks_reused']) == (6, 6, 0)
    assert set(rec2) == set(rec1) and {k: v for k, v in rec2['config'].items() if k != 'out'} == {k: v for k, v in rec1['config'].items() if k != 'out'}
    assert not parts_dir(out).exists()                                 # merged: the chunks are gone
    assert one['score'].nunique() > 80 and (one.groupby('batch')['group'].nunique() == 1).all() and one['group'].nunique() > 1   # batch-relative scores


def test_a_stopped_two_process_scoring_resumes(scoring, monkeypatch):
    "Stopped after each rank's first chunk (what a killed job leaves), then run again: only the missing chunks are scored."
    d, cfg, one, _ = scoring
    monkeypatch.setenv('ALCHEMIST_PROGRESS', '0')
    c = _scfg(cfg, out=str(d/'resumed.parquet'))
    assert launch_scoring(_scfg(c, max_chunks=1), 2) is None
    parts = parts_dir(c.out)
    markers = sorted(parts.glob('*.done.json'))
    assert [m.name for m in markers] == ['chunk-000000.done.json', 'chunk-000001.done.json'] and not Path(c.out).exists()
    assert [read_json(m)['rank'] for m in markers] == [0, 1]
    assert sorted(p.name for p in parts.glob('*.parquet')) == ['chunk-000000.parquet', 'chunk-000001.parquet']
    out = launch_scoring(c, 2)
    rec = read_json(out.with_suffix('.json'))
    assert (rec['chunks'], rec['chunks_reused'], rec['chunks_scored']) == (6, 2, 4)   # the two finished chunks were not scored again
    _same_table(read_scores(out), one)
    assert not parts.exists()


def test_cli_score_nproc_hands_the_rater_to_the_launcher(scoring, capsys, monkeypatch):
    "`alchemist score CORPUS --selector alchemist --rater CKPT --nproc 2`: the CLI's part (the launch itself is tested above)."
    import alchemist.scoring as SC
    d, cfg, _, _ = scoring
    assert cli.main(['score', cfg.corpus_dir, '--selector', 'alchemist', '--rater', cfg.rater, '--nproc', '0', 'device=cpu']) == 2
    assert 'nproc must be an integer >= 1' in capsys.readouterr().err
    calls = []
    def launch(c, nproc):                                          # stands in for torchrun: scores in this process
        calls.append((c, nproc)); return SC.score_corpus(c)
    monkeypatch.setattr(SC, 'launch_scoring', launch)
    assert cli.main(['score', cfg.corpus_dir, '--selector', 'alchemist', '--rater', cfg.rater, '--nproc', '2', '--out', str(d/'cli.parquet'), 'device=cpu']) == 0
    assert 'scores: ' in capsys.readouterr().out and len(calls) == 1
    c, nproc = calls[0]
    assert nproc == 2 and (c.rater, c.corpus_dir, c.split, c.device) == (cfg.rater, cfg.corpus_dir, 'train', 'cpu')
    assert len(read_scores(d/'cli.parquet')) == 90
    assert cli.main(['score', cfg.corpus_dir, '--selector', 'clarity', '--nproc', '2']) == 2   # baselines score in one process
    assert '--nproc scores with the rater' in capsys.readouterr().err


def test_torchrun_runs_the_cli_score_command(scoring, monkeypatch, capsys):
    "`torchrun --nproc_per_node 2 -m alchemist.cli score CORPUS --selector alchemist --rater CKPT`: the same table as one process."
    import subprocess, sys
    d, cfg, _, _ = scoring
    args = ['score', cfg.corpus_dir, '--selector', 'alchemist', '--rater', cfg.rater, 'device=cpu']
    assert cli.main(args + ['--out', str(d/'cli-one.parquet')]) == 0
    env = {**os.environ, 'ALCHEMIST_PROGRESS': '0', 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'alchemist.cli',
                        *args, '--out', str(d/'cli-two.parquet')], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('scores: ') == 1 and '2 processes' in r.stdout          # rank 0 alone reports
    one, two = read_scores(d/'cli-one.parquet'), read_scores(d/'cli-two.parquet')
    assert two['uid'].tolist() == one['uid'].tolist() and np.array_equal(two['score'].to_numpy(), one['score'].to_numpy())
    monkeypatch.setenv('WORLD_SIZE', '2')                                            # under torchrun without a rater: a clear error
    assert cli.main(['score', cfg.corpus_dir, '--selector', 'alchemist', 'device=cpu']) == 2
    assert 'under torchrun, `alchemist score` scores with an existing rater' in capsys.readouterr().err
