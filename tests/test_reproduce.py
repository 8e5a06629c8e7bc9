"Tests of alchemist.reproduce: name checks, crashes, resuming, collection, and every template at smoke size."
import json, os, textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from alchemist.core import ConfigError
from alchemist import cli, reproduce as rp

# The real pipeline (corpus, rater meta-training, downstream training, evaluation) takes minutes per template at
# smoke size on these shared 2-core machines, too long for the suite. So the default tests run every template
# with the REAL alchemist.experiments.ExperimentConfig and the real template cells, but with fast fakes of the
# three heavy functions the templates call (same signatures, same metrics.json format), installed in every
# papermill kernel by a sitecustomize.py on PYTHONPATH. `ALCHEMIST_SLOW=1 pytest tests/test_reproduce.py`
# also runs every template end to end on the real pipeline at smoke size.
SITECUSTOMIZE = '''
import inspect, math
from pathlib import Path
import alchemist.experiments as ex, alchemist.figures as fg
from alchemist.core import run_record, write_json

def _check(cfg):
    if cfg.corpus not in ('synthetic', 'web'): raise FileNotFoundError(f"corpus {cfg.corpus!r} not found (build it first)")

def _out(cfg):
    out = Path(cfg.out_dir) if cfg.out_dir else Path('/nonexistent-out-dir'); out.mkdir(parents=True, exist_ok=True); return out

def run(cfg):
    _check(cfg); h = (sum(map(ord, cfg.method)) % 7) / 10
    metrics = dict(method=cfg.method, retention=cfg.retention, seed=cfg.seed, n_selected=int(cfg.corpus_n * cfg.retention),
                   train_seconds=cfg.epochs * cfg.retention * 10, fd_effnet=50 - 5 * math.log1p(cfg.epochs * cfg.retention) + h + cfg.seed / 10,
                   clip_score=0.2 + h / 10, attr_acc=0.5 + h / 2, defect_rate=0.3 - h / 3)
    write_json(_out(cfg)/'metrics.json', dict(config_hash=ex.config_hash(cfg), metrics=metrics, record=run_record(cfg)))
    return metrics

def rating_band_traces(cfg, n_bands=5, per_band=4, trace_every=3):
    _check(cfg)
    recs = [dict(step=s, band=b, loss=1 / (1 + s) + b / 10, grad_norm=1 + b - s / 10) for s in range(0, 4, trace_every) for b in range(n_bands)]
    metrics = dict(steps=4, records=recs)
    write_json(_out(cfg)/'metrics.json', dict(metrics=metrics, record=run_record(cfg))); return metrics

def rating_band_grids(cfg, n_bands=5, per_band=8):
    _check(cfg)
    from PIL import Image
    p = _out(cfg)/'grid.png'; Image.new('RGB', (per_band * 4, n_bands * 4), (128, 64, 32)).save(p)
    metrics = dict(grid_png=str(p), records=[dict(band=b, mean_score=1 - b / n_bands, defect_rate=b / n_bands) for b in range(n_bands)])
    write_json(_out(cfg)/'metrics.json', dict(metrics=metrics, record=run_record(cfg))); return metrics

for name, fake, mod in (('run', run, ex), ('rating_band_traces', rating_band_traces, fg), ('rating_band_grids', rating_band_grids, fg)):
    assert list(inspect.signature(fake).parameters) == list(inspect.signature(getattr(mod, name)).parameters), name
    setattr(mod, name, fake)
'''


@pytest.fixture
def experiments():
    "The real ExperimentConfig (validation always uses it)."
    from alchemist.experiments import ExperimentConfig
    return ExperimentConfig


@pytest.fixture
def fake_pipeline(tmp_path, monkeypatch):
    "Make every papermill kernel of this test use fast fakes of run / rating_band_traces / rating_band_grids."
    d = tmp_path/'fake_site'; d.mkdir(); (d/'sitecustomize.py').write_text(SITECUSTOMIZE)
    old = os.environ.get('PYTHONPATH')
    monkeypatch.setenv('PYTHONPATH', str(d) + (os.pathsep + old if old else ''))
    monkeypatch.setenv('ALCHEMIST_PROGRESS', '0')


