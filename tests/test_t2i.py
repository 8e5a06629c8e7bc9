"Tests of alchemist.t2i: the per-sample loss API, the stratified loss, sampling, and second-order gradients through functional_call."
import dataclasses, pytest, torch
from torch.func import functional_call

from alchemist.t2i import T2IConfig, build_t2i, use_math_attention

torch.set_num_threads(1)
B, L = 3, 5


@pytest.fixture(scope='module', params=['unet', 'pixart'])
def model(request):
    return build_t2i(dict(family=request.param, size='s', resolution=16), seed=0)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(B, 3, 16, 16, generator=g) * 2 - 1
    tok = torch.randn(B, L, 384, generator=g); mask = torch.ones(B, L, dtype=torch.bool); mask[0, 3:] = False
    return x0, tok, mask


def test_per_sample_loss_shape_and_repeatable(model, batch):
    model.eval()
    a = model.per_sample_loss(*batch, generator=torch.Generator().manual_seed(1))
    b = model.per_sample_loss(*batch, generator=torch.Generator().manual_seed(1))
    assert a.shape == (B,) and torch.isfinite(a).all() and torch.equal(a, b)
    c = model.per_sample_loss(*batch, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, c)


def test_explicit_timesteps_and_noise(model, batch):
    model.eval()
    x0, tok, mask = batch
    t = torch.tensor([10, 500, 990]); n = torch.randn_like(x0)
    a = model.per_sample_loss(x0, tok, mask, timesteps=t, noise=n)
    b = torch.cat([model.per_sample_loss(x0[i:i + 1], tok[i:i + 1], mask[i:i + 1], timesteps=t[i:i + 1], noise=n[i:i + 1]) for i in range(B)])
    assert torch.allclose(a, b, atol=1e-5)      # no reduction across the batch: each sample's loss is its own


def test_stratified_loss_comparable(model, batch):
    x0, tok, mask = batch
    s = model.stratified_loss(x0, tok, mask, n_timesteps=4, seed=0)
    assert s.shape == (B,)
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(model.stratified_loss(x0[perm], tok[perm], mask[perm], n_timesteps=4, seed=0), s[perm], atol=1e-5)
    assert torch.allclose(model.stratified_loss(x0[1:2], tok[1:2], mask[1:2], n_timesteps=4, seed=0), s[1:2], atol=1e-5)
    assert not torch.allclose(model.stratified_loss(x0, tok, mask, n_timesteps=4, seed=1), s)
    model.train()                                   # no caption dropout in the stratified loss, even in training mode
    assert torch.allclose(model.stratified_loss(x0, tok, mask, n_timesteps=4, seed=0), s, atol=1e-5)
    model.eval()


def test_caption_dropout_only_in_training(batch):
    m = build_t2i(dict(resolution=16, cfg_dropout=0.999), seed=0)
    x0, tok, mask = batch
    g = lambda: torch.Generator().manual_seed(3)
    m.train()
    assert torch.allclose(m.per_sample_loss(x0, tok, mask, generator=g()), m.per_sample_loss(x0, -tok, mask, generator=g()), atol=1e-5)
    m.eval()
    assert not torch.allclose(m.per_sample_loss(x0, tok, mask, generator=g()), m.per_sample_loss(x0, -tok, mask, generator=g()))


def test_sample_deterministic(model, batch):
    _, tok, mask = batch
    a = model.sample(tok, mask, steps=3, generator=torch.Generator().manual_seed(0))
    b = model.sample(tok, mask, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (B, 3, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1


def test_second_order_through_functional_call(model, batch):
    x0, tok, mask = batch
    params = dict(model.named_parameters())
    w = torch.full((B,), 1 / B, requires_grad=True)
    kw = dict(timesteps=torch.tensor([100, 400, 800]), noise=torch.randn_like(x0), drop_captions=False)
    with use_math_attention():
        inner = (w * functional_call(model, params, (x0, tok, mask), kw)).sum()
        gr = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        new = {k: p - 0.1 * g for (k, p), g in zip(params.items(), gr)}
        outer = functional_call(model, new, (x0, tok, mask), kw).mean()
        gw = torch.autograd.grad(outer, w)[0]
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_bad_config_and_inputs(batch):
    with pytest.raises(ValueError, match='family'): build_t2i(dict(family='dit'))
    with pytest.raises(ValueError, match='size'): build_t2i(dict(size='xl'))
    m = build_t2i(dict(resolution=16))
    x0, tok, mask = batch
    with pytest.raises(ValueError, match='tokens must be'): m.per_sample_loss(x0, tok[:, :, :10], mask)
    with pytest.raises(ValueError, match='mask must be'): m.per_sample_loss(x0, tok, mask[:, :2])


@pytest.mark.parametrize('size,lo,hi', [('s', 0.8e6, 1.6e6), ('m', 2.5e6, 5e6)])
def test_unet_sizes(size, lo, hi):
    assert lo < build_t2i(dict(size=size)).n_params() < hi
