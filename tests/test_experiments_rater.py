"""Issue 17's rater options reach the experiment pipeline: ExperimentConfig.meta_preset / meta / rater_inputs are checked
up front, reach the MetaConfig, give the rater its own folder (the default raters keep theirs), and score_corpus scores
'tokens' and frozen-feature ('effnet') raters exactly as the rater does pair by pair within the same batches."""
import json

import numpy as np, pytest, torch

from alchemist import bilevel, rater as R, scoring as SC
from alchemist.core import ConfigError, config_from_dict, config_to_dict
from alchemist.data import images_to_tensor, read_manifest, read_scores, image_cache
from alchemist.encoders import caption_embeddings
from alchemist.experiments import (ExperimentConfig, _meta_hash, _rater_plan, config_hash, identity_dict, meta_config,
                                   meta_overrides, rater_dir, stages_hash)
from alchemist.toy import toy_corpus


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp('exp_rater')/'toy'
    toy_corpus(d, n=80, resolution=16, shard_size=128)   # 25% held out: 20 reference pairs, 60 in the pool
    return d


# --- the config ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bad, msg', [
    (dict(meta=dict(populaton=4)), "ExperimentConfig.meta: unknown key 'populaton' (did you mean 'population'?)"),
    (dict(meta=dict(meta_step=10)), "unknown key 'meta_step' (did you mean 'meta_steps'"),
    (dict(meta=dict(mode='alignment')), "'mode' is set by the experiment: use ExperimentConfig.meta_mode"),
    (dict(meta=dict(batch=8)), "use ExperimentConfig.meta_batch"),
    (dict(meta=dict(rater=dict(widht=8))), "ExperimentConfig.meta.rater: unknown key 'widht' (did you mean 'width'?)"),
    (dict(meta=dict(rater=dict(image_input='effnet'))), "'image_input' is set by the experiment: use ExperimentConfig.rater_inputs"),
    (dict(meta=dict(population='four')), "ExperimentConfig.meta.population must be an integer"),
    (dict(meta_preset='learning', meta=dict(stop_spearman=2.0)), "ExperimentConfig.meta (meta_preset='learning', meta_mode='penalty'): MetaConfig.stop_spearman"),
    (dict(meta=dict(outer='conditional')), "MetaConfig.outer is an 'unrolled'/'alignment' option"),   # not with meta_mode='penalty'
    (dict(meta_preset='learned'), "ExperimentConfig.meta_preset must be '' (the fields above only) or 'learning', got 'learned'"),
    (dict(rater_inputs='effnet'), "ExperimentConfig.rater_inputs: rater inputs 'effnet'"),
    (dict(rater_inputs='clip+pooled'), "ExperimentConfig.rater_inputs"),
    (dict(meta=[1, 2]), "ExperimentConfig.meta must be a mapping"),
])
def test_bad_rater_settings_name_the_key(bad, msg):
    with pytest.raises(ConfigError) as e: config_from_dict(ExperimentConfig, bad)
    assert msg in str(e.value)
    with pytest.raises(ConfigError): ExperimentConfig(**bad)   # from Python too


def test_defaults_keep_every_identity(corpus):
    "At their defaults the new fields change no hash, no folder and no MetaConfig: every existing run and rater stays where it is."
    c = ExperimentConfig()
    assert config_hash(c) == 'fd7be78844' == config_hash(ExperimentConfig(meta={}, meta_preset='', rater_inputs='pixels+pooled'))
    assert not {'meta', 'meta_preset', 'rater_inputs'} & set(identity_dict(c))
    assert 'meta_preset' in identity_dict(ExperimentConfig(meta_preset='learning'))
    assert meta_overrides(c) == {}
    out, m, ref, n = _rater_plan(c, corpus)
    assert out == corpus/'raters'/'penalty-g1-e2-s-16px-s0'/'b16'          # 20 held-out pairs: batch 64 -> 16
    # the MetaConfig the experiment built before these fields existed, field for field
    old = bilevel.MetaConfig(mode='penalty', corpus=str(corpus), resolution=16, proxy_size='s', rater=dict(resolution=16, group_mlp=True),
                             epochs=2, batch=16, seed=0, device='auto', heldout='as_is', out_dir=str(out))
    assert m == old and _meta_hash(m, ref) == _meta_hash(old, None)
    assert stages_hash(c, corpus) == stages_hash(ExperimentConfig(meta={'population': 1}), corpus)   # an override equal to the default is the default


