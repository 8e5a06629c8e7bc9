"Tests of alchemist.bilevel: the unrolled meta-gradient is exact, the alignment weights are what they claim, resume is exact."
import copy
import numpy as np, pytest, torch
from alchemist.core import ConfigError, config_from_dict
from alchemist.bilevel import (MODES, LossModule, MetaConfig, MetaState, TinyT2I, alignment_weights, lam_at, make_batch,
                               meta_gradient_fd_check, meta_train, toy_meta_splits, unrolled_outer_loss)
from alchemist.rater import Rater, RaterConfig, load_rater
from alchemist.data import images_to_tensor


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


# --- a rater that learns (issue 17): new options, off by default ---
import dataclasses, json, math
from alchemist.bilevel import (LEARNING, TIMESTEPS, attach_image_features, auroc, learning_config, null_text, outer_loss,
                               proxy_conditioning, reset_due, score_split, warm_key, warm_proxy, warm_stages, warm_train_config, _loss)
from alchemist.rater import rater_inputs

UNET8 = dict(proxy='unet', resolution=8, proxy_kwargs=dict(channels=(8, 16)), batch=8, rater=dict(width=8, depth=1))


def test_new_options_default_off_and_validated():
    c = MetaConfig()
    assert (c.meta_steps, c.warm_steps, c.population, c.reset_every, c.probe_n, c.stop_spearman) == (0, 0, 1, 0, 0, 0.0)
    assert (c.timesteps, c.outer, c.align_normalize, c.rater.inputs) == ('shared', 'loss', False, 'pixels+pooled')
    for bad, msg in [(dict(outer='conditional'), "'unrolled'/'alignment' option"), (dict(mode='unrolled', align_normalize=True), "'alignment' option"),
                     (dict(proxy='tiny', warm_steps=5), 'alchemist.t2i proxy'), (dict(stop_spearman=0.9), 'probe_n >= 3'),
                     (dict(population=0), 'population'), (dict(population=2, reference_model='warmup'), 'one-proxy'),
                     (dict(timesteps='fixed'), 'timesteps'), (dict(warm_on='eval'), 'warm_on'), (dict(meta_steps=-1), 'meta_steps'),
                     (dict(warm_stagger=2.0), 'warm_stagger')]:
        with pytest.raises(ConfigError, match=msg): MetaConfig(**bad)
    lc = learning_config('alignment')
    assert lc.population >= 4 and lc.meta_steps >= 1000 and lc.warm_steps > 0 and lc.outer == 'conditional' and lc.align_normalize
    assert learning_config('penalty').outer == 'loss' and set(LEARNING) <= set(dataclasses.asdict(lc))


def test_default_history_rows_are_todays(toy, tmp_path):
    h = meta_train(_cfg(tmp_path), splits=toy)['history']
    assert list(h[0]) == ['epoch', 'lam', 'steps', 'seconds', 'l_val', 'l_train', 'loss_proxy', 'loss_rater', 'w_std', 'group']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.pt', 'history.json', 'rater.pt', 'rater_epoch0.pt', 'rater_epoch1.pt', 'run.json']


