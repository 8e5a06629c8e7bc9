#!/usr/bin/env python
"""The Yandex-style curator as an SFT pipeline, measured as its paper does (issue 19 item 3; `alchemist.sft`, nbs/12c_sft.ipynb).

Usage:
    .venv/bin/python scripts/curator_sft.py --profile smoke|quick|paper [--out DIR] [--device cpu] [--seeds 0 1] [--corpora synthetic] [--methods ...] [--plan]

For each corpus of the profile: pretrain a small T2I model on the whole noisy pool (once per seed, cached under
runs/sft/pretrain/), choose a fine-tuning set of the same size with each method (none, random, the filter cascade
alone, cascade + the diffusion-guided curator, ground truth), fine-tune from the pretrained weights, and judge the
pretrained and every fine-tuned model on the same prompts with the same noise (FD-EffNet, CLIP-like score, attribute
accuracy). `alchemist.sft.run(cfg)` does one corpus; this script runs the profile's corpora and writes one report.

Profiles (`alchemist.sft.SFT_PROFILES`):
- smoke: about a minute, checks the pipeline; writes under <runs>/sft/smoke/reports/ unless --out is given.
- quick: the synthetic corpus, 3,000 pairs, 2 seeds, pretraining 600 steps, fine-tuning 150 (a first look, not evidence).
- paper: synthetic + web-planted, 6,000 pairs at 16 px, pretraining 1,200 steps, sets of 5% fine-tuned for 300 steps,
  3 seeds, judges on a separate clean reference of 10,000 pairs (512 samples, 20 sampler steps: the regime table's evaluation).

Writes the report (`reports/curator_sft.md` for paper, `reports/curator_sft_<profile>.md` otherwise; `DIR/curator_sft.md`
with --out) and every corpus's rows (`reports/results/curator_sft_<profile>.csv`; `DIR/curator_sft.csv` with --out);
each corpus's run folder (runs/sft/<corpus>-<hash>/) also keeps its own rows, report and run record (`run.json`).
`--plan` prints the configs and what they train, and runs nothing.

Saved rows stand for a run: the rows file keeps every corpus's config and run record beside it (`<rows>_records.json`), so a
corpus already measured with the same config (seeds and methods aside) is restored from it, not re-trained. Rows grow by
seed: a corpus whose saved rows lack some requested seed x method runs only those seeds (`--seeds 2` in a later session adds
seed 2 to the saved seeds 0 and 1; each session's run record is kept). `--corpora X` runs what X lacks and keeps the profile's
other corpora in the report from their saved rows; `--recompute` runs every corpus and seed (each run still resumes from its
run folder).
"""
from __future__ import annotations
import argparse, dataclasses, json, sys
from pathlib import Path

# measured here (DESIGN.md, a quiet box): the training loop for unet:s:16 runs at 405-500 images/s
TRAIN_IMAGES_PER_S = 400


def plan(cfgs) -> str:
    "What the configs train and evaluate (nothing is run)."
    from alchemist.core import config_to_dict
    lines = []
    for c in cfgs:
        n_ft = len(c.seeds) * len([m for m in c.methods if m != 'none'])
        steps = len(c.seeds) * c.pretrain_steps + n_ft * c.sft_steps
        lines += [f"{c.corpus}: {len(c.seeds)} pretrainings x {c.pretrain_steps} steps, {n_ft} fine-tunings x {c.sft_steps} steps, "
                  f"{len(c.seeds) + n_ft} evaluations; training alone ~{steps * c.batch_size / TRAIN_IMAGES_PER_S / 60:.0f} min at "
                  f"{TRAIN_IMAGES_PER_S} images/s (unet:s:16 on a quiet box; sampling and judges not counted)",
                  json.dumps(config_to_dict(c))]
    return '\n'.join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--profile', required=True, choices=['smoke', 'quick', 'paper'])
    ap.add_argument('--out', help='write the report and the rows under this folder instead of reports/')
    ap.add_argument('--device', default=None, help="torch device ('cpu', 'cuda', 'auto'); default: the profile's (auto)")
    ap.add_argument('--seeds', type=int, nargs='+', help="run seeds instead of the profile's (seeds can run in separate processes: a later run of all reuses them)")
    ap.add_argument('--corpora', nargs='+', help="run these of the profile's corpora only (e.g. synthetic)")
    ap.add_argument('--methods', nargs='+', help="fine-tuning sets instead of the profile's (alchemist.sft.SFT_METHODS; e.g. none random curator_only oracle)")
    ap.add_argument('--recompute', action='store_true', help="run every corpus, even one whose saved rows match its config")
    ap.add_argument('--plan', action='store_true', help='print the configs and what they train; run nothing')
    a = ap.parse_args(argv)
    from alchemist.core import reports_dir, runs_dir
    from alchemist.sft import SFT_PROFILES, merge_results, missing_seeds, profile_configs, restore_result, run, save_results, write_report
    bad = sorted(set(a.corpora or ()) - set(SFT_PROFILES[a.profile]['corpora']))
    if bad: ap.error(f"--corpora {' '.join(bad)}: not a corpus of profile {a.profile!r} (its corpora: {', '.join(SFT_PROFILES[a.profile]['corpora'])})")
    over = {k: v for k, v in dict(device=a.device, seeds=tuple(a.seeds) if a.seeds else None,
                                  corpora=tuple(a.corpora) if a.corpora else None, methods=tuple(a.methods) if a.methods else None).items() if v is not None}
    cfgs = profile_configs(a.profile, **over)                  # every config checked before anything runs
    if a.plan: print(plan(cfgs)); return 0
    if a.out: report, results = Path(a.out)/'curator_sft.md', Path(a.out)/'curator_sft.csv'
    elif a.profile == 'smoke': report, results = runs_dir()/'sft'/'smoke'/'reports'/'curator_sft.md', runs_dir()/'sft'/'smoke'/'reports'/'curator_sft.csv'
    else:
        report = reports_dir()/('curator_sft.md' if a.profile == 'paper' else f'curator_sft_{a.profile}.md')
        results = reports_dir()/'results'/f'curator_sft_{a.profile}.csv'
    out = []
    for c in profile_configs(a.profile, **{k: v for k, v in over.items() if k != 'corpora'}) if a.corpora and not a.out else cfgs:
        chosen = not a.corpora or c.corpus in a.corpora
        saved = None if a.recompute else restore_result(c, results, need=False)
        todo = missing_seeds(c, saved) if chosen else ()
        if saved is not None and not todo:
            print(f"# curator_sft {a.profile}: {c.corpus} restored from {results} (measured {saved['record'].get('date', '?')})", flush=True)
            out.append(saved); continue
        if not chosen:
            if saved is not None: out.append(saved)
            else: print(f"# curator_sft {a.profile}: {c.corpus} has no saved rows in {results}: left out of the report", flush=True)
            continue
        if saved is None:
            print(f"# curator_sft {a.profile}: {c.corpus}", flush=True); out.append(run(c)); continue
        print(f"# curator_sft {a.profile}: {c.corpus}: seeds {todo} to run, the others' rows kept from {results}", flush=True)
        out.append(merge_results(saved, run(dataclasses.replace(c, seeds=todo))))
    save_results(out, results)
    write_report(out, report)
    print(f"report: {report}\nrows: {results}")
    if not a.out and a.profile != 'smoke':   # the real report: the README headline carries its verdicts
        from alchemist.reports import refresh_readme_headline
        if refresh_readme_headline(): print('README.md headline updated')
    return 0


if __name__ == '__main__':
    sys.exit(main())
