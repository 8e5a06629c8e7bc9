"Tests of alchemist.select: the samplers are pure, deterministic per seed, draw from the documented law, and refuse bad input."
import numpy as np, pandas as pd, pytest

from alchemist import select as S
from alchemist.data import read_subset


@pytest.fixture
def scores():
    return np.random.default_rng(0).normal(size=2000)


@pytest.fixture
def df(scores):
    return pd.DataFrame(dict(uid=[f'u{i}' for i in range(len(scores))], score=scores, run_id='run-a'))


@pytest.mark.parametrize('method', sorted(S.SAMPLERS))
def test_exact_budget_distinct_deterministic(method, scores):
    f = S.SAMPLERS[method]
    a, b = f(scores, 400, np.random.default_rng(7)), f(scores, 400, np.random.default_rng(7))
    assert len(a) == 400 and len(np.unique(a)) == 400
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() < len(scores)


@pytest.mark.parametrize('method', ['random', 'gsample', 'shift_gsample'])
def test_seed_changes_stochastic_samplers(method, scores):
    f = S.SAMPLERS[method]
    assert not np.array_equal(f(scores, 400, np.random.default_rng(1)), f(scores, 400, np.random.default_rng(2)))


def test_pure_input_untouched(scores):
    before = scores.copy()
    for f in S.SAMPLERS.values(): f(scores, 100, np.random.default_rng(0))
    assert np.array_equal(before, scores)


def test_top_bottom_block_ranks(scores):
    r = S.percentile_ranks(scores)
    assert set(S.top_k(scores, 200)) == set(np.argsort(-scores)[:200])
    assert set(S.bottom_k(scores, 200)) == set(np.argsort(scores)[:200])
    blk = S.block(scores, 400, np.random.default_rng(0), start=20, width=20)   # the whole slice
    assert r[blk].min() >= 20 - 0.1 and r[blk].max() < 40 + 0.1


def test_shift_gsample_drops_top_and_centres(scores):
    r = S.percentile_ranks(scores)
    idx = S.shift_gsample(scores, 200, np.random.default_rng(0), n=25, mu=60, sigma=5)
    assert r[idx].min() >= 25
    assert abs(np.median(r[idx]) - 60) < 3
    # default n comes from the retention: 10% -> 25, 80% -> 15
    idx = S.shift_gsample(scores, 1600, np.random.default_rng(0))
    assert r[idx].min() >= 15 - 0.1 and (r[idx] < 16).any()


def test_successive_sampling_law():
    "Budget 1 from weights w: item i is drawn with probability w_i / sum(w) (chi-square style bound)."
    r = np.array([50., 55., 60., 70.])
    logw = S._gauss_logw(r, 53, 10, 't')
    p = np.exp(logw) / np.exp(logw).sum()
    rng = np.random.default_rng(0); n = 20000
    counts = np.bincount([S._gumbel_top_k(logw, 1, rng)[0] for _ in range(n)], minlength=4)
    assert np.all(np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n))


def test_select_and_write_selection(df, tmp_path):
    u = S.select('shift_gsample', df, 0.1, seed=5, sigma=7.0)
    assert len(u) == 200 and u == S.select('shift_gsample', df.sample(frac=1, random_state=0).sort_index(), 0.1, seed=5, sigma=7.0)
    order = {x: i for i, x in enumerate(df.uid)}
    assert [order[x] for x in u] == sorted(order[x] for x in u)         # table order
    p = S.write_selection(tmp_path/'sub.json', 'shift_gsample', df, 0.1, seed=5, sigma=7.0)
    sub = read_subset(p)
    assert list(sub.uids) == u
    assert sub.meta['params'] == dict(n=25.0, mu=53.0, sigma=7.0) and sub.meta['rater_run_id'] == 'run-a'
    assert sub.meta['retention'] == 0.1 and sub.meta['seed'] == 5 and sub.meta['pool'] == 2000
    df.to_parquet(tmp_path/'scores.parquet')
    assert S.select('gsample', tmp_path/'scores.parquet', 0.1, seed=1) == S.select('gsample', df, 0.1, seed=1)


@pytest.mark.parametrize('call,msg', [
    (lambda d: S.select('random', d.assign(score=np.where(d.index == 3, np.nan, d.score)), 0.5), 'NaN'),
    (lambda d: S.select('shift_gsample', d, 0.9, n=25), 'n + retention exceed 100%'),
    (lambda d: S.select('random', d, 1.5), 'fraction in (0, 1]'),
    (lambda d: S.select('random', d.iloc[:0], 0.5), 'empty'),
    (lambda d: S.select('gsample', d, 0.5, mu=50, sgima=3), 'unknown parameter'),
    (lambda d: S.select('block', d, 0.3, start=10), 'fewer than the budget'),
    (lambda d: S.select('nope', d, 0.3), 'unknown selection method'),
    (lambda d: S.top_k(d.score.to_numpy(), 2001), 'larger than the pool'),
    (lambda d: S.select('random', pd.concat([d, d.iloc[:1]]), 0.3), 'duplicate uids'),
])
def test_bad_input(df, call, msg):
    with pytest.raises((ValueError, TypeError), match=None) as e: call(df)
    assert msg in str(e.value)