def test_stratified_timesteps_shared_by_inner_and_outer_batches(toy):
    b1 = make_batch(toy['train'], np.arange(4), torch.Generator().manual_seed(3), 1000, 'stratified', strata=4)
    b2 = make_batch(toy['heldout'], np.arange(3), torch.Generator().manual_seed(3), 1000, 'stratified', strata=4)
    assert b1.t.shape == (4, 4) and (b1.t[0] // 250).tolist() == [0, 1, 2, 3]
    assert torch.equal(b1.t[0], b2.t[0]) and torch.equal(b1.noise[0], b2.noise[0]) and torch.equal(b1.noise[0], b1.noise[3])
    P = TinyT2I(8, width=4); lm = LossModule(P)
    want = torch.stack([P.per_sample_loss(b1.x, b1.tokens, b1.mask, b1.t[:, k], b1.noise[:, k]) for k in range(4)], 1).mean(1)
    assert torch.allclose(lm(b1.x, b1.tokens, b1.mask, b1.t, b1.noise), want, atol=1e-6)
    assert TIMESTEPS == ('shared', 'random', 'stratified')


def test_cosine_alignment_and_conditional_outer(toy):
    P = TinyT2I(8, width=4); lm = LossModule(P)
    gen = torch.Generator().manual_seed(2)
    bt = make_batch(toy['train'], np.arange(5), gen, 1000, 'random'); bv = make_batch(toy['heldout'], np.arange(5), gen, 1000, 'random')
    p, b = dict(lm.named_parameters()), dict(lm.named_buffers())
    a, *_ = alignment_weights(lm, p, b, bt, bv, chunk=2)
    c, _, G, gv, _, _ = alignment_weights(lm, p, b, bt, bv, chunk=2, normalize=True)
    gn = torch.sqrt(sum(G[k].flatten(1).pow(2).sum(1) for k in G)); vn = torch.sqrt(sum(v.pow(2).sum() for v in gv.values()))
    assert torch.allclose(c, a / (gn * vn), atol=1e-6) and (c.abs() <= 1 + 1e-6).all()
    pb = {**p, **b}
    lc, lu = _loss(lm, pb, bv), _loss(lm, pb, null_text(bv))
    assert torch.allclose(outer_loss(lm, pb, bv, 0.5), (lc + 0.5 * (lc - lu)).mean()) and torch.allclose(outer_loss(lm, pb, bv), lc.mean())


@pytest.mark.parametrize('mode', MODES)
def test_population_of_identical_proxies_moves_the_rater_like_one(mode, toy):
    kw = dict(mode=mode, proxy='tiny', resolution=8, batch=6, lr=3e-3, rater_lr=3e-3)
    torch.manual_seed(0); R1, P0 = Rater(RaterConfig(resolution=8, width=8, depth=1)), TinyT2I(8, width=4)
    R2 = copy.deepcopy(R1)
    gen = torch.Generator().manual_seed(0)
    bv, bt = make_batch(toy['heldout'], np.arange(6), gen, 1000), make_batch(toy['train'], np.arange(6), gen, 1000)
    MetaState(config_from_dict(MetaConfig, kw), copy.deepcopy(P0), R1).step(bv, [bt], 0.5)
    MetaState(config_from_dict(MetaConfig, dict(kw, population=2)), [copy.deepcopy(P0), copy.deepcopy(P0)], R2).population_step([(bv, [bt])] * 2, 0.5)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(R1.parameters(), R2.parameters()))


def test_resets_are_staggered():
    assert [reset_due(g, 1, 2, 2) for g in range(5)] == [False, True, False, True, False]
    due = {p: [g for g in range(1, 17) if reset_due(g, p, 4, 8)] for p in range(4)}
    assert due == {0: [8, 16], 1: [6, 14], 2: [4, 12], 3: [2, 10]}
    assert warm_stages(MetaConfig(population=4, warm_steps=1200)) == [600, 800, 1000, 1200] and warm_stages(MetaConfig(warm_steps=7)) == [7]


def test_meta_steps_budget_and_extending_it(toy, tmp_path):
    a = meta_train(_cfg(tmp_path/'a', meta_steps=5, log_every=2), splits=toy)
    assert [h['steps'] for h in a['history']] == [2, 2, 1] and [h['step'] for h in a['history']] == [2, 4, 5]
    assert (a['run_dir']/'rater_step000004.pt').exists()
    meta_train(_cfg(tmp_path/'b', meta_steps=3, log_every=2), splits=toy)
    b = meta_train(_cfg(tmp_path/'b', meta_steps=5, log_every=2), splits=toy)
    assert sum(h['steps'] for h in b['history']) == 5
    ra, rb = load_rater(a['rater_checkpoint']), load_rater(b['rater_checkpoint'])
    assert all(torch.equal(x, y) for x, y in zip(ra.state_dict().values(), rb.state_dict().values()))


