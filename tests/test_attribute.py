"""Attribution as a feature (issue 19 item 1) on a smoke run (a UNet-s trained 30 steps at 16 px on a 96-pair toy corpus):
the index builds, reloads and rebuilds when its config changes; `attribute` answers sorted top-k rows; the CLI runs end to
end and names what is wrong. Two checks that can fail: a training pair given as the query comes back first (features,
uids and ranker line up), and held-out pairs given as queries get top pairs of their own colour more often than random."""
import json, shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alchemist import cli
from alchemist.attribution import INDEX_DIR, INDEX_JSON, IndexConfig, attribute, build_index, load_index
from alchemist.core import ConfigError, read_json, write_json
from alchemist.data import load_images
from alchemist.t2i import T2IConfig
from alchemist.toy import toy_corpus
from alchemist.train import TrainConfig, train

CFG = IndexConfig(n_queries=16, n_timesteps=2, proj_dim=256, sample_steps=10, device='cpu')   # smoke size: seconds
CAPTION = 'a red square at the top left'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "(folder, run folder, manifest) of a smoke run on the toy corpus: 72 training pairs, 24 eval pairs."
    d = tmp_path_factory.mktemp('attr')
    man = toy_corpus(d/'corpus', n=96, resolution=16, heldout=0.0, eval=0.25)
    r = train(TrainConfig(corpus_dir=str(d/'corpus'), model=T2IConfig(resolution=16), budget='steps', steps=30, batch_size=32,
                          device='cpu', out_dir=str(d/'run')))
    return d, Path(r['run_dir']), man


@pytest.fixture(scope='module')
def index(run):
    return build_index(run[1], cfg=CFG)


def _main(capsys, *argv):
    rc = cli.main([str(a) for a in argv]); out = capsys.readouterr(); return rc, out.out, out.err


def test_index_builds_and_reloads(run, index):
    d, rd, man = run
    assert not index.cached and sorted(p.name for p in (rd/INDEX_DIR).iterdir()) == ['features.npy', 'index.json', 'items.parquet', 'ranker.pt']
    rec = read_json(rd/INDEX_DIR/INDEX_JSON)
    n_train = int((man.split == 'train').sum())
    assert rec['n_items'] == n_train == len(index.items) == len(index.features) and set(index.items.uid) == set(man[man.split == 'train'].uid)
    assert rec['n_teacher_items'] == n_train and rec['n_query_captions'] == 16 and rec['n_queries'] == 32   # each caption generated and real
    assert not set(rec['query_uids']) & set(index.items.uid)                                                  # calibration never on training pairs
    assert 0 <= rec['map_ranker'] <= 1 and rec['config']['n_queries'] == 16 and rec['seconds']['fit'] > 0
    again = build_index(rd, cfg=CFG)
    assert again.cached and np.array_equal(again.features, index.features)
    assert build_index(rd).cached                                   # no config: whatever index is there
    with pytest.raises(ConfigError, match='IndexConfig.feature_kind'): build_index(rd, cfg={'feature_kind': 'clip'})


def test_another_config_rebuilds(run, index, tmp_path):
    "In a copy of the run: another config rebuilds the index, the same one then loads it."
    other = tmp_path/'run'; shutil.copytree(run[1], other)
    cheap = dict(n_queries=4, n_teacher_items=8, n_timesteps=1, proj_dim=64, query_images='real', feature_kind='pixels', device='cpu')
    a = build_index(other, cfg=cheap)
    assert not a.cached and a.record['n_teacher_items'] == 8 and a.record['config']['feature_kind'] == 'pixels' and a.features.shape[1] == 192 + 384
    assert build_index(other, cfg=cheap).cached and load_index(other).record['key'] == a.record['key']


def test_attribute_returns_sorted_top_k(run, index):
    d, rd, man = run
    res = attribute(rd, CAPTION, top=7, device='cpu')
    assert list(res.columns) == ['uid', 'file_name', 'caption', 'score', 'rank'] and len(res) == 7
    assert res['rank'].tolist() == list(range(1, 8)) and res.score.is_monotonic_decreasing and res.uid.is_unique
    assert res.uid.isin(man[man.split == 'train'].uid).all() and res.attrs['generated'] and res.attrs['image'].size == (16, 16)
    assert res.attrs['seconds']['rank'] < 0.1                        # the index's share of a query: one product and a sort
    same, other = attribute(rd, CAPTION, top=7, device='cpu'), attribute(rd, CAPTION, top=7, seed=1, device='cpu')
    assert same.uid.tolist() == res.uid.tolist() and np.array_equal(np.asarray(same.attrs['image']), np.asarray(res.attrs['image']))
    assert not np.array_equal(np.asarray(other.attrs['image']), np.asarray(res.attrs['image']))   # the seed draws another image
    assert len(attribute(rd, CAPTION, top=500, device='cpu')) == len(index.items)
    with pytest.raises(ValueError, match='top'): attribute(rd, CAPTION, top=0)


