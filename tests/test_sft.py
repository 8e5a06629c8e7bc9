"The SFT pipeline's script and profiles (alchemist.sft; the pipeline itself is tested at smoke size in nbs/12c_sft.ipynb)."
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'scripts'/'curator_sft.py'


def test_every_profile_is_a_valid_config():
    from alchemist.sft import SFT_PROFILES, SFTConfig, profile_configs
    for name in SFT_PROFILES:
        cfgs = profile_configs(name)
        assert cfgs and all(isinstance(c, SFTConfig) for c in cfgs), name
    paper = profile_configs('paper')
    assert [c.corpus for c in paper] == ['synthetic', 'web-planted']
    assert {(c.corpus_n, c.resolution, c.pretrain_steps, c.sft_fraction, c.sft_steps, c.seeds) for c in paper} == {(6000, 16, 1200, 0.05, 300, (0, 1, 2))}
    assert len(profile_configs('quick')) == 1 and len(profile_configs('quick')[0].seeds) == 2


def test_plan_prints_the_configs_and_runs_nothing(tmp_path):
    env = dict(os.environ, ALCHEMIST_RUNS=str(tmp_path/'runs'), ALCHEMIST_DATA=str(tmp_path/'data'), ALCHEMIST_ROOT=str(ROOT))
    r = subprocess.run([sys.executable, str(SCRIPT), '--profile', 'paper', '--plan', '--device', 'cpu'], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'web-planted: 3 pretrainings x 1200 steps, 12 fine-tunings x 300 steps' in r.stdout
    assert '"device": "cpu"' in r.stdout
    assert not (tmp_path/'runs').exists() and not (tmp_path/'data').exists()


def test_unknown_profile_is_refused():
    r = subprocess.run([sys.executable, str(SCRIPT), '--profile', 'huge'], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'huge'" in r.stderr


def test_seeds_share_a_run_folder_and_corpora_can_be_chosen(tmp_path):
    "Seeds run in separate processes share one run folder (a run of all seeds reuses theirs); --corpora picks the profile's corpora, others refused."
    import dataclasses
    from alchemist.sft import profile_configs, sft_dir
    c = profile_configs('paper')[0]
    assert sft_dir(dataclasses.replace(c, seeds=(1,))) == sft_dir(c) != sft_dir(dataclasses.replace(c, sft_steps=301))
    assert sft_dir(dataclasses.replace(c, methods=('none', 'curator_only'))) == sft_dir(c)   # an ablation method adds folders beside the others'
    env = dict(os.environ, ALCHEMIST_RUNS=str(tmp_path/'runs'), ALCHEMIST_DATA=str(tmp_path/'data'), ALCHEMIST_ROOT=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), '--profile', 'paper', '--plan', *a], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    r = run('--corpora', 'synthetic', '--seeds', '0')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'synthetic: 1 pretrainings x 1200 steps' in r.stdout and 'web-planted' not in r.stdout
    r = run('--corpora', 'webplanted')
    assert r.returncode != 0 and "--corpora webplanted: not a corpus of profile 'paper'" in r.stderr


def test_saved_rows_make_the_report_without_training(tmp_path):
    "A corpus whose saved rows match its config is restored, not re-trained: the report of both paper corpora from saved rows alone."
    import json, shutil
    import pandas as pd
    from alchemist.sft import profile_configs, records_path, saved_key
    src = ROOT/'reports'/'results'/'curator_sft_paper.csv'
    syn = pd.read_csv(src); recs = json.loads(records_path(src).read_text())
    syn, recs = syn[syn.corpus == 'synthetic'], [r for r in recs if r['corpus'] == 'synthetic']   # the saved web-planted rows aside
    web_cfg = {**recs[0]['config'], 'corpus': 'web-planted'}
    assert recs[0]['key'] == saved_key(profile_configs('paper')[0]) and saved_key(web_cfg) == saved_key(profile_configs('paper')[1])
    pd.concat([syn, syn.assign(corpus='web-planted')]).to_csv(tmp_path/'curator_sft.csv', index=False)
    records_path(tmp_path/'curator_sft.csv').write_text(json.dumps(recs + [{**recs[0], 'corpus': 'web-planted', 'config': web_cfg, 'key': saved_key(web_cfg)}]))
    env = dict(os.environ, ALCHEMIST_RUNS=str(tmp_path/'runs'), ALCHEMIST_DATA=str(tmp_path/'data'), ALCHEMIST_ROOT=str(ROOT))
    r = subprocess.run([sys.executable, str(SCRIPT), '--profile', 'paper', '--out', str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('restored from') == 2 and not (tmp_path/'data').exists()
    md = (tmp_path/'curator_sft.md').read_text()
    assert '## Results: synthetic' in md and '## Results: web-planted' in md and md.count('restored from `curator_sft.csv`') == 2
    back = pd.read_csv(tmp_path/'curator_sft.csv')
    assert len(back) == 2 * len(syn) and json.loads(records_path(tmp_path/'curator_sft.csv').read_text())[0]['record'] == recs[0]['record']