@pytest.mark.parametrize('mode', MODES)
def test_every_mode_runs_the_same_budget_with_every_option(mode, toy, tmp_path):
    extra = dict(outer='conditional', align_normalize=mode == 'alignment') if mode != 'penalty' else dict(rater_signal='centered')
    cfg = _cfg(tmp_path, mode=mode, meta_steps=3, log_every=1, population=2, reset_every=2, timesteps='stratified', strata=2, probe_n=16,
               rater=dict(width=8, depth=1, frozen_width=4, **rater_inputs('randconv+tokens')), **extra)
    res = meta_train(cfg, splits=toy)
    h = res['history']
    assert [x['steps'] for x in h] == [1, 1, 1] and [x['resets'] for x in h] == [0, 1, 1] and h[0]['rank_spearman'] is None
    assert all(math.isfinite(x['l_val']) for x in h) and (res['run_dir']/'rank_stability.png').exists()
    assert load_rater(res['rater_checkpoint']).cfg.inputs == 'randconv+tokens'


def test_rank_stability_stops_the_run(toy, tmp_path):
    cfg = _cfg(tmp_path, rater_lr=0.0, meta_steps=20, log_every=1, probe_n=24, stop_spearman=0.99, stop_patience=2)
    res = meta_train(cfg, splits=toy)
    assert res['stopped_at'] == 3 and [h['rank_spearman'] for h in res['history']] == [None, 1.0, 1.0]
    assert json.loads((res['run_dir']/'history.json').read_text())[-1]['stopped'] is True
    assert len(meta_train(dataclasses.replace(cfg, meta_steps=40), splits=toy)['history']) == 3   # a stopped run stays stopped


def test_score_split_protocols(toy):
    torch.manual_seed(0); r = Rater(RaterConfig(resolution=8, width=8, depth=1))
    tr = toy['train']; from alchemist.data import images_to_tensor
    x = images_to_tensor(tr.images[:16])
    with torch.no_grad():
        s, g = r.heads(r.features(x[:8], tr.pooled[:8])); h = r.features(x, tr.pooled[:16])
    assert np.allclose(score_split(r, tr, batch_size=8, rows=np.arange(16))[:8], (torch.softmax(s, 0) * 8 * g).numpy(), atol=1e-5)
    assert np.allclose(score_split(r, tr, 8, 'independent', np.arange(16)), r.score(x, tr.pooled[:16], group_stats=(h.mean(0), h.var(0, unbiased=False))).numpy(), atol=1e-5)
    assert auroc([2, 3], [1]) == 1.0 and auroc([1], [1]) == 0.5


def test_frozen_features_attach_once(toy, tmp_path):
    rc = RaterConfig(resolution=8, width=8, depth=1, image_input='randconv', frozen_width=4)
    sp = attach_image_features(toy, rc, cache_dir=tmp_path)
    assert sp['train'].image_features.shape == (len(toy['train']), 12) and len(list(tmp_path.glob('rater_randconv4s0_*.pt'))) == 2
    assert attach_image_features(sp, rc)['train'] is sp['train'] and attach_image_features(toy, RaterConfig())['train'] is toy['train']


def test_warm_proxy_is_measured_cached_and_used(toy, tmp_path):
    wc = config_from_dict(MetaConfig, dict(UNET8, warm_steps=8, warm_batch=16, warm_lr=3e-3, warm_probe=12, warm_dir=str(tmp_path/'warm'),
                                           population=2, reset_every=2, meta_steps=2, log_every=1, lr=1e-3, out_dir=str(tmp_path/'run')))
    w = warm_proxy(wc, toy)
    rep = w['report']
    assert not w['cached'] and rep['fit']['steps'] == 8 and rep['stages'] == [4, 8] and len(w['stages']) == 2
    for when in ('before', 'after'):
        for split in ('reference', 'pool'):
            r = rep[when][split]; assert r['n'] >= 2 and 0 <= r['gain_auroc'] <= 1 and math.isclose(r['gain_own'], r['loss_uncond'] - r['loss'], rel_tol=1e-6)
    assert rep['after']['reference']['loss'] < rep['before']['reference']['loss']
    w2 = warm_proxy(wc, toy)
    assert w2['cached'] and w2['key'] == w['key'] and all(torch.equal(w2['stages'][1][k], v) for k, v in w['stages'][1].items())
    tc = warm_train_config(wc, len(toy['heldout']))
    other = copy.deepcopy(toy); other['heldout'].images[0, 0, 0] ^= 1
    assert len({warm_key(wc, tc, toy), warm_key(wc, tc, other), warm_key(dataclasses.replace(wc, warm_on='pool'), tc, toy)}) == 3
    res = meta_train(wc, splits=toy)
    assert res['warm']['key'] == w['key'] and [h["resets"] for h in res["history"]] == [0, 1]
    ck = torch.load(res['run_dir']/'checkpoint.pt', weights_only=False)
    assert len(ck['state']['population']) == 1