def test_a_training_pair_finds_itself(run, index):
    "Every training pair given as the query (its image and caption) ranks itself first, near-duplicates included."
    d, rd, man = run
    ims, uids = load_images(d/'corpus', 16, split='train')
    cap = man.set_index('uid').caption
    firsts = [attribute(rd, cap[u], image=im, top=1, device='cpu').uid.iloc[0] for im, u in zip(ims, uids)]
    assert firsts == uids


def test_heldout_queries_share_their_colour(run, index):
    "Held-out pairs (never trained on) as queries: their top 5 training pairs share their colour more often than random pairs do."
    d, rd, man = run
    colour = man.set_index('uid')['attrs'].map(lambda a: json.loads(a)['colour'])
    cap = man.set_index('uid').caption
    train_colours = colour[man[man.split == 'train'].uid]
    ims, uids = load_images(d/'corpus', 16, split='eval')
    hit, chance = [], []
    for im, u in zip(ims, uids):
        res = attribute(rd, cap[u], image=im, top=5, device='cpu')
        hit.append((colour[res.uid] == colour[u]).mean()); chance.append((train_colours == colour[u]).mean())
    assert np.mean(hit) > np.mean(chance) + 0.1, (np.mean(hit), np.mean(chance))   # measured 0.48-0.63 against 0.175 (seeds 0, 1)


def test_cli_end_to_end(run, index, tmp_path, capsys):
    d, rd, man = run
    rc, out, err = _main(capsys, 'attribute', '--model', rd, '--caption', CAPTION, '--top', 4, '--save-query', tmp_path/'q.png', '--device', 'cpu')
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ['rank', 'score', 'uid'] and [l.split()[0] for l in lines[1:5]] == ['1', '2', '3', '4']
    assert 'query time:' in out and "the run's model drew it, seed 0" in out and Image.open(tmp_path/'q.png').size == (16, 16)
    ims, uids = load_images(d/'corpus', 16, split='train')
    Image.fromarray(ims[3]).resize((64, 64), Image.NEAREST).save(tmp_path/'train.png')   # a larger copy: resized back on reading
    rc, out, err = _main(capsys, 'attribute', '--model', rd, '--caption', man.set_index('uid').caption[uids[3]], '--image', tmp_path/'train.png', '--device', 'cpu')
    assert rc == 0, err
    assert out.splitlines()[1].split()[2] == uids[3] and f"image {tmp_path/'train.png'}" in out


def test_cli_errors_name_the_problem(run, index, tmp_path, capsys):
    d, rd, man = run
    rc, _, err = _main(capsys, 'attribute', '--model', tmp_path/'nope', '--caption', CAPTION)
    assert rc == 2 and f"no run folder {tmp_path/'nope'}" in err
    (tmp_path/'empty').mkdir()
    rc, _, err = _main(capsys, 'attribute', '--model', tmp_path/'empty', '--caption', CAPTION)
    assert rc == 2 and 'no checkpoint' in err
    moved = tmp_path/'moved'; shutil.copytree(rd, moved, ignore=shutil.ignore_patterns(INDEX_DIR))
    rec = read_json(moved/'train.json'); rec['config']['corpus_dir'] = str(tmp_path/'gone'); write_json(moved/'train.json', rec)
    rc, _, err = _main(capsys, 'attribute', '--model', moved, '--caption', CAPTION)
    assert rc == 2 and 'no attribution index' in err and str(tmp_path/'gone') in err and '--corpus' in err
    (tmp_path/'bad.png').write_bytes(b'not an image')
    rc, _, err = _main(capsys, 'attribute', '--model', rd, '--caption', CAPTION, '--image', tmp_path/'bad.png')
    assert rc == 2 and f"{tmp_path/'bad.png'} is not an image file" in err
    rc, _, err = _main(capsys, 'attribute', '--model', rd, '--caption', CAPTION, '--image', tmp_path/'none.png')
    assert rc == 2 and f"no image file {tmp_path/'none.png'}" in err
    rc, _, err = _main(capsys, 'attribute', '--model', rd, '--caption', CAPTION, '--top', 0)
    assert rc == 2 and '--top' in err


