"Metrics of alchemist.evaluate on tiny inputs: each test can fail if the metric is wrong."
import math
from pathlib import Path

import numpy as np
import pytest

from alchemist.evaluate import (attr_accuracy, clip_like_score, eval_config, eval_prompts, evaluate_model, fd_effnet,
                                frechet_distance, kid, prompt_attrs, save_sample_grid)
from alchemist.data import images_to_tensor
from alchemist.image_encoders import ClipLikeConfig, effnet_features, train_clip_like
from alchemist.toy import toy_pairs, toy_text_batch


@pytest.fixture(scope='module')
def toy_feats():
    x, _ = toy_pairs(96, 16)
    noise = np.random.default_rng(1).integers(0, 256, x.shape, dtype=np.uint8)
    return effnet_features(x, image_size=64), effnet_features(noise, image_size=64)


def test_fd_self_zero_noise_large(toy_feats):
    real, noise = toy_feats
    assert fd_effnet(real, real) < 1e-6 * fd_effnet(real, noise) + 1e-6
    p = np.random.default_rng(0).permutation(len(real))
    assert fd_effnet(real, noise) > 3 * fd_effnet(real[p[:48]], real[p[48:]])


def test_frechet_closed_form():
    # 1-d: (mu1-mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 4 + 1 + 4 - 4 = 5
    assert frechet_distance(np.zeros(1), np.eye(1), np.full(1, 2.), 4 * np.eye(1)) == pytest.approx(5.0)
    rng = np.random.default_rng(0); a = rng.normal(size=(2000, 4))
    assert fd_effnet(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)   # a pure mean shift adds |shift|^2


def test_kid_self_near_zero_noise_large(toy_feats):
    real, noise = toy_feats
    p = np.random.default_rng(0).permutation(len(real))
    same = kid(real[p[:48]], real[p[48:]], subset_size=48, n_subsets=10)
    far = kid(real, noise, subset_size=48, n_subsets=10)
    assert far > 10 * abs(same) and far > 0, (same, far)
    with pytest.raises(ValueError, match='at least 2'): kid(real[:1], noise)


def test_clip_like_score_matched_above_shuffled():
    x, caps = toy_pairs(240, 16)
    t = toy_text_batch(caps).pooled                      # stands in for MiniLM
    clip = train_clip_like(x, t, caps, cfg=ClipLikeConfig(width=32, layers=1, steps=60, batch_size=32, lr=3e-3, warmup=5, device='cpu'))
    idx = np.arange(0, 240, 3); sh = np.roll(idx, 5)
    colour = np.array([c.split()[1] for c in caps]); other = colour[idx] != colour[sh]   # shuffled partners name another colour
    assert clip_like_score(x[idx[other]], t[idx[other]], clip) > clip_like_score(x[idx[other]], t[sh[other]], clip) + 0.05


def test_oracle_attribute_accuracy_on_real_clean_images():
    from alchemist.oracle import load_oracle
    from alchemist.synthetic import SyntheticConfig, generate_samples
    samples = list(generate_samples(SyntheticConfig.clean(n=200, resolution=16, seed=777, uid_prefix='evaltest')))
    imgs = np.stack([s['image'] for s in samples]); attrs = [s['attrs'] for s in samples]
    oracle = load_oracle(16)
    acc = attr_accuracy(imgs, attrs, oracle)
    assert acc['attr_acc'] > 0.9 and acc['attr_acc_colour'] > 0.95, acc
    # and it is not trivially high: shuffled attributes score far lower
    bad = attr_accuracy(imgs, attrs[1:] + attrs[:1], oracle)
    assert bad['attr_acc'] < 0.3, bad


def test_sample_grid(tmp_path):
    x, caps = toy_pairs(4, 16)
    p = save_sample_grid(images_to_tensor(x), caps, tmp_path/'g.png', ncol=2)
    assert p.exists() and p.stat().st_size > 500
    with pytest.raises(ValueError, match='4 images but 3'): save_sample_grid(x, caps[:3], tmp_path/'h.png')


@pytest.fixture(scope='module')
def tiny_corpus(tmp_path_factory):
    from alchemist.data import SplitConfig
    from alchemist.synthetic import SyntheticConfig, build_synthetic
    d = tmp_path_factory.mktemp('syn')
    return build_synthetic(SyntheticConfig(n=120, resolution=16), out_dir=d/'syn', split_cfg=SplitConfig(heldout=0.1, eval=0.5))


def test_prompts_fixed_and_clean(tiny_corpus):
    cfg = eval_config('smoke', n_samples=200)
    p1, p2 = eval_prompts(tiny_corpus, cfg), eval_prompts(tiny_corpus, cfg)
    assert p1.uid.tolist() == p2.uid.tolist() and len(p1) == 200          # deterministic, cycles to n_samples
    assert set(p1.split) == {'eval'} and set(p1.defect) == {'clean'}
    assert prompt_attrs(p1) is not None
    p3 = eval_prompts(tiny_corpus, eval_config('smoke', n_samples=200, prompt_salt='other'))
    assert p3.uid.tolist() != p1.uid.tolist()
    with pytest.raises(ValueError, match='unknown split'): eval_prompts(tiny_corpus, eval_config('smoke', split='test'))


def test_evaluate_model_identical_noise(tiny_corpus, tmp_path):
    from alchemist.t2i import T2IConfig, build_t2i
    model = build_t2i(T2IConfig(resolution=16), seed=0)
    cfg = eval_config('smoke', n_samples=8, batch_size=4, steps=2, device='cpu', metrics=('fd', 'kid', 'clip'),
                      clip=dict(steps=5, device='cpu'))
    m1 = evaluate_model(model, tiny_corpus, cfg, out_dir=tmp_path)
    m2 = evaluate_model(model, tiny_corpus, cfg)
    for k in ('fd_effnet', 'kid', 'clip_score', 'clip_score_real', 'clip_top1'): assert math.isfinite(m1[k]), k
    assert m1['fd_effnet'] == pytest.approx(m2['fd_effnet'], rel=1e-6) and m1['clip_score'] == pytest.approx(m2['clip_score'], rel=1e-5)
    assert math.isnan(m1['attr_acc']) and m1['n_samples'] == 8 and Path(m1['grid']).exists()
    m3 = evaluate_model(model, tiny_corpus, eval_config('smoke', n_samples=8, batch_size=4, steps=2, device='cpu', seed=5, metrics=('fd',)))
    assert m3['fd_effnet'] != pytest.approx(m1['fd_effnet'], rel=1e-6)
    assert list(Path(tiny_corpus, 'cache').glob('effnet_eval_r16_*.npy'))   # real statistics cached per corpus/resolution