def _tiny_template(path):
    "A fast template (no torch import) over real ExperimentConfig names; corpus 'missing' crashes like a missing corpus."
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nb.cells = [nbformat.v4.new_markdown_cell('# tiny'), nbformat.v4.new_code_cell('import json, pathlib'),
                nbformat.v4.new_code_cell("corpus = 'synthetic'  # corpus\nmethod = 'random'  # method\nseed = 0  # seed\n"
                                          "profile = 'smoke'  # profile\nout_dir = None  # run folder"),
                nbformat.v4.new_code_cell("if corpus == 'missing': raise FileNotFoundError(f'corpus {corpus!r} not found')\n"
                                          "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps("
                                          "{'metrics': {'fd_effnet': 10.0 + seed, 'curve': [1, 2]}, 'git': 'x'}))")]
    nb.cells[2].metadata['tags'] = ['parameters']
    nbformat.write(nb, str(path))


@pytest.fixture
def tiny(tmp_path, experiments):
    tdir = tmp_path/'experiments'; tdir.mkdir()
    _tiny_template(tdir/rp.DOWNSTREAM)   # T1's template (the one every downstream table runs)
    kw = dict(runs_root=tmp_path/'runs', results_dir=tmp_path/'results', templates_dir=tdir, config_cls=experiments)
    return tdir, kw


def test_unknown_parameter_rejected_before_running(tiny):
    tdir, kw = tiny
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick:\n    - {method: random}\n    - {metod: random, seed: 1}\n")
    with pytest.raises(ConfigError, match=r"T1_selection.yaml set 1: unknown parameter 'metod'.*did you mean 'method'"):
        rp.reproduce('T1', 'quick', **kw)
    assert not (kw['runs_root']).exists()           # nothing ran, not even the valid set
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick: [{out_dir: /tmp/x}]\n")
    with pytest.raises(ConfigError, match="'out_dir' is set by the driver"): rp.reproduce('T1', 'quick', **kw)


def test_template_parameter_must_be_config_field(tiny):
    tdir, kw = tiny
    nb = nbformat.read(str(tdir/rp.DOWNSTREAM), 4)
    nb.cells[2].source += "\nlearning_rat = 0.1  # typo in the template itself"
    nbformat.write(nb, str(tdir/rp.DOWNSTREAM))
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick: [{}]\n")
    with pytest.raises(ConfigError, match="parameter 'learning_rat' is not a field of ExperimentConfig"):
        rp.reproduce('T1', 'quick', **kw)


def test_crash_reported_others_continue_rerun_skips_and_collects(tiny):
    tdir, kw = tiny
    (tdir/'T1_selection.yaml').write_text(textwrap.dedent("""
        profiles:
          quick: {seeds: [0, 1], sets: [{method: random}, {method: full, corpus: missing, seed: 0}]}
    """))
    res = rp.reproduce('T1', 'quick', **kw)
    assert len(res.done) == 2 and len(res.failed) == 1 and not res.ok
    f = res.failed[0]
    assert 'corpus-missing' in f.run_id and 'FileNotFoundError' in f.cause and "'missing' not found" in f.cause
    assert f.notebook.exists() and 'FileNotFoundError' in f.notebook.read_text()   # traceback kept
    assert json.loads((f.notebook.parent/'run.json').read_text())['status'] == 'failed'
    # the CSV holds the finished runs with their record
    df = pd.read_csv(res.csv[0])
    assert sorted(df['seed']) == [0, 1] and sorted(df['metrics.fd_effnet']) == [10.0, 11.0]
    for col in ('run_id', 'method', 'corpus', 'git', 'machine', 'date', 'wall_s', 'cpu_ratio', 'config'):
        assert df[col].notna().all(), col
    assert (df.wall_s > 0).all() and json.loads(df.config[0])['method'] == 'random'
    # a re-run executes only the crashed run; with on_error='stop' a second crash stops the sweep
    (tdir/'T1_selection.yaml').write_text(textwrap.dedent("""
        profiles:
          quick: {seeds: [0, 1], sets: [{method: random}, {method: full, corpus: missing, seed: 0}, {method: full, corpus: missing, seed: 1}, {method: full}]}
    """))
    res2 = rp.reproduce('T1', 'quick', on_error='stop', **kw)
    assert len(res2.skipped) == 2 and len(res2.failed) == 1 and len(res2.not_run) == 3 and res2.done == []
    assert len(pd.read_csv(res2.csv[0])) == 2       # finished runs still collected


