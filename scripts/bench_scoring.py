#!/usr/bin/env python
"""Scoring throughput and memory vs corpus size (alchemist.scoring.score_corpus).

Usage: .venv/bin/python scripts/bench_scoring.py [--sizes 10000 40000 160000] [--batch 256] [--resolution 32] [--repeats 3]

A real synthetic corpus (`--base_n` pairs, built once under data/) provides images and MiniLM caption embeddings;
larger corpora are made by tiling it (uids suffixed), with their image cache and caption embeddings as
memory-mapped files, exactly what `score_corpus` streams from. Each size is scored in a fresh subprocess that
reports: scoring samples/s (the loop inside score_corpus), Timer.cpu_ratio, samples per CPU-second, the bare rater
forward throughput on in-memory tensors measured in the same process (upper bound), peak RSS and peak anonymous
RSS (private memory: the number that must stay flat; file-backed pages of the memory maps are reclaimable cache).
The rater is an untrained `Rater(RaterConfig(resolution=...))` (speed does not depend on the weights).
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, threading, time
from pathlib import Path

import numpy as np


def _status_kb(key: str) -> int:
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1])
    return -1


class AnonPeak:
    "Sample RssAnon every 10 ms in a thread; `.peak` in MiB."
    def __enter__(self):
        self.peak, self._stop = _status_kb('RssAnon'), False
        def loop():
            while not self._stop:
                self.peak = max(self.peak, _status_kb('RssAnon')); time.sleep(0.01)
        self._t = threading.Thread(target=loop, daemon=True); self._t.start(); return self
    def __exit__(self, *exc):
        self._stop = True; self._t.join(); self.peak = max(self.peak, _status_kb('RssAnon')) / 1024


def build_base(n: int, resolution: int) -> Path:
    from alchemist.synthetic import SyntheticConfig, build_synthetic
    from alchemist.data import image_cache
    from alchemist.encoders import caption_embeddings
    d = build_synthetic(SyntheticConfig(n=n, resolution=resolution, seed=0))
    image_cache(d, resolution); caption_embeddings(d)
    return d


def tiled_corpus(base: Path, n: int, resolution: int, root: Path) -> Path:
    "A corpus folder of `n` rows tiled from `base`: manifest, corpus.json, image cache and pooled caption memmap."
    from alchemist.core import write_json, atomic_path
    from alchemist.data import image_cache, read_manifest
    from alchemist.encoders import caption_embeddings
    out = root/f'tile-{resolution}px-{n}'
    if (out/'done').exists(): return out
    man, imgs, pooled = read_manifest(base), image_cache(base, resolution), caption_embeddings(base).pooled.numpy()
    reps = -(-n // len(man)); idx = np.arange(n) % len(man)
    m = man.iloc[idx].reset_index(drop=True).copy()
    m['uid'] = [f'{u}-t{i // len(man)}' for i, u in zip(range(n), m['uid'])]
    m['split'] = 'train'
    (out/'cache').mkdir(parents=True, exist_ok=True)
    with atomic_path(out/'manifest.parquet') as tmp: m.to_parquet(tmp, index=False)
    write_json(out/'corpus.json', dict(name=out.name, n=n, tiled_from=str(base), reps=reps))
    for name, src, shape in (('cache/images_%d.npy' % resolution, imgs, (n, resolution, resolution, 3)), ('pooled.npy', pooled, (n, pooled.shape[1]))):
        with atomic_path(out/name) as tmp:
            a = np.lib.format.open_memmap(tmp, mode='w+', dtype=src.dtype, shape=shape)
            for s in range(0, n, 20000): a[s:s+20000] = src[idx[s:s+20000]]
            a.flush(); del a
    (out/'done').write_text('ok')
    return out


def child(corpus: Path, resolution: int, batch: int, repeats: int) -> dict:
    import torch
    from alchemist.core import Timer, config_from_dict, read_json
    from alchemist.encoders import TextBatch
    from alchemist.rater import Rater, RaterConfig, save_rater
    from alchemist.scoring import ScoringConfig, score_corpus
    os.environ['ALCHEMIST_PROGRESS'] = '0'
    n = len(np.load(corpus/'pooled.npy', mmap_mode='r'))
    pooled = torch.from_numpy(np.load(corpus/'pooled.npy', mmap_mode='r'))
    text = TextBatch(torch.zeros(1, 1, pooled.shape[1]).expand(n, 1, -1), torch.ones(1, 1, dtype=torch.bool).expand(n, 1), pooled, None)
    torch.manual_seed(0)
    rater = Rater(RaterConfig(resolution=resolution)).eval()
    ck = save_rater(rater, corpus/'rater.pt', corpus=dict(name=corpus.name, resolution=resolution))
    cfg = config_from_dict(ScoringConfig, dict(rater=str(ck), corpus_dir=str(corpus), batch_size=batch, device='cpu', out=str(corpus/'scores.parquet')))
    # bare rater forward on in-memory tensors, same batch size (upper bound for the streaming loop)
    x = torch.randn(batch, 3, resolution, resolution); t = torch.nn.functional.normalize(torch.randn(batch, pooled.shape[1]), dim=-1)
    with torch.inference_mode():
        for _ in range(3): rater.heads(rater.features(x, t))
    rates, bare, ratios = [], [], []
    base_anon = _status_kb('RssAnon') / 1024
    with AnonPeak() as ap:
        for _ in range(repeats):
            with torch.inference_mode(), Timer() as tb:
                for _ in range(20): rater.heads(rater.features(x, t))
            bare.append(20 * batch / tb.wall)
            rec = read_json(Path(score_corpus(cfg, text)).with_suffix('.json'))
            rates.append(rec['samples_per_s']); ratios.append(rec['cpu_ratio'])
    i = int(np.argsort(rates)[len(rates) // 2])
    return dict(n=n, batch=batch, resolution=resolution, samples_per_s=rates[i], cpu_ratio=ratios[i],
                per_cpu_s=rates[i] / max(ratios[i], 1e-9), all_samples_per_s=rates, bare_samples_per_s=float(np.median(bare)),
                scoring_over_bare=rates[i] / float(np.median(bare)),
                anon_mib_before=round(base_anon, 1), anon_mib_peak=round(ap.peak, 1), peak_rss_mib=round(_status_kb('VmHWM') / 1024, 1),
                threads=torch.get_num_threads())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 40_000, 160_000])
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--resolution', type=int, default=32)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--base_n', type=int, default=5000)
    ap.add_argument('--child', type=str, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(Path(a.child), a.resolution, a.batch, a.repeats))); return
    from alchemist.core import data_dir, machine_info
    from datetime import datetime, timezone
    print(f"# bench_scoring  {datetime.now(timezone.utc).isoformat(timespec='seconds')}  {' '.join(sys.argv)}")
    print(f"# machine: {machine_info()}  loadavg: {os.getloadavg()}")
    base = build_base(a.base_n, a.resolution)
    rows = []
    for n in a.sizes:
        d = tiled_corpus(base, n, a.resolution, data_dir()/'bench-scoring')
        r = subprocess.run([sys.executable, __file__, '--child', str(d), '--resolution', str(a.resolution), '--batch', str(a.batch),
                            '--repeats', str(a.repeats)], capture_output=True, text=True, env={**os.environ, 'ALCHEMIST_PROGRESS': '0'})
        if r.returncode: print(r.stderr[-3000:]); raise SystemExit(f"child for n={n} failed")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        x = rows[-1]
        print(f"n={n:>7}  scoring {x['samples_per_s']:>7.0f}/s  cpu_ratio {x['cpu_ratio']:.2f}  per CPU-s {x['per_cpu_s']:>6.0f}  "
              f"bare rater {x['bare_samples_per_s']:>6.0f}/s  scoring/bare {x['scoring_over_bare']:.2f}  "
              f"anon MiB before {x['anon_mib_before']:.0f} peak {x['anon_mib_peak']:.0f}  peak RSS {x['peak_rss_mib']:.0f}", flush=True)
    a0, a1 = rows[0]['anon_mib_peak'], rows[-1]['anon_mib_peak']
    print(f"# peak anonymous memory {a0:.0f} -> {a1:.0f} MiB for {rows[0]['n']} -> {rows[-1]['n']} pairs "
          f"(x{rows[-1]['n'] / rows[0]['n']:.0f} corpus, x{a1 / a0:.2f} memory)")
    print(f"# aim >= 5000 samples/s at {a.resolution}px on 2 cores; best measured {max(r['samples_per_s'] for r in rows):.0f}/s, "
          f"per CPU-second {np.median([r['per_cpu_s'] for r in rows]):.0f} (x2 cores = {2 * np.median([r['per_cpu_s'] for r in rows]):.0f}/s if uncontended)")


if __name__ == '__main__':
    main()
