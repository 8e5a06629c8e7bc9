"Tests of alchemist.bilevel: the unrolled meta-gradient is exact, the alignment weights are what they claim, resume is exact."
import copy
import numpy as np, pytest, torch
from alchemist.core import ConfigError, config_from_dict
from alchemist.bilevel import (MODES, LossModule, MetaConfig, MetaState, TinyT2I, alignment_weights, lam_at, make_batch,
                               meta_gradient_fd_check, meta_train, toy_meta_splits, unrolled_outer_loss)
from alchemist.rater import Rater, RaterConfig, load_rater


@pytest.fixture(scope='module')
def toy(): return toy_meta_splits(96, 8, seed=0)

def _cfg(tmp_path, **kw):
    d = dict(proxy='tiny', resolution=8, batch=8, epochs=2, max_steps_per_epoch=2, lam_step=0.5, lr=3e-3, rater_lr=3e-3,
             out_dir=str(tmp_path), rater=dict(width=8, depth=1))
    d.update(kw); return config_from_dict(MetaConfig, d)


@pytest.mark.parametrize('k', [1, 2])
def test_unrolled_meta_gradient_matches_finite_differences(k):
    assert meta_gradient_fd_check(inner_steps=k, seed=k) < 1e-3


def test_fd_check_can_fail():
    "The check is sensitive: a wrong inner step size in the autograd path would be caught (the two differ)."
    torch.manual_seed(0)
    sp = toy_meta_splits(32, 8, seed=0, text_dim=16)
    P = TinyT2I(8, width=4, text_dim=16).double(); lm = LossModule(P)
    R = Rater(RaterConfig(resolution=8, width=4, depth=1, text_dim=16, hidden=8)).double()
    gen = torch.Generator().manual_seed(0)
    bt = make_batch(sp['train'], np.arange(8), gen, 1000, 'random', dtype=torch.float64)
    bv = make_batch(sp['heldout'], np.arange(8), gen, 1000, 'random', dtype=torch.float64)
    p, b = dict(lm.named_parameters()), dict(lm.named_buffers())
    g1 = torch.autograd.grad(unrolled_outer_loss(lm, p, b, R, [bt], bv, 0.5)[0], list(R.parameters()))
    g2 = torch.autograd.grad(unrolled_outer_loss(lm, p, b, R, [bt], bv, 0.25)[0], list(R.parameters()))
    assert not all(torch.allclose(a, c, rtol=1e-3) for a, c in zip(g1, g2))
    assert sum(float(g.abs().sum()) for g in g1) > 0               # the rater does receive a meta-gradient


def test_alignment_scores_are_gradient_dot_products(toy):
    P = TinyT2I(8, width=4); lm = LossModule(P)
    gen = torch.Generator().manual_seed(1)
    bt = make_batch(toy['train'], np.arange(5), gen, 1000, 'random'); bv = make_batch(toy['heldout'], np.arange(5), gen, 1000, 'random')
    a, w, G, gv, l, Lv = alignment_weights(lm, dict(lm.named_parameters()), dict(lm.named_buffers()), bt, bv, chunk=2)
    Lv2 = P.per_sample_loss(bv.x, bv.tokens, bv.mask, bv.t, bv.noise).mean()
    gv2 = torch.autograd.grad(Lv2, list(P.parameters()))
    for i in range(5):
        li = P.per_sample_loss(bt.x[i:i+1], bt.tokens[i:i+1], bt.mask[i:i+1], bt.t[i:i+1], bt.noise[i:i+1]).sum()
        gi = torch.autograd.grad(li, list(P.parameters()))
        assert torch.isclose(a[i], sum((x*y).sum() for x, y in zip(gi, gv2)), rtol=1e-4, atol=1e-7)
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and (w[a <= 0] == 0).all()