def test_every_profile_of_every_table_validates(experiments, tmp_path):
    assert rp.tables_for('smoke') == rp.tables_for('paper') == list(rp.TABLES)   # every table at smoke size and at the paper profile
    assert rp.tables_for('quick')[:2] == ['regime', 'T1']    # quick: the tables that can resolve at its budget (T2-T4 and the figures: paper only)
    for prof in ('smoke', 'quick', 'paper'):
        for name in rp.tables_for(prof):
            runs = rp.plan(name, prof, runs_root=tmp_path, config_cls=experiments)
            assert runs, (name, prof)
            if prof != 'smoke':   # paper: >= 3 seeds per configuration; quick: >= 2, and fewer than 3 only where its YAML says so
                per = pd.Series([json.dumps({k: v for k, v in r.params.items() if k != 'seed'}, sort_keys=True) for r in runs]).value_counts()
                if prof == 'paper' or per.min() >= 3: assert per.min() >= 3, (name, prof)
                else:
                    text = (rp.experiments_dir()/rp.TABLES[name].yaml).read_text()
                    quick = text[text.index('  quick:'):text.index('  paper:')]
                    assert per.min() >= 2 and f'{per.min()} seeds' in quick, (name, prof, per.min())
    assert cli.main(['reproduce', '--table', 'all', '--profile', 'paper', '--dry-run', '--runs-dir', str(tmp_path), '--no-report']) == 0


def test_every_template_and_yaml_belongs_to_a_table():
    "nbs/experiments/ holds one template per kind of experiment and one YAML per table (plus the claims): no stray copies."
    used = {t.template for t in rp.TABLES.values()} | {t.yaml for t in rp.TABLES.values()} | {'claims.yaml'}
    present = {p.name for p in rp.experiments_dir().iterdir() if p.suffix in ('.ipynb', '.yaml')}
    assert present == used, (sorted(present - used), sorted(used - present))
    assert {n for n, t in rp.TABLES.items() if t.template == rp.DOWNSTREAM} == {'regime', 'T1', 'T2', 'T3', 'T4', 'Fig2b', 'Fig6'}


def _run_all_smoke(experiments, tmp_path):
    # reuse=False: the smoke defaults of T1/T2/T3/Fig6 are the same experiment, and every template must really execute
    res = rp.reproduce('all', 'smoke', runs_root=tmp_path/'runs', results_dir=tmp_path/'results', config_cls=experiments, reuse=False)
    assert not res.failed, [str(f) for f in res.failed]
    assert len(res.done) == sum(len(rp.plan(n, 'smoke', runs_root=tmp_path, config_cls=experiments)) for n in rp.TABLES)
    assert sorted(p.name for p in res.csv) == sorted(f"{n}_smoke.csv" for n in rp.TABLES)
    for p in res.csv:
        df = pd.read_csv(p)
        assert any(c.startswith('metrics.') for c in df.columns), p.name
    assert (tmp_path/'results'/'Fig3_smoke_records.csv').exists()
    again = rp.reproduce('all', 'smoke', runs_root=tmp_path/'runs', results_dir=tmp_path/'results', config_cls=experiments)
    assert again.done == [] and len(again.skipped) == len(res.done)
    return res


