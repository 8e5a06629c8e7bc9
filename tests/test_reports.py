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


def test_load_results_reads_only_reproduce_tables(tmp_path):
    "The results folder also holds the CSVs of scripts with their own reports (rater evidence, attribution): not tables."
    from alchemist.reports import load_results
    pd.DataFrame(dict(method=['random'], seed=[0], **{'metrics.fd_effnet': [1.0]})).to_csv(tmp_path/'T1_quick.csv', index=False)
    pd.DataFrame(dict(run_id=['x'], step=[1])).to_csv(tmp_path/'T1_quick_records.csv', index=False)
    pd.DataFrame(dict(mode=['init'], auroc=[0.5])).to_csv(tmp_path/'rater_auroc_quick.csv', index=False)
    pd.DataFrame(dict(a=[1])).to_csv(tmp_path/'attribution_quick.csv', index=False)
    assert sorted(load_results(tmp_path)) == ['T1_quick', 'T1_quick_records']


def test_seed_systems_are_read_apart_from_the_tables(tmp_path):
    "attribution_<profile>.csv and curator_sft_<profile>.csv feed the headline through load_seed_systems, never load_results."
    from alchemist.reports import headline_block, load_results, load_seed_systems
    pd.DataFrame(dict(method=['random'], seed=[0], **{'metrics.fd_effnet': [1.0]})).to_csv(tmp_path/'T1_quick.csv', index=False)
    att = pd.DataFrame([dict(seed=s, query_kind='generated', method=m, k=10, n_queries=8, n_items=100, map=v + .01 * s,
                             index_s_per_query=1e-4, prep_s_per_query=1e-3) for s in range(2) for m, v in (('ranker', .2), ('cosine-both', .3), ('chance', .01))])
    att.to_csv(tmp_path/'attribution_quick.csv', index=False)
    pd.DataFrame([dict(corpus='synthetic', method=m, seed=s, defect_rate=.1, fd_effnet=f + s, clip_score=.2, attr_acc=.1)
                  for s in range(2) for m, f in (('none', 100), ('random', 90), ('oracle', 50))]).to_csv(tmp_path/'curator_sft_quick.csv', index=False)
    sys_ = load_seed_systems(tmp_path)
    assert sorted(sys_) == ['attribution_quick', 'curator_sft_quick'] and sorted(load_results(tmp_path)) == ['T1_quick']
    assert load_seed_systems(tmp_path/'missing') == {}
    block = headline_block({}, sys_)
    assert block.startswith('### Profile `quick`') and '**FastGDA attribution**' in block and '**Curator as SFT**, synthetic' in block
    # the ranker loses to cosine here: the verdict says so, it does not vanish
    assert '| ranker beats the best raw cosine (cosine-both) | -0.1        | contradicted' in block
    assert headline_block({}, {}) is None


def test_fig5_report_keeps_the_committed_grid_when_the_run_folder_is_gone(tmp_path):
    "On a clone the grid PNG a Fig5 row points at (in runs/) is absent: the report still shows the committed copy."
    from alchemist.reports import report_table
    df = pd.DataFrame([dict(corpus='synthetic', seed=0, method='alchemist', **{'metrics.grid_png': str(tmp_path/'gone'/'grid.png')})])
    (tmp_path/'figures').mkdir(); (tmp_path/'figures'/'Fig5_quick_grid_synthetic.png').write_bytes(b'png')
    md = report_table('Fig5_quick', df, tmp_path).read_text()
    assert '![Fig5_quick_grid_synthetic](figures/Fig5_quick_grid_synthetic.png)' in md
    (tmp_path/'figures'/'Fig5_quick_grid_synthetic.png').unlink()
    assert 'Fig5_quick_grid_synthetic' not in report_table('Fig5_quick', df, tmp_path).read_text()   # nothing to show: no link
