"Fast tests of alchemist.baselines, alchemist.curator and alchemist.attribution on the toy corpus (no model training)."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from alchemist.core import ConfigError, config_from_dict
from alchemist.data import read_scores, scores_path
from alchemist.baselines import BASELINES, BaselineConfig, box_blur, clarity, edge_density, frequency, score_baseline, semdedup
from alchemist.curator import CuratorConfig, curator_scores, pool_attention
from alchemist.attribution import gradient_similarity, map_at_k, per_sample_gradients, rank_labels
from alchemist.t2i import build_t2i
from alchemist.toy import toy_corpus, toy_embedder, toy_text_batch


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp('toy')
    man = toy_corpus(d, n=160)
    return d, man


def _by_defect(d, man, name, **kw):
    sc = score_baseline(name, d, BaselineConfig(resolution=32, batch_size=50), **kw)
    tab = man.set_index('uid').join(sc.set_index('uid'), how='inner')
    return sc, tab


def test_registry_and_config():
    assert set(BASELINES) >= {'clarity', 'frequency', 'edge_density', 'clip_score', 'aesthetic', 'semdedup', 'curator', 'fastgda'}
    with pytest.raises(ConfigError, match="unknown baseline 'blurriness'"): score_baseline('blurriness', '.')
    with pytest.raises(ConfigError, match='edge_threshold'): config_from_dict(BaselineConfig, {'edge_treshold': 0.1})


def test_missing_corpus_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='no corpus'): score_baseline('clarity', tmp_path / 'nope')
    with pytest.raises(Exception, match='not a corpus'): score_baseline('clarity', tmp_path)


@pytest.mark.parametrize('name', ['clarity', 'frequency'])
def test_heuristics_rank_blur_and_plain_low(corpus, name):
    d, man = corpus
    sc, tab = _by_defect(d, man, name)
    assert len(sc) == (man.split == 'train').sum() and sc.uid.is_unique
    m = tab.groupby('defect').score.mean()
    assert m['blur'] < m['clean'] and m['plain'] < m['clean']
    assert (tab[tab.defect == 'plain'].score == 0).all()          # a flat image has no detail at all
    on_disk = read_scores(scores_path(d, name))
    pd.testing.assert_frame_equal(on_disk, sc)
    rec = json.loads((Path(d) / 'scores' / f'{name}.json').read_text())
    assert rec['baseline'] == name and rec['n'] == len(sc) and rec['config']['resolution'] == 32


def test_edge_density_blur_removes_moderate_edges():
    "A moderate-contrast edge (0.2 of full scale) is an edge when sharp and is spread below threshold by a 5 px blur."
    rng = np.random.default_rng(0)
    ims = np.zeros((32, 32, 32, 3), np.uint8); ims[:] = 70
    for i in range(32):
        y, x = rng.integers(0, 16, 2); ims[i, y:y + 12, x:x + 12] = 121
    assert (edge_density(ims) > 0.03).all() and (edge_density(box_blur(ims, 5)) == 0).all()
    assert (edge_density(np.full((2, 16, 16, 3), 90, np.uint8)) == 0).all()
    assert (clarity(ims) > clarity(box_blur(ims, 3))).all() and (frequency(ims) > frequency(box_blur(ims, 3))).all()


def test_clip_score_ranks_mismatch_low(corpus):
    d, man = corpus
    _, tab = _by_defect(d, man, 'clip_score', embedder=toy_embedder())
    m = tab.groupby('defect').score.mean()
    assert m['mismatch'] < m['clean']


def test_semdedup_keeps_one_per_planted_pair(corpus):
    d, man = corpus
    _, tab = _by_defect(d, man, 'semdedup', embedder=toy_embedder())
    kept = tab.score >= 1
    dup_groups = tab[tab.defect == 'near_duplicate'].group_id
    per_group = kept[tab.group_id.isin(dup_groups)].groupby(tab.group_id).sum()
    assert (per_group == 1).all()


def test_semdedup_scores_kept_first():
    X = np.random.default_rng(1).normal(size=(60, 8)); X = np.concatenate([X, X[:10] + 1e-4])
    s, kept = semdedup(X, eps=0.01, cluster_size=20)
    assert kept.sum() == 60 and s[kept].min() > s[~kept].max()