def test_every_template_runs_at_smoke_size(experiments, fake_pipeline, tmp_path):
    "Every template through papermill: real parameters cell, real ExperimentConfig, fake heavy calls."
    res = _run_all_smoke(experiments, tmp_path)
    nb = json.loads(next((tmp_path/'runs'/'T1'/'smoke').glob('*/downstream.ipynb')).read_text())
    assert any('injected-parameters' in c.get('metadata', {}).get('tags', []) for c in nb['cells'])
    # the report notebook's functions turn those CSVs (and nothing else) into one markdown report per table
    from alchemist.reports import write_reports
    written = write_reports(tmp_path/'results', tmp_path/'reports')
    assert sorted(p.name for p in written) == sorted([f"{n}_smoke.md" for n in rp.TABLES] + ['headline_smoke.md'])
    assert '±' in (tmp_path/'reports'/'T1_smoke.md').read_text() or 'seeds' in (tmp_path/'reports'/'T1_smoke.md').read_text()
    assert (tmp_path/'reports'/'figures'/'Fig3_smoke_loss_by_band.png').exists()


@pytest.mark.skipif(os.environ.get('ALCHEMIST_SLOW') != '1', reason='real pipeline at smoke size: minutes; set ALCHEMIST_SLOW=1')
def test_every_template_runs_real_pipeline(experiments, tmp_path, monkeypatch):
    monkeypatch.setenv('ALCHEMIST_PROGRESS', '0')
    res = _run_all_smoke(experiments, tmp_path)
    df = pd.read_csv(tmp_path/'results'/'T1_smoke.csv')
    assert 'metrics.fd_effnet' in df.columns