def test_meta_overrides_reach_the_metaconfig(corpus):
    c = config_from_dict(ExperimentConfig, dict(method='top_k', meta_mode='alignment', meta_preset='learning', rater_inputs='effnet+tokens',
                                                meta=dict(meta_steps=300, population=2, strata=8, rater=dict(width=24)), seed=3))
    out, m, ref, n = _rater_plan(c, corpus)
    want = bilevel.learning_config('alignment', meta_steps=300, population=2, strata=8)
    for k in ('mode', 'meta_steps', 'population', 'strata', 'warm_steps', 'warm_on', 'reset_every', 'meta_average', 'timesteps',
              'outer', 'align_normalize', 'probe_n', 'stop_spearman'):
        assert getattr(m, k) == getattr(want, k), k
    assert (m.rater.image_input, m.rater.text_input, m.rater.width, m.rater.resolution) == ('effnet', 'tokens', 24, 16)
    assert (m.seed, m.batch, m.corpus, m.out_dir) == (3, 16, str(corpus), str(out))
    assert stages_hash(c, corpus) != stages_hash(ExperimentConfig(method='top_k', meta_mode='alignment', seed=3), corpus)
    # without the preset an override acts on today's defaults
    m2 = meta_config(ExperimentConfig(meta=dict(rater_lr=3e-4, timesteps='stratified')))
    assert (m2.rater_lr, m2.timesteps, m2.population, m2.meta_steps, m2.warm_steps) == (3e-4, 'stratified', 1, 0, 0)


def test_rater_dir_one_setting_one_folder(corpus):
    base = rater_dir(ExperimentConfig(), corpus)
    assert base == corpus/'raters'/'penalty-g1-e2-s-16px-s0'
    cfgs = [ExperimentConfig(meta_preset='learning'), ExperimentConfig(meta_preset='learning', meta=dict(population=8)),
            ExperimentConfig(meta=dict(strata=8, timesteps='stratified')), ExperimentConfig(meta=dict(strata=4, timesteps='stratified')),
            ExperimentConfig(rater_inputs='effnet+pooled'), ExperimentConfig(rater_inputs='randconv+pooled'),
            ExperimentConfig(rater_inputs='pixels+tokens'), ExperimentConfig(meta=dict(rater=dict(frozen_seed=1)), rater_inputs='randconv+pooled')]
    dirs = [rater_dir(c, corpus) for c in cfgs]
    assert len(set(dirs) | {base}) == len(cfgs) + 1
    for c, d in zip(cfgs, dirs):
        assert d.name.startswith(base.name + '-') and d.parent == base.parent        # the default's name, then what differs
        assert rater_dir(ExperimentConfig(**{k: getattr(c, k) for k in ('meta_preset', 'meta', 'rater_inputs')}), corpus) == d   # deterministic
    assert 'effnet+pooled' in dirs[4].name
    # the same MetaConfig reached two ways is one rater
    assert rater_dir(ExperimentConfig(meta=dict(bilevel.LEARNING)), corpus) == dirs[0]


# --- scoring 'tokens' and frozen-feature raters -------------------------------------------------------------------

