"""Throughput at 1 and N processes on this machine (issue 20, item 5): downstream training under DDP (gloo on CPU,
1 thread a process, the same global batch) and streaming a corpus's shards split by rank (`alchemist.data.corpus_dataset`).

    .venv/bin/python scripts/bench_scale.py                      # the measurement (run it on a quiet box)
    .venv/bin/python scripts/bench_scale.py --tiny               # seconds: checks the script works, numbers meaningless

Prints one row per process count with the rate and its ratio to one process. Each process runs one thread, so on a
2-core box the ideal ratio at N = 2 is 2; check that `cpu_ratio` (CPU-seconds per wall-second, summed over ranks) is
near N before trusting a row. Scoring throughput joins when scoring runs under torchrun (issue 20, item 1).
"""
import argparse, json, os, socket, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alchemist.core import config_from_dict
from alchemist.data import corpus_dataset, write_corpus
from alchemist.train import TrainConfig, fit, init_distributed


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _data(n: int, res: int):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, res, res, 3), generator=g, dtype=torch.uint8)
    toks = torch.randn(n, 8, 384, generator=g).half(); mask = torch.zeros(n, 8, dtype=torch.bool); mask[:, :6] = True
    return imgs, toks, mask, [f'u{i}' for i in range(n)]


def _rank(rank: int, world: int, port: int, a: dict, out: str):
    "One process of a world of `world` (the environment torchrun would give it)."
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      ALCHEMIST_PROGRESS='0')
    torch.set_num_threads(1)
    init_distributed('cpu')
    cfg = config_from_dict(TrainConfig, dict(model=dict(resolution=a['resolution']), budget='steps', steps=a['steps'], batch_size=a['batch'],
                                             ckpt_every=10**9, warmup_steps=0, device='cpu', resume=False))
    with tempfile.TemporaryDirectory() as d:
        c0, t0 = time.process_time(), time.perf_counter()
        res = fit(cfg, *_data(a['n_train'], a['resolution']), Path(d)/'run')
        train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    if world > 1: dist.barrier()   # the ranks start each measurement together
    c0, t0 = time.process_time(), time.perf_counter()
    n_read = sum(1 for _ in corpus_dataset(a['corpus']))           # decoded samples of this rank's shards
    read_wall, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    if world > 1: dist.barrier()   # the ranks start each measurement together
    Path(out, f'rank{rank}.json').write_text(json.dumps(dict(images_per_s=res['images_per_s'], train_wall=train_wall, train_cpu=train_cpu,
                                                             n_read=n_read, read_wall=read_wall, read_cpu=read_cpu)))
    if world > 1: dist.destroy_process_group()


def measure(world: int, a: dict) -> dict:
    "Training images/s (global batch) and shard-reading samples/s (all ranks together) with `world` processes."
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, args=(world, _free_port(), a, out), nprocs=world, join=True)
        r = [json.loads(Path(out, f'rank{i}.json').read_text()) for i in range(world)]
    return dict(world=world, train_images_per_s=r[0]['images_per_s'],
                train_cpu_ratio=sum(x['train_cpu'] for x in r) / max(x['train_wall'] for x in r),
                read_samples_per_s=sum(x['n_read'] for x in r) / max(x['read_wall'] for x in r),
                read_cpu_ratio=sum(x['read_cpu'] for x in r) / max(x['read_wall'] for x in r), n_read=sum(x['n_read'] for x in r))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--nproc', default='1,2', help='process counts to measure, comma-separated (default 1,2)')
    p.add_argument('--steps', type=int, default=60, help='training steps per measurement (default 60)')
    p.add_argument('--batch', type=int, default=64, help='global batch (default 64; a multiple of every process count)')
    p.add_argument('--resolution', type=int, default=16, help='image side in px (default 16)')
    p.add_argument('--n-images', type=int, default=2000, help='images in the training set and in the corpus read (default 2000)')
    p.add_argument('--shard-size', type=int, default=100, help='samples per shard of the corpus read (default 100)')
    p.add_argument('--tiny', action='store_true', help='a few seconds, to check the script works (numbers meaningless)')
    a = p.parse_args(argv)
    if a.tiny: a.steps, a.batch, a.n_images, a.shard_size = 3, 8, 48, 8
    worlds = [int(x) for x in a.nproc.split(',')]
    bad = [w for w in worlds if a.batch % w]
    if bad: p.error(f"--batch {a.batch} is not a multiple of the process count(s) {bad}")
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        write_corpus((dict(uid=f's{i:06d}', image=rng.integers(0, 255, (a.resolution, a.resolution, 3), dtype=np.uint8), caption=f'sample {i}')
                      for i in range(a.n_images)), Path(d)/'corpus', shard_size=a.shard_size)
        args = dict(steps=a.steps, batch=a.batch, resolution=a.resolution, n_train=min(a.n_images, 10 * a.batch), corpus=str(Path(d)/'corpus'))
        rows = [measure(w, args) for w in worlds]
    base = rows[0]
    print(f"{'processes':>9} {'train img/s':>12} {'ratio':>6} {'cpu ratio':>9} {'read smp/s':>11} {'ratio':>6} {'cpu ratio':>9}")
    for r in rows:
        print(f"{r['world']:>9} {r['train_images_per_s']:>12.1f} {r['train_images_per_s'] / base['train_images_per_s']:>6.2f} {r['train_cpu_ratio']:>9.2f}"
              f" {r['read_samples_per_s']:>11.0f} {r['read_samples_per_s'] / base['read_samples_per_s']:>6.2f} {r['read_cpu_ratio']:>9.2f}")
        assert r['n_read'] == a.n_images, f"{r['world']} processes read {r['n_read']} of {a.n_images} samples"
    print(json.dumps(dict(args=vars(a), rows=rows, torch=torch.__version__, cpus=os.cpu_count())))
    return rows


if __name__ == '__main__':
    main()