def test_commit_results_commits_only_the_results(tmp_path, monkeypatch):
    import subprocess
    git = lambda *a: subprocess.run(['git', *a], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    git('init', '-q'); git('config', 'user.email', 't@t'); git('config', 'user.name', 't')
    (tmp_path/'other.txt').write_text('x'); git('add', 'other.txt')                 # someone else's staged work
    csv = tmp_path/'reports'/'results'/'T1_quick.csv'; csv.parent.mkdir(parents=True); csv.write_text('a\n1\n')
    (csv.parent/'T1_quick_records.csv').write_text('b\n2\n')
    monkeypatch.setenv('ALCHEMIST_ROOT', str(tmp_path))
    assert rp.commit_results(csv, 'results: T1/quick x')
    assert sorted(git('show', '--name-only', '--format=', 'HEAD').split()) == ['reports/results/T1_quick.csv', 'reports/results/T1_quick_records.csv']
    assert 'other.txt' in git('diff', '--cached', '--name-only')                     # still staged, not committed
    assert not rp.commit_results(csv, 'nothing changed')


def test_partial_sweeps_with_only_add_up_in_the_csv(tiny):
    "Running a table seed by seed with `only` keeps every finished run in the CSV (not just the last slice)."
    tdir, kw = tiny
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick: {seeds: [0, 1], sets: [{method: random}]}\n")
    rp.reproduce('T1', 'quick', only='_s0_', **kw)
    res = rp.reproduce('T1', 'quick', only='_s1_', **kw)
    assert sorted(pd.read_csv(res.csv[0])['seed']) == [0, 1]


def test_only_on_a_fresh_checkout_keeps_the_committed_rows(tiny):
    "On a clone that has the committed CSV but no run folders, a sweep with `only` adds its runs to the rows it did not touch."
    import shutil
    tdir, kw = tiny
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick: {seeds: [0, 1], sets: [{method: random}]}\n")
    rp.reproduce('T1', 'quick', only='_s0_', **kw)
    shutil.rmtree(kw['runs_root'])                                   # a fresh clone: only reports/results/ is committed
    res = rp.reproduce('T1', 'quick', only='_s1_', **kw)
    df = pd.read_csv(res.csv[0])
    assert sorted(df['seed']) == [0, 1] and sorted(df['metrics.fd_effnet']) == [10.0, 11.0]
    assert len(res.done) == 1                                          # seed 0 restored, not re-run


def test_readme_headline_is_generated_from_committed_results():
    "The README's headline block is exactly what `alchemist.reports` makes of reports/results/ (so nobody typed it)."
    from alchemist.core import repo_root
    from alchemist.reports import README_BEGIN, README_END, headline_block, load_results, load_seed_systems
    text = (repo_root()/'README.md').read_text()
    assert README_BEGIN in text and README_END in text, 'README.md lost its headline markers'
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    has = (repo_root()/'reports'/'results').exists()
    expected = headline_block(load_results() if has else {}, load_seed_systems() if has else {})
    if expected is None: assert block == '(no Table 1 results collected yet)'
    else: assert block == expected.strip(), 'README headline differs from reports/results/: run `alchemist reproduce` (or write_reports())'


def _distinct_runs(profile: str) -> tuple[set, int]:
    "Config keys of the shared tables' runs (equal keys run once) and the count of figure-own runs."
    from alchemist.reproduce import TABLES, plan, tables_for
    keys, own = set(), 0
    for name in tables_for(profile):
        t = TABLES[name]
        for r in plan(name, profile):
            if t.shares_runs: keys.add(r.config_key)
            else: own += 1
    return keys, own


def test_quick_profile_stays_small():
    "The quick profile must fit ~30 minutes on 2 cores: count its distinct downstream experiments after sharing."
    keys, own = _distinct_runs('quick')
    assert len(keys) + own <= 120, f"quick profile has {len(keys)} shared + {own} figure runs; cut it (see nbs/experiments/*.yaml)"


def test_parallel_jobs_run_every_set_and_match_sequential(tiny, tmp_path):
    "--jobs 2 runs each set once, reports crashes the same way, and collects the same rows as --jobs 1."
    tdir, kw = tiny
    (tdir/'T1_selection.yaml').write_text("profiles:\n  quick: {seeds: [0, 1, 2], sets: [{method: random}, {method: full}, {method: full, corpus: missing, seed: 0}]}\n")
    par = rp.reproduce('T1', 'quick', jobs=2, **kw)
    assert len(par.done) == 6 and len(par.failed) == 1 and 'missing' in par.failed[0].run_id
    runs = [json.loads(p.read_text()) for p in (tmp_path/'runs'/'T1'/'quick').glob('*/run.json')]
    assert all(r['cpu_ratio'] is None for r in runs)   # not attributable with parallel kernels
    seq_kw = {**kw, 'runs_root': tmp_path/'runs_seq', 'results_dir': tmp_path/'results_seq'}
    seq = rp.reproduce('T1', 'quick', jobs=1, **seq_kw)
    assert sorted(par.done) == sorted(seq.done)
    cols = ['run_id', 'metrics.fd_effnet']
    a = pd.read_csv(kw['results_dir']/'T1_quick.csv')[cols].sort_values('run_id').reset_index(drop=True)
    b = pd.read_csv(seq_kw['results_dir']/'T1_quick.csv')[cols].sort_values('run_id').reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ConfigError, match='jobs must be'): rp.reproduce('T1', 'quick', jobs=0, **kw)


def test_tables_share_the_rater_of_table3():
    "Every rated run of the shared tables meta-trains its rater as long as Table 3's, or T1's where a profile has no T3 (no smoke-sized template default leaks in)."
    import json
    from alchemist.reproduce import TABLES, plan, tables_for
    for prof in ('quick', 'paper'):
        ref = 'T3' if 'T3' in tables_for(prof) else 'T1'
        t3 = {json.loads(r.config_key)['meta_epochs'] for r in plan(ref, prof)}
        assert len(t3) == 1, (prof, t3)
        for name in tables_for(prof):
            t = TABLES[name]
            if not t.shares_runs: continue
            got = {json.loads(r.config_key)['meta_epochs'] for r in plan(name, prof)}
            assert got == t3, f"{name}/{prof}: meta_epochs {got} while {ref} uses {t3}; set it in nbs/experiments/{t.yaml}"