# --- issue 19 item 2: FastGDA's evaluation (scripts/attribution_eval.py, alchemist.attribution.evaluate_attribution) ---
EVAL_SCRIPT = Path(__file__).resolve().parents[1]/'scripts'/'attribution_eval.py'


@pytest.fixture(scope='module')
def evaluation(tmp_path_factory):
    """The script at the smoke profile, with the counterfactual check switched on for one query (ranker vs random
    removal of 20 pairs) so that its path runs too: about 40 s."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('attribution_eval', EVAL_SCRIPT)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    d = tmp_path_factory.mktemp('attr_eval')
    res = m.main(['--profile', 'smoke', '--out', str(d/'reports'), '--work', str(d/'work'), '--device', 'cpu',
                  '--set', 'n_counterfactual=1', 'cf_k=20', 'cf_methods=["ranker","random"]'])
    return d, res


def test_eval_writes_report_and_csv_with_every_method(evaluation):
    import pandas as pd
    from alchemist.attribution import EVAL_METHODS
    d, res = evaluation
    p = res['paths']
    assert p['report'] == d/'reports'/'attribution.md' and p['rows'] == d/'reports'/'results'/'attribution_smoke.csv'
    rows = pd.read_csv(p['rows'])
    ks = (10, 50, 100)
    assert sorted(zip(rows.method, rows.k)) == sorted((m, k) for m in EVAL_METHODS for k in ks)     # generated queries, one seed
    assert rows[['map', 'map_se', 'shape_share', 'colour_share', 'index_s_per_query', 'queries_per_s']].notna().all().all()
    assert ((rows['map'] >= 0) & (rows['map'] <= 1)).all() and (rows.bytes_per_pair[rows.method != 'chance'] > 0).all()
    text = p['report'].read_text()
    for m in EVAL_METHODS: assert f'| {m} ' in text, m
    for h in ('## Record', '## Reading', "## mAP@k against the teacher's top-k (generated queries)", '## Storage and speed',
              "## Top-k pairs sharing the query's shape and colour", '## Counterfactual', '## Per seed'):
        assert h in text, h
    assert 'load average' in text and 'git `' in text and '"profile": "smoke"' in text and 'This is the smoke profile' in text
    cf = pd.read_csv(p['counterfactual'])
    assert sorted(cf.method) == ['random', 'ranker'] and (cf.cf_k == 20).all() and np.isfinite(cf[['delta_loss', 'image_mse']]).all().all()
    assert (cf.set_index('method').overlap_with_ranker['ranker'] == 1.0) and read_json(p['record'])['config']['n_counterfactual'] == 1


def test_eval_teacher_against_itself_is_one(evaluation):
    "The teacher recomputed query by query, from scratch, ranks as the batched teacher: mAP 1 at every k (misaligned rows or a non-reproducible teacher fail)."
    rows = evaluation[1]['rows']
    t = rows[rows.method == 'teacher']
    assert len(t) == 3 and np.allclose(t['map'], 1.0, atol=1e-9)
    assert (rows[rows.method == 'chance']['map'] < 1).all() and (rows[rows.method == 'teacher-redrawn']['map'] < 1).any()


def test_eval_fit_queries_are_disjoint_from_evaluation_queries(evaluation):
    "The ranker's calibration queries (read back from the index it was fitted with) share neither a uid nor a caption with the evaluation queries."
    import pandas as pd
    from alchemist.data import read_manifest
    rec = evaluation[1]['record']; s = rec['seeds'][0]
    fitted = read_json(Path(s['run_dir'])/INDEX_DIR/INDEX_JSON)['query_uids']
    assert fitted == s['calibration_uids'] and len(s['query_uids']) == 12
    man = read_manifest(rec['corpus_dir']).set_index('uid')
    assert not set(fitted) & set(s['query_uids'])
    assert not set(man.caption[fitted]) & set(man.caption[s['query_uids']])
    assert set(man.split[fitted]) == {'heldout'} and set(man.split[s['query_uids']]) == {'eval'}