def test_mean_update_averages_steps_not_gradients():
    "Adam's first step is ~lr x sign(g): opposite members cancel under 'updates'; the step on their mean gradient does not."
    from alchemist.bilevel import mean_update
    w = torch.zeros(2, requires_grad=True)
    opt = lambda: torch.optim.AdamW([w], lr=0.1, weight_decay=0.0)
    mean_update([w], [[torch.tensor([1.0, 1.0])], [torch.tensor([-3.0, 2.0])]], [opt(), opt()])
    assert torch.allclose(w.detach(), torch.tensor([0.0, -0.1]), atol=1e-5)
    with pytest.raises(ValueError, match='2 gradient lists for 1 optimisers'): mean_update([w], [[None], [None]], [opt()])
    with pytest.raises(ConfigError, match='meta_average'): MetaConfig(meta_average='mean')
    assert LEARNING['meta_average'] == 'updates' and MetaConfig().meta_average == 'grads'


@pytest.mark.parametrize('mode', MODES)
def test_updates_average_of_one_member_per_member(mode, toy):
    "Identical members give identical steps: 'updates' moves the rater as one proxy does; distinct members move it differently from 'grads'."
    kw = dict(mode=mode, proxy='tiny', resolution=8, batch=6, lr=3e-3, rater_lr=3e-3)
    torch.manual_seed(0); R, P0 = Rater(RaterConfig(resolution=8, width=8, depth=1)), TinyT2I(8, width=4)
    gen = torch.Generator().manual_seed(0)
    bv, bt, bt2 = (make_batch(toy[s], np.arange(6) + o, gen, 1000) for s, o in (('heldout', 0), ('train', 0), ('train', 6)))
    def moved(average, batches):
        r = copy.deepcopy(R)
        st = MetaState(config_from_dict(MetaConfig, dict(kw, population=2, meta_average=average)), [copy.deepcopy(P0), copy.deepcopy(P0)], r)
        st.population_step(batches, 0.5); return torch.cat([p.detach().flatten() for p in r.parameters()]), st
    one = copy.deepcopy(R); MetaState(config_from_dict(MetaConfig, kw), copy.deepcopy(P0), one).step(bv, [bt], 0.5)
    same, st = moved('updates', [(bv, [bt])] * 2)
    assert torch.allclose(same, torch.cat([p.detach().flatten() for p in one.parameters()]), atol=1e-6)
    assert len(st.state_dict()['opt_r_population']) == 1
    d_up, _ = moved('updates', [(bv, [bt]), (bv, [bt2])]); d_gr, _ = moved('grads', [(bv, [bt]), (bv, [bt2])])
    assert not torch.allclose(d_up, d_gr, atol=1e-7)


def test_updates_population_resumes_exactly(toy, tmp_path):
    kw = dict(meta_steps=4, log_every=2, population=2, reset_every=2, meta_average='updates')
    a = meta_train(_cfg(tmp_path/'a', **kw), splits=toy)
    meta_train(_cfg(tmp_path/'b', **dict(kw, meta_steps=2)), splits=toy)
    b = meta_train(_cfg(tmp_path/'b', **kw), splits=toy)
    ra, rb = load_rater(a['rater_checkpoint']), load_rater(b['rater_checkpoint'])
    assert all(torch.equal(x, y) for x, y in zip(ra.state_dict().values(), rb.state_dict().values()))
    with pytest.raises(ConfigError, match=r"differs in \['meta_average'\]"): meta_train(_cfg(tmp_path/'b', **dict(kw, meta_average='grads')), splits=toy)


