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
