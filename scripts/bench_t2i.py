#!/usr/bin/env python
"""Throughput of the T2I models on this machine: training images/s (bare step vs the `alchemist.train` loop),
sampling images/s and peak memory, per model size, as fractions of the compute bound.

    .venv/bin/python scripts/bench_t2i.py                       # unet s/m/l + pixart s at 32 px, unet s at 16 px
    .venv/bin/python scripts/bench_t2i.py --models unet:s:16 --steps 20 --repeats 3

The compute bound: fp32 matmul GFLOP/s (measured here, beside each model, and DESIGN.md's 179 on an idle box) divided by
the model's forward+backward FLOPs per image (counted by torch.utils.flop_counter). Each model runs in its own
subprocess so that its peak RSS is its own. Bare and loop timings alternate (`--repeats`) and the median is reported,
because the machine is shared; `cpu_ratio` (cpu seconds / wall seconds) near the thread count means we got the cores.
"""
from __future__ import annotations
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

DESIGN_GFLOPS = 179.0  # fp32 matmul on 2 threads, idle box (DESIGN.md)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(seconds: float = 1.0) -> float:
    import torch
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds: a @ b; n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


def flops_per_image(model, batch: int = 8) -> float:
    "Forward+backward FLOPs per image of the training loss."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    r = model.cfg.resolution
    x0, tok, mask = torch.randn(batch, 3, r, r), torch.randn(batch, 12, 384), torch.ones(batch, 12, dtype=torch.bool)
    with FlopCounterMode(display=False) as fc:
        model.per_sample_loss(x0, tok, mask).mean().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def one(spec: str, a) -> dict:
    "Benchmark one model (`family:size:resolution`) in this process."
    import numpy as np, torch
    from alchemist.core import Timer, config_from_dict, machine_info
    from alchemist.t2i import build_t2i
    from alchemist.train import TrainConfig, fit
    if a.threads: torch.set_num_threads(a.threads)
    os.environ['ALCHEMIST_PROGRESS'] = '0'
    fam, size, res = spec.split(':'); res = int(res)
    base_rss = rss_mb()
    B, L = a.batch, 12
    model = build_t2i(dict(family=fam, size=size, resolution=res), seed=0).train()
    fpi = flops_per_image(model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(B, 3, res, res, generator=g) * 2 - 1
    tok, mask = torch.randn(B, L, 384, generator=g), torch.ones(B, L, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def bare(steps):
        "forward + backward + AdamW on one fixed in-memory batch: the model's own cost, nothing else."
        with Timer() as t:
            for s in range(steps):
                loss = model.per_sample_loss(x0, tok, mask, generator=g).mean()
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return B * steps / t.wall, t.cpu_ratio, B * steps / max(t.cpu, 1e-9)

    # the real loop on in-memory data (uint8 images, fp16 tokens, as train() gives it): gather, convert, EMA, clip, log, checkpoint
    n_data = B * 8
    imgs = torch.randint(0, 256, (n_data, res, res, 3), generator=g, dtype=torch.uint8)
    dtok, dmask = torch.randn(n_data, L, 384, generator=g).half(), torch.ones(n_data, L, dtype=torch.bool)
    uids = [f'u{i}' for i in range(n_data)]
    tmp = Path(tempfile.mkdtemp())

    def loop(steps, k):
        cfg = config_from_dict(TrainConfig, dict(model=dict(family=fam, size=size, resolution=res), budget='steps',
                                                 steps=a.warmup + steps, batch_size=B, ckpt_every=a.ckpt_every, device='cpu'))
        # warm-up steps are inside the run; time only the last `steps` via the per-step loop clock of fit()
        r = fit(cfg, imgs, dtok, dmask, uids, tmp/f'run{k}')
        return r['images_per_s'], r['images_per_s_wall'], r['cpu_ratio'], r['images_per_cpu_s']

    bare(a.warmup)
    rows = []
    for k in range(a.repeats):
        bi, bc, bcpu = bare(a.steps)
        li, lw, lc, lcpu = loop(a.steps, k)
        gf = matmul_gflops(0.5)
        rows.append((bi, li, lw, bc, lc, gf, bcpu, lcpu))
    med = lambda j: float(np.median([r[j] for r in rows]))
    # sampling: DDIM 25 steps, guidance 3 (two network passes per step, batched)
    model.eval()
    sb = min(B, a.sample_batch)
    with Timer() as ts:
        model.sample(tok[:sb], mask[:sb], guidance=3.0, steps=a.sample_steps, generator=torch.Generator().manual_seed(0))
    import shutil; shutil.rmtree(tmp, ignore_errors=True)
    bare_ips, loop_ips, gflops = med(0), med(1), med(5)
    bound_design = DESIGN_GFLOPS * 1e9 / fpi
    bound_here = gflops * 1e9 / fpi
    return dict(model=spec, params_M=model.n_params() / 1e6, gflop_per_image=fpi / 1e9, batch=B,
                bare_images_per_s=bare_ips, loop_images_per_s=loop_ips, loop_images_per_s_wall=med(2),
                loop_over_bare=loop_ips / bare_ips, bare_cpu_ratio=med(3), loop_cpu_ratio=med(4),
                bare_images_per_cpu_s=med(6), loop_images_per_cpu_s=med(7), loop_over_bare_cpu=med(7) / med(6),
                matmul_gflops_now=gflops, bound_design=bound_design, frac_of_design_bound=bare_ips / bound_design,
                frac_of_bound_now=bare_ips / bound_here,
                sample_images_per_s=sb / ts.wall, sample_steps=a.sample_steps, sample_cpu_ratio=ts.cpu_ratio,
                peak_rss_MB=rss_mb(), model_rss_MB=rss_mb() - base_rss, threads=torch.get_num_threads(),
                repeats=a.repeats, all_runs=rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['unet:s:16', 'unet:s:32', 'unet:m:32', 'unet:l:32', 'pixart:s:32'],
                   help='family:size:resolution')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--steps', type=int, default=10, help='timed steps per repeat')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=3, help='alternating bare/loop repeats (median reported)')
    p.add_argument('--ckpt_every', type=int, default=200, help='checkpoint period inside the loop runs')
    p.add_argument('--sample_batch', type=int, default=64)
    p.add_argument('--sample_steps', type=int, default=25)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    p.add_argument('--json', default='', help='also write the results here')
    p.add_argument('--_one', default='', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._one:
        print('RESULT ' + json.dumps(one(a._one, a))); return
    res = []
    print(f"# bench_t2i  batch {a.batch}, {a.steps} timed steps x {a.repeats} repeats, DDIM {a.sample_steps} steps guidance 3")
    print(f"{'model':<13}{'params':>8}{'GF/img':>8}{'bare i/s':>10}{'loop i/s':>10}{'loop/bare':>10}{'cpu':>6}"
          f"{'bound':>8}{'frac':>7}{'frac_now':>9}{'sample i/s':>11}{'RSS MB':>8}{'bare i/cpu-s':>13}{'loop i/cpu-s':>13}{'ratio':>7}")
    for spec in a.models:
        cmd = [sys.executable, __file__, '--_one', spec] + [x for k, v in vars(a).items() if k not in ('_one', 'models', 'json')
                                                             for x in (f'--{k}', str(v))]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
        if out.returncode or not line:
            print(f"{spec}: FAILED\n{out.stderr[-2000:]}"); continue
        r = json.loads(line[0][7:]); res.append(r)
        print(f"{spec:<13}{r['params_M']:>7.2f}M{r['gflop_per_image']:>8.2f}{r['bare_images_per_s']:>10.1f}{r['loop_images_per_s']:>10.1f}"
              f"{r['loop_over_bare']:>10.3f}{r['bare_cpu_ratio']:>6.2f}{r['bound_design']:>8.0f}{r['frac_of_design_bound']:>7.2f}"
              f"{r['frac_of_bound_now']:>9.2f}{r['sample_images_per_s']:>11.1f}{r['peak_rss_MB']:>8.0f}"
              f"{r['bare_images_per_cpu_s']:>13.1f}{r['loop_images_per_cpu_s']:>13.1f}{r['loop_over_bare_cpu']:>7.3f}", flush=True)
    print("bound = 179 GFLOP/s (DESIGN.md, idle 2 cores) / (fwd+bwd FLOPs per image); frac = bare / bound;"
          " frac_now uses the matmul GFLOP/s measured beside the run (contention-adjusted); cpu = cpu s / wall s of the bare steps;"
          " i/cpu-s = images per CPU-second of the process (robust to a shared box), ratio = loop / bare of those")
    if a.json:
        from alchemist.core import atomic_path, run_record
        with atomic_path(a.json) as tmp: Path(tmp).write_text(json.dumps(run_record(None, results=res), indent=2))


if __name__ == '__main__':
    main()