def test_budget_counts_each_experiment_once(monkeypatch):
    "scripts/paper_budget.py: shared runs counted once (as the quick-size test counts them), every estimate positive."
    import importlib.util
    spec = importlib.util.spec_from_file_location('paper_budget', Path(__file__).parents[1]/'scripts'/'paper_budget.py')
    pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)
    monkeypatch.setattr(pb, 'finished_runs', lambda root, profile: {})
    per, corpora = pb.budget('quick')
    keys, own = _distinct_runs('quick')
    assert sum(p['runs'] for p in per.values()) == len(keys) + own
    assert all(p['est'] > 0 for p in per.values()) and 'synthetic' in corpora and corpora <= {'synthetic', 'web', 'web-planted'}


def test_budget_compute_floor_counts_executed_runs_only(tmp_path):
    "scripts/paper_budget.py --floor: reused rows are not counted twice, the config's batch size is used, hours = FLOPs / rate."
    import importlib.util
    import pandas as pd
    spec = importlib.util.spec_from_file_location('paper_budget', Path(__file__).parents[1]/'scripts'/'paper_budget.py')
    pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)
    row = dict(family='unet', size='s', resolution=32, eval_steps=10, **{'metrics.n_samples': 4})
    pd.DataFrame([dict(row, **{'metrics.train_steps': 100}, config=json.dumps(dict(batch_size=32)), reused_from=None, wall_s=3600.0),
                  dict(row, **{'metrics.train_steps': 50}, config='{}', reused_from=None, wall_s=1800.0),
                  dict(row, **{'metrics.train_steps': 100}, config='{}', reused_from='T1/x', wall_s=3600.0)]
                 ).to_csv(tmp_path/'T1_p.csv', index=False)
    pd.DataFrame([dict(wall_s=900.0, reused_from=None)]).to_csv(tmp_path/'Fig3_p.csv', index=False)   # no downstream model
    rows = pb.executed_rows('p', tmp_path)
    assert len(rows) == 2 and rows['train_images'].tolist() == [3200, 50 * 64] and rows['sample_image_steps'].tolist() == [40, 40]
    (fl,) = pb.floor_hours(rows, {('unet', 's', 32): (2e9, 1e9)}, gflops_per_core=1.0)
    assert fl['runs'] == 2 and fl['train_images'] == 6400
    assert abs(fl['train_h'] - 6400 * 2 / 3600) < 1e-9 and abs(fl['sample_h'] - 80 / 3600) < 1e-9
    assert abs(pb.measured_hours('p', tmp_path) - 1.75) < 1e-9
    assert pb.executed_rows('nothing', tmp_path).empty


def test_neutral_fields_keep_run_identity(tmp_path):
    "Fields added after runs finished (ExperimentConfig's NEUTRAL_DEFAULTS) neither rename nor re-key a run at their default."
    import shutil
    from alchemist.experiments import NEUTRAL_DEFAULTS
    tdir = tmp_path/'experiments'; shutil.copytree(rp.experiments_dir(), tdir)
    assert 'meta_preset' in rp.template_params(tdir/rp.DOWNSTREAM)          # the template declares them
    (tdir/'T1_selection.yaml').write_text(
        "profiles:\n  quick: [{method: random}, {method: random, meta_preset: learning}, {method: random, meta_preset: '', seed: 1}]\n")
    plain, learning, explicit = rp.plan('T1', 'quick', runs_root=tmp_path/'runs', templates_dir=tdir)
    assert not set(plain.params) & set(NEUTRAL_DEFAULTS) and 'meta_preset' not in json.loads(plain.config_key)
    assert learning.params['meta_preset'] == 'learning' and learning.config_key != plain.config_key
    assert json.loads(explicit.config_key) == {**json.loads(plain.config_key), 'seed': 1}   # '' given explicitly = not given