def test_aesthetic_labels_and_errors(corpus, tmp_path):
    d, man = corpus
    sc, tab = _by_defect(d, man, 'aesthetic', embedder=toy_embedder())
    rec = json.loads((Path(d) / 'scores' / 'aesthetic.json').read_text())
    # the toy heldout sample is tiny (~20 clean vs ~10 degraded rows) and the stand-in embedder maps a flat image to 0,
    # so only the fit itself and the record are asserted here; the ordering check lives in the notebook (n=240)
    assert np.isfinite(sc.score).all() and rec['head_train_acc'] > 0.5 and "split 'heldout'" in rec['aesthetic_target']
    with pytest.raises(ConfigError, match='must differ'):
        score_baseline('aesthetic', d, BaselineConfig(aesthetic_split='train'), embedder=toy_embedder())
    with pytest.raises(ConfigError, match='aesthetic_reference'):
        score_baseline('aesthetic', d, BaselineConfig(aesthetic_target='reference'), embedder=toy_embedder())
    with pytest.raises(ValueError, match="aesthetic_target='degraded' or 'reference'"):   # no degraded rows in the labelled sample
        score_baseline('aesthetic', d, BaselineConfig(aesthetic_target='labels', aesthetic_negatives=('nothing',)), embedder=toy_embedder())
    # 'auto' (the default) falls back to degraded copies when there is nothing labelled bad (the web corpus)
    score_baseline('aesthetic', d, BaselineConfig(aesthetic_negatives=('nothing',)), embedder=toy_embedder())
    assert json.loads((Path(d) / 'scores' / 'aesthetic.json').read_text())['aesthetic_target'].startswith('degraded')


def test_curator_pooling_and_scores():
    p = torch.zeros(2, 4, 3); p[0, 0] = 1.; p[1] = .25
    assert torch.allclose(pool_attention(p, 1, torch.ones(2, 3, dtype=torch.bool)), torch.tensor([1., 0.]), atol=1e-5)
    with pytest.raises(ValueError, match='token_pooling'): pool_attention(p, 1, torch.ones(2, 3, dtype=torch.bool), 'nope')
    m = build_t2i({'resolution': 16}, seed=0)
    ims = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    tb = toy_text_batch(['a red square'] * 6)
    s = curator_scores(m, ims, tb.tokens, tb.mask, CuratorConfig(timesteps=(500,), batch_size=4))
    assert s.shape == (6,) and np.isfinite(s).all()
    assert not any('get_attention_scores' in mod.__dict__ for mod in m.modules())   # capture cleaned up
    with pytest.raises(ValueError, match='timesteps'): curator_scores(m, ims, tb.tokens, tb.mask, CuratorConfig(timesteps=(5000,)))
    with pytest.raises(ValueError, match='px'): curator_scores(m, np.zeros((2, 8, 8, 3), np.uint8), tb.tokens[:2], tb.mask[:2], CuratorConfig())


def test_model_baselines_refuse_a_stand_in_text_without_its_model(corpus):
    "Training here reads the MiniLM caption cache: a stand-in text batch needs the model trained on it."
    d, man = corpus
    tb = toy_text_batch(man.caption.tolist(), man.uid.tolist())
    for name in ('curator', 'fastgda'):
        with pytest.raises(ValueError, match='needs a `model` trained on it'): score_baseline(name, d, BaselineConfig(resolution=16), text=tb)


def test_attribution_metric_and_gradients():
    t = np.random.default_rng(0).normal(size=(4, 50))
    assert map_at_k(t, t, 5) == 1.0 and map_at_k(-t, t, 5) == 0.0
    with pytest.raises(ValueError, match='differ'): map_at_k(t, t[:, :10])
    lab = rank_labels(np.array([[0.1, 0.9, 0.5]]))
    assert lab.tolist() == [[0.0, 1.0, 0.5]]
    m = build_t2i({'resolution': 16}, seed=0)
    ims = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    tb = toy_text_batch(['a red square', 'a red square', 'a blue square'])
    g = per_sample_gradients(m, ims[[0, 0, 1]], tb.tokens[[0, 0, 2]], tb.mask[[0, 0, 2]], n_timesteps=2, proj_dim=64)
    sim = gradient_similarity(g, g)
    assert g.shape == (3, 64) and abs(sim[0, 1] - 1) < 1e-4 and sim[0, 2] < 0.9999   # same sample -> same gradient
