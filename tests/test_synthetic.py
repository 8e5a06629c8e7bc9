"Tests of alchemist.synthetic: determinism, defect rates, labels consistent with pixels, the corpus round trip."
import json, math
import numpy as np, pandas as pd, pytest
from alchemist.core import ConfigError, config_from_dict
from alchemist.synthetic import (ATTRIBUTES, DEFECTS, SyntheticConfig, build_synthetic, caption_for, check_rates, clean_twin,
                                 defect_table, generate_samples, laplacian_var, save_defect_grid)


def _samples(**kw): return list(generate_samples(SyntheticConfig(**kw)))


@pytest.mark.parametrize('res', [16, 32, 64])
def test_determinism_per_seed(res):
    a, b = _samples(n=40, seed=11, resolution=res), _samples(n=40, seed=11, resolution=res)
    assert [(s['uid'], s['caption'], s['defect'], s['image'].tobytes()) for s in a] == \
           [(s['uid'], s['caption'], s['defect'], s['image'].tobytes()) for s in b]
    assert all(s['image'].shape == (res, res, 3) and s['image'].dtype == np.uint8 for s in a)
    c = _samples(n=40, seed=12, resolution=res)
    assert sum(x['image'].tobytes() != y['image'].tobytes() for x, y in zip(a, c)) > 30


def test_prefix_does_not_depend_on_n():
    a, b = _samples(n=30, seed=4, resolution=16), _samples(n=10, seed=4, resolution=16)
    assert [s['image'].tobytes() for s in a[:10]] == [s['image'].tobytes() for s in b]


def test_defect_rates_within_tolerance():
    cfg = SyntheticConfig(n=4000, resolution=16, seed=3)
    obs = check_rates([s['defect'] for s in generate_samples(cfg)], cfg)
    assert set(obs) == {'clean', *DEFECTS}
    # a configured rate moves the observed one
    cfg2 = SyntheticConfig.clean(n=1000, resolution=16, seed=3, rate_jpeg=0.3)
    d = pd.Series([s['defect'] for s in generate_samples(cfg2)]).value_counts()
    assert set(d.index) == {'clean', 'jpeg'} and abs(d['jpeg'] / 1000 - 0.3) < 0.06
    with pytest.raises(AssertionError, match='jpeg'): check_rates(['clean'] * 1000, cfg2)


def test_labels_consistent_with_pixels():
    cfg = SyntheticConfig(n=600, seed=9, resolution=32)
    samples = list(generate_samples(cfg)); by = {}
    for s in samples: by.setdefault(s['defect'], []).append(s)
    assert all(len(by.get(d, [])) > 5 for d in DEFECTS), {d: len(by.get(d, [])) for d in DEFECTS}
    for s in by['clean'][:30]:
        assert np.array_equal(s['image'], clean_twin(s, cfg))
        assert s['caption'] == caption_for(s['attrs'], cfg.templates[s['attrs']['template']])
    for s in by['blur']: assert laplacian_var(s['image']) < 0.7 * laplacian_var(clean_twin(s, cfg))
    for s in by['noise']:
        diff = s['image'].astype(float) - clean_twin(s, cfg)
        assert diff.std() > 15 and abs(diff.mean()) < 25
    for s in by['jpeg']: assert np.abs(s['image'].astype(float) - clean_twin(s, cfg)).mean() > 2
    for s in by['lowcontrast']: assert s['image'].std() < 0.5 * clean_twin(s, cfg).std()
    for s in by['plain']: assert s['attrs']['count'] == 0 or s['attrs']['size'] == 'tiny'
    for s in by['chaotic']: assert s['attrs']['clutter'] >= cfg.clutter[0]
    for d in ('caption_mismatch', 'caption_partial'):
        for s in by[d]:
            claim, truth = s['attrs']['caption_attrs'], {k: s['attrs'][k] for k in ATTRIBUTES}
            n_wrong = sum(claim[k] != truth[k] for k in ATTRIBUTES)
            assert (n_wrong == 1) if d == 'caption_partial' else (n_wrong >= 2)
            assert np.array_equal(s['image'], clean_twin(s, cfg))      # caption defects keep a clean image
    index = {s['uid']: s for s in samples}
    for s in by['duplicate_exact'] + by['duplicate_near']:
        o = index[s['group_id']]
        assert o['defect'] == 'clean' and s['attrs']['duplicate_of'] == o['uid']
        d = np.abs(s['image'].astype(float) - o['image']).mean()
        assert (d == 0 and s['caption'] == o['caption']) if s['defect'] == 'duplicate_exact' else (0 < d < 12)


def test_bad_config():
    with pytest.raises(ConfigError, match="rate_noise"): config_from_dict(SyntheticConfig, {'rate_nosie': 0.1})
    with pytest.raises(ConfigError, match='resolution'): SyntheticConfig(resolution=48)
    with pytest.raises(ConfigError, match='sum to'): SyntheticConfig(rate_blur=0.7, rate_noise=0.7)
    with pytest.raises(ConfigError, match='count_probs'): SyntheticConfig(count_probs=(0.5, 0.5))


def test_build_table_grid(tmp_path):
    from alchemist.data import read_manifest, iter_samples
    cfg = SyntheticConfig(n=250, resolution=16, seed=1, shard_size=100)
    out = build_synthetic(cfg, tmp_path/'c')
    man = read_manifest(out)
    assert len(man) == 250 and man.shard.nunique() == 3 and set(man.source) == {'synthetic'}
    assert json.loads(man['attrs'].iloc[0])['shape'] in ('circle', 'square', 'triangle')
    t = defect_table(man)
    assert int(t.total.sum()) == 250 and math.isclose(t.rate.sum(), 1.0, abs_tol=1e-3)
    assert (t.loc['clean', ['train', 'heldout', 'eval']].sum()) == t.loc['clean', 'total']
    mtime = (out/'manifest.parquet').stat().st_mtime_ns
    assert build_synthetic(cfg, out) == out and (out/'manifest.parquet').stat().st_mtime_ns == mtime   # reused
    png = save_defect_grid(out, tmp_path/'g.png', per_defect=3)
    assert png.exists() and png.stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]    # no temporaries left behind


def test_golden_digest():
    "The samples of a fixed config never change silently: if this fails on purpose, bump GENERATOR_VERSION and the digest."
    import hashlib
    from alchemist.synthetic import GENERATOR_VERSION
    h = hashlib.sha256()
    for s in generate_samples(SyntheticConfig(n=200, seed=0, resolution=16)):
        h.update(s['image'].tobytes()); h.update((s['caption'] + s['defect'] + s['group_id']).encode())
    assert GENERATOR_VERSION == 1
    assert h.hexdigest() == 'a6961b4fca449f5b51bff6d95c13969c14adebd2552dc294cbf5ee74c25ab643'
