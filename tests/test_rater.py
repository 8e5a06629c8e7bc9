"Tests of alchemist.rater: shapes, the softmax and group switches, batch-independent scores, checkpoints."
import pytest, torch
from alchemist.core import ConfigError, config_from_dict
from alchemist.rater import Rater, RaterConfig, RaterMismatchError, load_rater, save_rater


def _batch(b=6, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, res, res, generator=g)*2 - 1, torch.randn(b, 384, generator=g)


def _rater(**kw):
    torch.manual_seed(0)
    return Rater(RaterConfig(resolution=16, width=8, depth=2, **kw))


def test_shapes_and_ranges():
    x, t = _batch()
    o = _rater()(x, t)
    assert o.instance.shape == (6,) and o.weight.shape == (6,) and o.group.shape == () and o.feature.shape == (6, 8)
    assert ((o.instance > 0) & (o.instance < 1)).all() and 0 < float(o.group.detach()) < 1
    assert torch.isclose(o.weight.sum(), o.group, atol=1e-6)


def test_softmax_switch_changes_weights():
    x, t = _batch()
    a, b = _rater(), _rater(train_softmax=False)
    b.load_state_dict(a.state_dict())
    oa, ob = a(x, t), b(x, t)
    assert torch.allclose(ob.weight, ob.instance * ob.group)
    assert torch.allclose(oa.weight, torch.softmax(oa.instance, 0) * oa.group)
    assert not torch.allclose(oa.weight, ob.weight)
    sharp = _rater(softmax_temperature=0.05); sharp.load_state_dict(a.state_dict())
    assert sharp(x, t).weight.std() > oa.weight.std()       # lower temperature, less uniform


def test_group_switch():
    x, t = _batch()
    r = _rater(group_mlp=False)
    assert r.group_mlp is None and float(r(x, t).group) == 1.0
    assert not any('group_mlp' in k for k in r.state_dict())


def test_group_gets_gradient_and_batch_stats():
    x, t = _batch()
    r = _rater()
    r(x, t).weight.sum().backward()
    assert r.group_mlp[0].weight.grad.abs().sum() > 0
    h = r.features(x, t); gs = (h.mean(0), h.var(0, unbiased=False))
    assert torch.allclose(r.score(x[:3], t[:3], group_stats=gs), r.score(x, t)[:3], atol=1e-6)


def test_bad_inputs():
    x, t = _batch()
    r = _rater()
    with pytest.raises(ValueError, match=r'\[B,3,16,16\]'): r(torch.rand(2, 3, 32, 32), t[:2])
    with pytest.raises(ValueError, match='text_pooled'): r(x, t[:, :10])
    with pytest.raises(ConfigError, match='width'): config_from_dict(RaterConfig, {'widht': 3})


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    x, t = _batch()
    r = _rater()
    p = save_rater(r, tmp_path/'r.pt', corpus=dict(name='synthetic', resolution=16))
    r2 = load_rater(p, corpus='synthetic', resolution=16)
    assert torch.allclose(r2.score(x, t), r.score(x, t))
    with pytest.raises(RaterMismatchError, match="'synthetic', not 'web'"): load_rater(p, corpus='web')
    with pytest.raises(RaterMismatchError, match='16 px, not 32 px'): load_rater(p, resolution=32)
    (tmp_path/'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(Exception): load_rater(tmp_path/'junk.pt')


# --- what the rater reads (issue 17 item 4) ---
from alchemist.rater import IMAGE_INPUTS, TEXT_INPUTS, frozen_dim, frozen_image_features, rater_inputs


def test_default_rater_is_todays():
    "New options default off: the default rater has exactly today's modules (same weights for the same seed)."
    keys = set(_rater().state_dict())
    assert not any(k.startswith(('token_query', 'randconv', 'image_proj', 'text_proj', 'fuse')) for k in keys)
    assert {k.split('.')[0] for k in keys} == {'stem', 'stages', 'instance_mlp', 'group_mlp'}
    assert RaterConfig().inputs == 'pixels+pooled'


@pytest.mark.parametrize('image', IMAGE_INPUTS)
@pytest.mark.parametrize('text', TEXT_INPUTS)
def test_every_input_variant_trains(image, text):
    x, t = _batch()
    tok, m = torch.randn(6, 5, 384), torch.ones(6, 5, dtype=torch.bool)
    r = _rater(image_input=image, text_input=text, effnet_size=32, frozen_width=4)
    o = r(x, t, tokens=tok, mask=m)
    assert o.instance.shape == (6,) and o.feature.shape == (6, 8)
    o.weight.sum().backward()
    assert all(p.grad is not None for p in r.parameters())
    assert not any('randconv' in n for n, _ in r.named_parameters())       # a frozen net is never trained


def test_token_pool_and_errors():
    x, t = _batch()
    tok, m = torch.randn(6, 5, 384), torch.tensor([[True, True, False, False, False]] * 6)
    r = _rater(text_input='tokens')
    assert torch.allclose(r.text_vector(t, tok, m), tok[:, :2].mean(1), atol=1e-6)   # the query starts at 0: a masked mean
    with pytest.raises(ValueError, match='pass the caption `tokens`'): r(x, t)
    with pytest.raises(ConfigError, match='image_input'): RaterConfig(image_input='vq')
    with pytest.raises(ConfigError, match="'<image>\\+<text>'"): rater_inputs('pixels')
    assert rater_inputs('randconv+tokens') == dict(image_input='randconv', text_input='tokens')


def test_precomputed_frozen_features_match(tmp_path):
    x, t = _batch()
    for image in ('randconv', 'effnet'):
        r = _rater(image_input=image, effnet_size=32, frozen_width=4)
        f = frozen_image_features(x, r.cfg)
        assert f.shape == (6, frozen_dim(r.cfg))
        assert torch.allclose(r.score(x, t, image_features=f), r.score(x, t), atol=1e-4)
        r2 = load_rater(save_rater(r, tmp_path/f'{image}.pt', corpus=dict(name='toy', resolution=16)))
        assert r2.cfg.image_input == image and torch.allclose(r2.score(x, t, image_features=f), r.score(x, t, image_features=f))
    assert frozen_image_features(x, RaterConfig()) is None