def test_proxy_signals_are_what_they_claim(toy):
    from alchemist.bilevel import proxy_signals, _fixed_timesteps
    torch.manual_seed(0); P = TinyT2I(8, width=4); lm = LossModule(P)
    sig = proxy_signals(P, toy['train'], toy['heldout'], n_timesteps=3, n_ref=8, chunk=5)
    assert {k: v.shape for k, v in sig.items()} == {k: (len(toy['train']),) for k in ('alignment', 'gain', 'low_loss')}
    t, n = _fixed_timesteps(P, 3, 0, (3, 8, 8), 'cpu')
    def loss(sp, r, null=False):
        ti = torch.as_tensor(r); tok, m = sp.tokens[ti], sp.mask[ti]
        if null: tok, m = torch.zeros_like(tok), torch.ones_like(m)
        return lm(images_to_tensor(sp.images[r]), tok, m, t.expand(len(r), 3), n.expand(len(r), *n.shape))
    ref = np.sort(np.random.default_rng([0, 6]).choice(len(toy['heldout']), 8, replace=False))
    gr = torch.autograd.grad(loss(toy['heldout'], ref).mean(), list(P.parameters()))
    for i in (0, 7):
        gi = torch.autograd.grad(loss(toy['train'], [i]).sum(), list(P.parameters()))
        cos = sum((a * b).sum() for a, b in zip(gi, gr)) / torch.sqrt(sum(a.pow(2).sum() for a in gi) * sum(b.pow(2).sum() for b in gr))
        assert abs(sig['alignment'][i] - float(cos)) < 1e-4
        with torch.no_grad():
            assert abs(sig['gain'][i] - float(loss(toy['train'], [i], True) - loss(toy['train'], [i]))) < 1e-5


def test_warm_proxy_rebuilds_on_a_changed_setting_or_a_lost_record(toy, tmp_path):
    wc = config_from_dict(MetaConfig, dict(UNET8, warm_steps=4, warm_batch=16, warm_lr=3e-3, warm_probe=8, warm_dir=str(tmp_path)))
    w = warm_proxy(wc, toy)
    w2 = warm_proxy(dataclasses.replace(wc, warm_lr=1e-3), toy)
    assert not w2['cached'] and w2['dir'] != w['dir'] and len(list(tmp_path.iterdir())) == 2
    (w['dir']/'warm.json').unlink()                        # a warm-up killed before its record: trained again, same weights
    w3 = warm_proxy(wc, toy)
    assert not w3['cached'] and w3['dir'] == w['dir'] and all(torch.equal(w3['stages'][0][k], v) for k, v in w['stages'][0].items())
    assert warm_proxy(wc, toy)['cached']


def test_ref_batch_and_rank_distill(toy, tmp_path):
    "ref_batch enlarges the held-out batch of every meta-step (fewer steps a pass); align_distill='rank' trains the rater on the batch's alignment ranks."
    from alchemist.bilevel import batch_percentile, step_batches
    cfg = _cfg(tmp_path, mode='alignment', ref_batch=12)   # the toy's held-out split: 24 rows, so 2 steps a pass
    perm = np.random.default_rng(0).permutation(len(toy['heldout']))
    bv, bts = step_batches(cfg, toy['train'], toy['heldout'], 3, 0, perm, 2, 1, 1000, 'cpu')
    assert len(bv.x) == 12 and len(bts[0].x) == 8 and torch.equal(bv.x, make_batch(toy['heldout'], perm[12:24], torch.Generator(), 1000).x)
    with pytest.raises(ConfigError, match='ref_batch'): MetaConfig(ref_batch=-1)
    with pytest.raises(ConfigError, match="'rank'"): MetaConfig(align_distill='ranks')
    with pytest.raises(ValueError, match='ref_batch=999'): meta_train(_cfg(tmp_path/'big', ref_batch=999), splits=toy)
    h = meta_train(_cfg(tmp_path/'r', mode='alignment', ref_batch=16, align_distill='rank', meta_steps=3, log_every=3), splits=toy)['history']
    assert h[0]['steps'] == 3 and math.isfinite(h[0]['loss_rater']) and h[0]['loss_rater'] > 0.1   # BCE against ranks: never ~0
    p = batch_percentile(torch.tensor([5.0, 1.0, 3.0]))
    assert torch.equal(p, torch.tensor([1.0, 0.0, 0.5]))
