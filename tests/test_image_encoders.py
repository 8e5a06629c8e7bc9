"EfficientNet-Lite0 features (offline weights) and the CLIP-like image tower: formats, errors, learning, caching."
import numpy as np
import pytest
import torch

from alchemist.image_encoders import (EFFNET_DIM, ClipLike, ClipLikeConfig, as_float_images, build_image_tower, effnet_features,
                                      load_effnet, retrieval_accuracy, train_clip_like)
from alchemist.toy import toy_pairs, toy_text_batch


def test_as_float_images_forms_and_errors():
    u8 = np.full((2, 8, 8, 3), 255, np.uint8)
    assert torch.allclose(as_float_images(u8), torch.ones(2, 3, 8, 8))
    assert torch.allclose(as_float_images(-torch.ones(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match='4-d'): as_float_images(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match='NaN'): as_float_images(torch.full((1, 3, 4, 4), float('nan')))
    with pytest.raises(ValueError, match='empty'): as_float_images([])


def test_effnet_loads_offline_and_is_deterministic():
    net = load_effnet('cpu')
    assert not net.training and sum(p.numel() for p in net.parameters()) > 3e6   # ImageNet weights, not an empty shell
    x, _ = toy_pairs(6, 16)
    f1, f2 = effnet_features(x, image_size=64), effnet_features(x, image_size=64)
    assert f1.shape == (6, EFFNET_DIM) and np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    # different images give different features (the net is not blind to its input)
    assert np.abs(f1[0] - f1[1]).mean() > 1e-3


def test_retrieval_accuracy_counts_distinct_captions():
    e = torch.eye(3)
    r = retrieval_accuracy(e[[0, 0, 1, 2]], e[[0, 0, 1, 2]], captions=['a', 'a', 'b', 'c'], ks=(1, 2))
    assert (r['n_captions'], r['top1'], r['chance_top1'], r['chance_top2']) == (3, 1.0, 1 / 3, 2 / 3)
    assert retrieval_accuracy(e, e[[1, 2, 0]])['top1'] == 0.0
    with pytest.raises(ValueError, match='3 image embeddings but 2'): retrieval_accuracy(e, e[:2])


def test_clip_like_learns_toy_pairs(tmp_path):
    x, caps = toy_pairs(240, 16)
    t = toy_text_batch(caps).pooled                      # stands in for MiniLM; keeps the test fast
    cfg = ClipLikeConfig(width=32, layers=1, steps=60, batch_size=32, lr=3e-3, warmup=5, holdout_frac=0.25, device='cpu')
    m = train_clip_like(x, t, caps, cfg=cfg)
    assert m.metrics['loss_last'] < m.metrics['loss_first']
    assert m.metrics['top1'] > 2 * m.metrics['chance_top1'], m.metrics
    ho = np.arange(0, 240, 4); sh = np.roll(ho, 7)      # a spread of pairs, each against the caption of another pair ...
    colour = np.array([c.split()[1] for c in caps]); other = colour[ho] != colour[sh]   # ... that names another colour
    matched = m.score(x[ho[other]], t[ho[other]]).mean()
    shuffled = m.score(x[ho[other]], t[sh[other]]).mean()
    assert matched > shuffled + 0.05, (matched, shuffled)
    # save / load round trip keeps the scores
    m2 = ClipLike.load(m.save(tmp_path/'c.pt'))
    torch.testing.assert_close(m.score(x[:8], t[:8]), m2.score(x[:8], t[:8]))


def test_clip_like_bad_inputs():
    x, caps = toy_pairs(12, 16)
    with pytest.raises(ValueError, match='12 images but 11'): train_clip_like(x, toy_text_batch(caps).pooled[:11])
    with pytest.raises(ValueError, match='does not divide'): build_image_tower(30, ClipLikeConfig(patch_size=4))
    with pytest.raises(FileNotFoundError, match='no CLIP-like model'): ClipLike.load('/nonexistent/c.pt')
