"""scripts/bench_scale.py (issue 20, item 5): `--tiny` runs every part (training, shard reading, scoring, meta-training) at 1
and 2 processes and writes its report; the aggregation over ranks and the contended-box note, on made-up rank rows."""
import importlib.util, json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'scripts'/'bench_scale.py'


def _bench():
    spec = importlib.util.spec_from_file_location('bench_scale', SCRIPT)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_tiny_run_measures_every_part_and_writes_the_report(tmp_path):
    out = tmp_path/'bench'/'scale.md'
    env = dict(os.environ, OMP_NUM_THREADS='1', ALCHEMIST_PROGRESS='0')
    r = subprocess.run([sys.executable, str(SCRIPT), '--tiny', '--out', str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads([l for l in r.stdout.splitlines() if l.startswith('{')][-1])
    rows = res['rows']
    assert sorted((x['part'], x['world'], x.get('population')) for x in rows) == sorted(
        [(p, w, None) for p in ('train', 'read', 'score') for w in (1, 2)] + [('meta', 1, 2), ('meta', 1, 1), ('meta', 2, 2)])
    for x in rows:
        assert x['rate'] > 0 and x['wall_s'] > 0 and 0 < x['cpu_ratio'] < 2 * x['world'] + 1, x
        assert x['torch_threads'] == 1 and x['os_threads'] >= 1 and x['load_before'] >= 0, x
    by = {(x['part'], x['world'], x.get('population')): x for x in rows}
    assert by[('read', 1, None)]['units'] == by[('read', 2, None)]['units'] == 48        # every sample once, split over the ranks
    assert by[('score', 2, None)]['ratio'] == pytest.approx(by[('score', 2, None)]['rate'] / by[('score', 1, None)]['rate'])
    assert by[('meta', 2, 2)]['members_a_rank'] == 1 and by[('meta', 2, 2)]['units'] == 2   # 2 timed meta-steps after the warm-up one
    assert by[('meta', 2, 2)]['member_rate'] == pytest.approx(2 * by[('meta', 2, 2)]['rate'])
    assert res['checks'] == dict(scores_equal=True, scores_n=128, scores_world=2, scores_base=1)
    assert res['same_wall_ratio'] == pytest.approx(by[('meta', 1, 1)]['rate'] / by[('meta', 2, 2)]['rate'])
    md = out.read_text()
    for s in ('Downstream training under DDP', 'Shard streaming by rank', '## Scoring', '## Meta-training', '## Reading', 'git `',
              'Load average (1/5/15 min)', 'equal N = 1 bit for bit: **True**', 'the same-wall reference', '--tiny: numbers meaningless'):
        assert s in md, s
    assert md.count('\n| 2 |') == 4 and r.stdout.count('| processes |') == 4   # a 2-process row in every table; printed too


def test_rank_rows_merge_into_one_row(monkeypatch):
    "Slowest rank's wall, CPU summed over ranks (train: ranks > 0 from their own ratio), read samples summed, a note when cpu/wall is far from N."
    b = _bench()
    def rank(part, wall, cpu, units, **kw):
        return dict(part=part, world=2, wall=wall, cpu=cpu, units=units, load_before=0.1, load_after=1.9, torch_threads=1, os_threads=7, **kw)
    rows = b._merge_ranks([[rank('read', 2.0, 1.0, 30), rank('train', 4.0, 3.6, 64, cpu_ratio_self=0.8)],
                           [rank('read', 1.0, 0.5, 20), rank('train', None, None, 0, cpu_ratio_self=0.5)]])
    read, train = rows
    assert (read['units'], read['wall_s'], read['rate'], read['cpu_ratio']) == (50, 2.0, 25.0, 0.75)
    assert (train['units'], train['wall_s'], train['rate']) == (64, 4.0, 16.0) and train['cpu_ratio'] == pytest.approx((3.6 + 0.5 * 4.0) / 4.0)
    a = dict(population=2, max_world=2, score_n=128, score_batch=16, chunk_batches=2)
    assert b._notes(dict(read, cpu_ratio=1.9), 2, a) == []
    assert 'contended box' in b._notes(read, 2, a)[0]
    assert 'uneven chunks a rank [3, 2]' in b._notes(dict(read, part='score', cpu_ratio=2.0), 2, dict(a, score_n=160))[0]