def test_lambda_schedule_and_config_errors():
    c = MetaConfig()
    assert [round(lam_at(c, e), 2) for e in (0, 1, 2)] == [1.0, 0.97, 0.94]
    assert (c.betas, c.lr, c.weight_decay, c.clip, c.batch) == ((0.9, 0.95), 1e-4, 0.05, 2.0, 64)
    with pytest.raises(ConfigError, match='mode'): MetaConfig(mode='x')
    with pytest.raises(ConfigError, match='rater_signal'): MetaConfig(rater_signal='x')
    with pytest.raises(ConfigError, match="inner_steps"): config_from_dict(MetaConfig, {'inner_step': 2})


@pytest.mark.parametrize('mode', MODES)
def test_each_mode_trains_and_moves_the_rater(mode, toy, tmp_path):
    cfg = _cfg(tmp_path, mode=mode)
    torch.manual_seed(cfg.seed); r0 = Rater(RaterConfig(resolution=8, width=8, depth=1))
    res = meta_train(cfg, splits=toy)
    assert len(res['history']) == 2 and all(np.isfinite(h['l_val']) for h in res['history'])
    r = load_rater(res['rater_checkpoint'], resolution=8)
    assert r.corpus['name'].startswith('toy') and r.meta['epoch'] == 1
    assert any(not torch.allclose(a, b) for a, b in zip(r0.state_dict().values(), r.state_dict().values()))


def test_resume_equals_uninterrupted(toy, tmp_path):
    a = meta_train(_cfg(tmp_path/'a', epochs=3), splits=toy)
    meta_train(_cfg(tmp_path/'b', epochs=1), splits=toy)              # "killed" after epoch 0
    b = meta_train(_cfg(tmp_path/'b', epochs=3), splits=toy)
    for (k, x), y in zip(torch.load(a['run_dir']/'checkpoint.pt', weights_only=False)['state']['proxy'].items(),
                         torch.load(b['run_dir']/'checkpoint.pt', weights_only=False)['state']['proxy'].values()):
        assert torch.equal(x, y), k
    ra, rb = load_rater(a['rater_checkpoint']), load_rater(b['rater_checkpoint'])
    assert all(torch.equal(x, y) for x, y in zip(ra.state_dict().values(), rb.state_dict().values()))
    assert [h['l_val'] for h in a['history']] == [h['l_val'] for h in b['history']]
    with pytest.raises(ConfigError, match=r"differs in \['seed'\]"): meta_train(_cfg(tmp_path/'b', epochs=3, seed=5), splits=toy)


def test_reference_model_variant(toy, tmp_path):
    res = meta_train(_cfg(tmp_path, reference_model='warmup', lam_step=0.0, lam0=0.5), splits=toy)
    ck = torch.load(res['run_dir']/'checkpoint.pt', weights_only=False)
    assert ck['state']['reference'] is not None


def test_nan_stops_with_clear_message(toy, tmp_path):
    bad = copy.deepcopy(toy); bad['heldout'].tokens[:] = float('nan')
    with pytest.raises(FloatingPointError, match='non-finite .* epoch 0 step 0'): meta_train(_cfg(tmp_path), splits=bad)


def test_bad_sizes(toy, tmp_path):
    with pytest.raises(ValueError, match='batch=64 is larger'): meta_train(_cfg(tmp_path, batch=64), splits=toy)
    with pytest.raises(ValueError, match='resolution=16'): meta_train(_cfg(tmp_path, resolution=16), splits=toy)


def test_centered_signal_removes_the_push_to_zero(toy, tmp_path):
    "Released signal: the rater loss mean(W*l) > 0 (every weight is pushed down); centered: its value is ~0."
    out = {}
    for sig in ('loss', 'centered'):
        cfg = _cfg(tmp_path/sig, rater_signal=sig)
        torch.manual_seed(0)
        st = MetaState(cfg, TinyT2I(8, width=4), Rater(RaterConfig(resolution=8, width=8, depth=1)))
        gen = torch.Generator().manual_seed(0)
        bv = make_batch(toy['heldout'], np.arange(8), gen, 1000); bt = make_batch(toy['train'], np.arange(8), gen, 1000)
        out[sig] = st.step(bv, [bt], 0.5)['loss_rater']
    assert out['loss'] > 0 and abs(out['centered']) < 0.1 * out['loss']
