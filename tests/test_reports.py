"Tests of alchemist.reports that need a frame shaped like a real results file."
import pandas as pd

from alchemist.reports import mean_std_table


def test_seed_counts_follow_their_groups():
    "Records come run by run (each run: its steps); the table lists groups step by step: counts must stay with their group."
    rows = [dict(method=m, seed=s, step=t, **{'metrics.fd_effnet': float(t + s)})
            for m, seeds in (('oracle', 3), ('random', 3), ('full', 2)) for s in range(seeds) for t in (400, 800, 1200)]
    t = mean_std_table(pd.DataFrame(rows), ['step', 'method'], ['metrics.fd_effnet'])
    got = {(r.step, r.method): r.seeds for r in t.itertuples()}
    assert got == {(t_, m): (2 if m == 'full' else 3) for m in ('oracle', 'random', 'full') for t_ in (400, 800, 1200)}