def _pair_by_pair(rater, corpus, df, text):
    "Scores of `df`'s rows recomputed pair by pair (features of one pair at a time, frozen features computed on the spot), then each batch's heads."
    man = read_manifest(corpus); pos = {u: i for i, u in enumerate(man.uid.astype(str))}
    imgs = image_cache(corpus, rater.cfg.resolution)
    out = np.empty(len(df), np.float32)
    with torch.no_grad():
        for b, g in df.groupby('batch', sort=True):
            hs = []
            for u in g.uid:
                i = pos[u]
                hs.append(rater.features(images_to_tensor(np.asarray(imgs[i:i + 1])), text.pooled[i:i + 1].float(),
                                         text.tokens[i:i + 1].float(), text.mask[i:i + 1].bool())[0])
            h = torch.stack(hs); s, gg = rater.heads(h)
            out[g.index.to_numpy()] = (torch.softmax(s, 0) * len(h) * gg).numpy()
    return out


@pytest.mark.parametrize('inputs', ['pixels+tokens', 'effnet+pooled'])
def test_scoring_tokens_and_frozen_feature_raters(corpus, inputs, monkeypatch):
    torch.manual_seed(0)
    extra = dict(effnet_size=64) if inputs.startswith('effnet') else {}   # 64 px: the same code path as 224, a tenth of the work
    rt = R.Rater(R.RaterConfig(resolution=16, width=16, depth=2, **R.rater_inputs(inputs), **extra))
    with torch.no_grad():
        # non-trivial weights everywhere: batch statistics matter, and the caption does (FiLM and the token query start at 0)
        for p in rt.parameters(): p.mul_(3.0).add_(torch.randn_like(p) * 0.1)
        if inputs.endswith('tokens'): rt.token_query.normal_()
    ck = R.save_rater(rt, corpus.parent/f'{inputs}.pt', corpus=dict(name='toy', resolution=16))
    text = caption_embeddings(corpus)
    calls = []
    real = SC.frozen_image_features
    monkeypatch.setattr(SC, 'frozen_image_features', lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    for order in (None, 3):   # manifest order, then a shuffled order: other batches, the same pairs in each as the table says
        cfg = config_from_dict(SC.ScoringConfig, dict(rater=str(ck), corpus_dir=str(corpus), batch_size=16, device='cpu', order_seed=order,
                                                      out=str(corpus.parent/f'{inputs}-{order}.parquet')))
        df = read_scores(SC.score_corpus(cfg), SC.RATER_SCORE_COLUMNS).reset_index(drop=True)
        assert len(df) == 60 and df.batch.max() == 3
        np.testing.assert_allclose(df.score.to_numpy(), _pair_by_pair(rt, corpus, df, text), rtol=1e-4, atol=1e-5)
    if inputs.startswith('effnet'):
        assert calls == [60]                    # the split's features, once: not per batch, and not again for the second table
        man = read_manifest(corpus); uids = man.uid[man.split == 'train'].astype(str).tolist()
        path = SC.frozen_cache_path(corpus/'cache', rt.cfg, 16, uids)
        assert path.exists()
        # it is the file meta-training keeps for the same rows (bilevel.attach_image_features reads it instead of computing)
        monkeypatch.setattr(bilevel, 'frozen_image_features', lambda *a, **k: pytest.fail('recomputed instead of read from the cache'))
        sp = bilevel.corpus_splits(corpus, 16)['train']
        got = bilevel.attach_image_features(dict(train=sp), rt.cfg, 'cpu', corpus/'cache')['train']
        assert torch.equal(got.image_features, torch.load(path, weights_only=True))
    else:
        assert calls == []


def test_scoring_a_tokens_rater_reads_its_max_tokens(corpus):
    "A 'tokens' rater trained on 8 caption tokens reads 8 (a cache of its own); the default 16 is every other rater's cache."
    rt = R.Rater(R.RaterConfig(resolution=16, width=16, depth=2, text_input='tokens'))
    with torch.no_grad():
        for p in rt.parameters(): p.add_(torch.randn_like(p) * 0.1)
        rt.token_query.normal_()
    ck = R.save_rater(rt, corpus.parent/'tok8.pt', corpus=dict(name='toy', resolution=16))
    kw = dict(rater=str(ck), corpus_dir=str(corpus), batch_size=16, device='cpu')
    a = read_scores(SC.score_corpus(config_from_dict(SC.ScoringConfig, dict(kw, max_tokens=8, out=str(corpus.parent/'t8.parquet')))))
    df = a.reset_index(drop=True)
    np.testing.assert_allclose(df.score.to_numpy(), _pair_by_pair(rt, corpus, df, caption_embeddings(corpus, max_tokens=8)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match='ScoringConfig.max_tokens'): SC.ScoringConfig(max_tokens=0)


# --- a table's YAML set ----------------------------------------------------------------------------------------

LEARNING_SET = """\
profiles:
  quick:
    common: {corpus: synthetic, corpus_n: 6000, resolution: 16, epochs: 2.0, heldout: clean}
    seeds: [0, 1, 2]
    sets:
      - {method: alchemist, retention: 0.5, meta_mode: alignment, meta_preset: learning}
      - {method: alchemist, retention: 0.5, meta_mode: alignment, meta_preset: learning, rater_inputs: randconv+tokens, meta: {population: 8, meta_steps: 4000}}
"""


def test_example_yaml_set_for_the_learning_rater(tmp_path):
    """The report's example set is valid for the driver once the downstream template declares the three parameters
    (a copy with them is made here: the template itself is not changed by this work)."""
    from alchemist.reproduce import experiments_dir, plan
    nb = json.loads((experiments_dir()/'downstream.ipynb').read_text())
    for c in nb['cells']:
        src = ''.join(c['source'])
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            src += "\nmeta_preset = ''          # '' or 'learning'\nmeta = {}                 # MetaConfig overrides\nrater_inputs = 'pixels+pooled'   # the rater's inputs"
        c['source'] = src.splitlines(keepends=True)
    (tmp_path/'downstream.ipynb').write_text(json.dumps(nb))
    (tmp_path/'T4_ablations.yaml').write_text(LEARNING_SET)
    runs = plan('T4', 'quick', runs_root=tmp_path/'runs', templates_dir=tmp_path)
    assert len(runs) == 6
    cfgs = [config_from_dict(ExperimentConfig, {**r.params, 'profile': 'quick'}) for r in runs]
    m0, m1 = meta_config(cfgs[0]), meta_config(cfgs[3])
    assert (m0.population, m0.meta_steps, m0.warm_steps, m0.outer, m0.rater.image_input) == (4, 2000, 1200, 'conditional', 'pixels')
    assert (m1.population, m1.meta_steps, m1.rater.image_input, m1.rater.text_input) == (8, 4000, 'randconv', 'tokens')
    assert len({rater_dir(c, '/c') for c in cfgs}) == 6
    assert rater_dir(cfgs[0], '/c') != rater_dir(cfgs[3], '/c')


# --- locks: raters of different seeds meta-train at once; one rater is never trained twice at once ----------------------

def _blocks(lock, timeout: float = 0.5) -> bool:
    "True when entering `lock` (a context manager) waits longer than `timeout` seconds."
    import threading
    entered = threading.Event()
    def hold():
        with lock: entered.set()
    t = threading.Thread(target=hold, daemon=True); t.start()
    return not entered.wait(timeout)

def test_rater_lock_is_per_rater_not_per_corpus(corpus, tmp_path, monkeypatch):
    from alchemist.experiments import corpus_lock, rater_lock
    monkeypatch.setenv('ALCHEMIST_DATA', str(tmp_path))
    cfg = lambda seed: ExperimentConfig(corpus=str(corpus), method='alchemist', seed=seed)
    with corpus_lock(cfg(0)):
        assert not _blocks(rater_lock(cfg(0), corpus))      # meta-training does not wait for the corpus lock
    with rater_lock(cfg(0), corpus):
        assert not _blocks(rater_lock(cfg(1), corpus))      # another seed's rater trains at the same time
        assert _blocks(rater_lock(cfg(0), corpus))          # the same rater waits (flock: one holder per lock file)
