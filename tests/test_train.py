"Tests of alchemist.train: budgets, exact resume after a kill, NaN stop with an intact checkpoint, and bad input."
import math, re, pytest, torch

from alchemist.core import config_from_dict
from alchemist.train import TrainConfig, fit, train, total_steps, load_trained, load_checkpoint, NonFiniteLoss, BatchOrder
from alchemist.data import write_subset, CorpusError
from alchemist.toy import toy_corpus

torch.set_num_threads(1)
N = 10


@pytest.fixture(scope='module')
def data():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (N, 16, 16, 3), generator=g, dtype=torch.uint8)
    toks = torch.randn(N, 6, 384, generator=g).half(); mask = torch.zeros(N, 6, dtype=torch.bool); mask[:, :4] = True
    return imgs, toks, mask, [f'u{i}' for i in range(N)]


def cfg(**kw):
    return config_from_dict(TrainConfig, dict(dict(model=dict(resolution=16), epochs=2, batch_size=4, ckpt_every=3, warmup_steps=2, device='cpu'), **kw))


def test_budgets():
    assert total_steps(cfg(epochs=3), 100) == 75 and total_steps(cfg(epochs=3), 50) == 38
    assert total_steps(cfg(budget='steps', steps=11), 50) == 11
    assert total_steps(cfg(budget='steps', epochs=3, reference_size=100), 50) == 75
    with pytest.raises(ValueError, match='reference_size'): total_steps(cfg(budget='steps'), 50)
    with pytest.raises(ValueError, match='budget'): fit(cfg(budget='flops'), *[None] * 4, run_dir='/tmp/none')


def test_batch_order_covers_each_epoch():
    bo = BatchOrder(7, 3, seed=5)
    s = torch.cat([bo(i) for i in range(7)])        # 21 draws = 3 epochs
    for e in range(3): assert sorted(s[7 * e:7 * e + 7].tolist()) == list(range(7))


def test_exact_resume(data, tmp_path):
    c = cfg()                                        # 5 steps, checkpoints at 3 and 5
    a = fit(c, *data, tmp_path/'a')
    fit(c, *data, tmp_path/'b', stop_at=3)
    assert load_checkpoint(tmp_path/'b')['step'] == 3
    b = fit(c, *data, tmp_path/'b')
    assert a['steps'] == b['steps'] == 5 and b['resumed_from'] == 3
    ca, cb = load_checkpoint(tmp_path/'a'), load_checkpoint(tmp_path/'b')
    for k, v in ca['model'].items(): assert torch.equal(v, cb['model'][k]), k
    for k, v in ca['ema']['shadow'].items(): assert torch.equal(v, cb['ema']['shadow'][k]), k
    assert ca['history'] == cb['history']
    assert (tmp_path/'a'/'loss.csv').exists() and (tmp_path/'a'/'loss.png').stat().st_size > 1000
    m = load_trained(tmp_path/'a')
    assert not m.training and m.cfg.resolution == 16


def test_nan_stops_and_keeps_checkpoint(data, tmp_path):
    with pytest.raises(NonFiniteLoss) as e:
        fit(cfg(lr=1e30, warmup_steps=0, grad_clip=0, ckpt_every=1), *data, tmp_path/'n')
    msg = str(e.value)
    step = int(re.search(r'at step (\d+)', msg).group(1))
    assert re.search(r"batch uids \['u\d+'", msg)
    ck = load_checkpoint(tmp_path/'n')
    assert ck['step'] == step and all(math.isfinite(h[1]) for h in ck['history'])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint'): load_trained(tmp_path)


def test_train_on_corpus_subset(tmp_path):
    man = toy_corpus(tmp_path/'c', n=20, resolution=16)
    tr = man[man.split == 'train'].uid.tolist()
    write_subset(tmp_path/'s.json', tr[:4])
    base = dict(corpus_dir=str(tmp_path/'c'), model=dict(resolution=16), epochs=2, batch_size=4, device='cpu')
    r = train(dict(base, subset=str(tmp_path/'s.json'), out_dir=str(tmp_path/'r')))
    assert r['n_train'] == 4 and r['steps'] == 2
    write_subset(tmp_path/'bad.json', [tr[0], 'ghost'])
    with pytest.raises(CorpusError, match='ghost'): train(dict(base, subset=str(tmp_path/'bad.json'), out_dir=str(tmp_path/'x')))
    (tmp_path/'empty.json').write_text('{"uids": []}')
    with pytest.raises(CorpusError, match='empty'): train(dict(base, subset=str(tmp_path/'empty.json'), out_dir=str(tmp_path/'x')))
