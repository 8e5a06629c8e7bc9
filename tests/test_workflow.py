"""Bring your own data (issue 18): import -> score -> select -> export, and every bad input of the issue with its exact outcome.

Most cases run the real importers and commands on tiny imagefolders and shards made here; the ones about caches
replace meta-training, scoring or downstream training by stubs (what is tested is which work is redone, and why).
`test_readme_bring_your_own_data` runs the README's commands as they are, at smoke size (the real rater, ~1 min)."""
import errno, io, json, logging, os, re, shlex, tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from alchemist import cli, core, data
from alchemist.core import ConfigError, WriteError, atomic_path, read_json, write_json
from alchemist.data import CorpusError, import_corpus, import_summary, iter_samples, read_manifest
from alchemist.toy import toy_samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    "Data, runs and the lock folder in tmp_path; no progress bars."
    monkeypatch.setenv('ALCHEMIST_DATA', str(tmp_path/'data')); monkeypatch.setenv('ALCHEMIST_RUNS', str(tmp_path/'runs'))
    monkeypatch.setenv('ALCHEMIST_PROGRESS', '0')


class _Log(logging.Handler):
    "The messages of the `alchemist` loggers (they do not propagate, so caplog does not see them)."
    def __init__(self): super().__init__(); self.lines = []
    def emit(self, r): self.lines.append(r.getMessage())

@pytest.fixture
def log():
    h = _Log(); top = logging.getLogger('alchemist'); core.get_logger(); top.addHandler(h)
    yield h
    top.removeHandler(h)


def _png(img: Image.Image, fmt: str = 'PNG') -> bytes:
    b = io.BytesIO(); img.save(b, format=fmt); return b.getvalue()

def _folder(path: Path, n: int = 12, seed: int = 0, res: int = 16, lines: list | None = None) -> Path:
    "An imagefolder of `n` toy scenes (photo_000.png ...) with metadata.jsonl; `lines` replaces the metadata lines."
    path.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, s in enumerate(toy_samples(n, res, seed=seed, heldout=0.0)):
        Image.fromarray(s['image']).save(path/f'photo_{i:03d}.png'); recs.append(json.dumps(dict(file_name=f'photo_{i:03d}.png', text=s['caption'])))
    (path/'metadata.jsonl').write_text('\n'.join(lines if lines is not None else recs) + '\n')
    return path

def _shard(path: Path, members: list) -> Path:
    "A tar of `(name, bytes)` members, in order."
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, 'w') as tf:
        for name, b in members:
            ti = tarfile.TarInfo(name); ti.size = len(b); tf.addfile(ti, io.BytesIO(b))
    return path

def _pairs(n: int, res: int = 8) -> list:
    return [m for i in range(n) for m in ((f'{i:06d}.png', _png(Image.new('RGB', (res, res), (10 * i, 0, 0)))), (f'{i:06d}.txt', f'pair {i}'.encode()))]

def _stats(corpus: Path) -> dict: return read_json(corpus/'import_stats.json')

def _main(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv]); out = capsys.readouterr(); return rc, out.out, out.err


# --- import: every source, exact losses with names ----------------------------------------------------------------------

def test_every_source_is_imported(tmp_path, capsys):
    "Two folders, a folder and shards: all imported (the old CLI took the first folder only, exit 0)."
    a, b = _folder(tmp_path/'a', 5), _folder(tmp_path/'b', 4, seed=1)
    sh = _shard(tmp_path/'shards'/'00000.tar', _pairs(3))
    rc, out, _ = _main(capsys, 'data', 'import', a, b, sh, '--out', tmp_path/'c')
    assert rc == 0 and 'imported 12 pair(s) of 12 image(s) from 3 source(s)' in out
    man = read_manifest(tmp_path/'c')
    assert len(man) == 12 and man.uid.is_unique
    assert man.source.value_counts().to_dict() == {'a': 5, 'b': 4, 'webdataset': 3}
    assert [s['imported'] for s in _stats(tmp_path/'c')['sources']] == [5, 4, 3]
    # the same file names in both folders: distinct uids, each mapped back to its original file name
    assert (man.file_name == 'photo_000.png').sum() == 2 and man[man.file_name == 'photo_000.png'].uid.nunique() == 2


def test_a_source_that_is_not_data_is_refused(tmp_path, capsys):
    a = _folder(tmp_path/'a', 3); (tmp_path/'notes.txt').write_text('x')
    rc, _, err = _main(capsys, 'data', 'import', a, tmp_path/'notes.txt', '--out', tmp_path/'c')
    assert rc == 2 and 'notes.txt' in err and 'neither an imagefolder' in err
    rc, _, err = _main(capsys, 'data', 'import', a, tmp_path/'missing', '--out', tmp_path/'c')
    assert rc == 2 and 'missing: no such file or folder' in err
    assert not (tmp_path/'c').exists()


def test_bad_lines_and_files_are_counted_exactly_with_names(tmp_path):
    "One malformed line, one missing caption, one missing file, one broken image: 4 lost of 10, each named; the rest imported."
    f = _folder(tmp_path/'f', 8)
    (f/'broken.png').write_bytes(b'not a png')
    lines = [json.dumps(dict(file_name=f'photo_{i:03d}.png', text=f'caption {i}')) for i in range(7)]
    lines[2] = '{"file_name": "photo_002.png", "text": '                                        # line 3: malformed
    lines[4] = json.dumps(dict(file_name='photo_004.png', text=''))                            # line 5: empty caption
    lines += [json.dumps(dict(file_name='gone.png', text='x')), json.dumps(dict(file_name='broken.png', text='y'))]   # lines 8, 9
    lines.append(json.dumps(dict(file_name='photo_007.png', text='caption 7')))
    (f/'metadata.jsonl').write_text('\n'.join(lines) + '\n')
    man = import_corpus([f], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert len(man) == 6 and (st['n_imported'], st['n_lost'], st['lost_exact']) == (6, 4, True)
    assert st['reasons'] == {'malformed metadata line': 1, 'missing caption': 1, 'image file not found': 1, 'unreadable image': 1}
    assert sorted((x['file'], x['line']) for x in st['lost']) == [('broken.png', 9), ('gone.png', 8), ('metadata.jsonl', 3), ('photo_004.png', 5)]
    assert 'UnidentifiedImageError' in next(x['reason'] for x in st['lost'] if x['file'] == 'broken.png')
    text = import_summary(st, tmp_path/'c')
    assert 'LOST 4 pair(s)' in text and 'metadata.jsonl:3: malformed JSON' in text and 'gone.png:8' in text


def test_strict_aborts_and_writes_nothing(tmp_path, capsys):
    f = _folder(tmp_path/'f', 4)
    with open(f/'metadata.jsonl', 'a') as m: m.write('{not json\n')
    rc, _, err = _main(capsys, 'data', 'import', f, '--out', tmp_path/'c', '--strict')
    assert rc == 2 and 'metadata.jsonl:5: malformed JSON' in err and 'nothing was written' in err
    assert not (tmp_path/'c').exists() and [p.name for p in tmp_path.iterdir()] == ['f']


def test_csv_row_with_extra_fields_is_named(tmp_path):
    f = _folder(tmp_path/'f', 3); (f/'metadata.jsonl').unlink()
    (f/'metadata.csv').write_text('file_name,text\nphoto_000.png,a red square\nphoto_001.png,two,commas\n"photo_002.png","a ""quoted"" caption"\n')
    man = import_corpus([f], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert man.caption.tolist() == ['a red square', 'a "quoted" caption']
    assert st['lost'] == [dict(source=str(f), file='metadata.csv', line=3, reason='3 fields, the header has 2')]


def test_non_utf8_text_is_decoded_and_counted(tmp_path):
    "cp1252 captions in a shard (once U+FFFD, uncounted) and in a metadata line: decoded, counted, named."
    sh = _shard(tmp_path/'s'/'00000.tar', [('000000.png', _png(Image.new('RGB', (8, 8)))), ('000000.txt', 'café crème'.encode('cp1252')),
                                           ('000001.png', _png(Image.new('RGB', (8, 8)))), ('000001.txt', 'plain'.encode())])
    f = _folder(tmp_path/'f', 2)
    (f/'metadata.jsonl').write_bytes('{"file_name": "photo_000.png", "text": "naïve"}\n'.encode('cp1252') + b'{"file_name": "photo_001.png", "text": "ok"}\n')
    man = import_corpus([sh, f], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert man.caption.tolist() == ['café crème', 'plain', 'naïve', 'ok']
    assert st['text_fallback'] == dict(n=2, files=['00000.tar/000000.txt (cp1252)', 'metadata.jsonl:1 (cp1252)'])
    assert st['n_lost'] == 0


def test_bad_member_json_keeps_the_pair(tmp_path):
    "One bad `.json` member once aborted the whole import; now its pair is kept without it, and named."
    m = _pairs(3); m.insert(4, ('000001.json', b'{"url": "http://x", '))
    man = import_corpus([_shard(tmp_path/'s'/'00000.tar', m)], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert len(man) == 3 and st['n_lost'] == 0
    assert [d['file'] for d in st['metadata_dropped']] == ['00000.tar/000001.json']


def _truncated(tmp_path, n=10, cut_in='000006.png') -> Path:
    sh = _shard(tmp_path/'s'/'00007.tar', _pairs(n))
    with tarfile.open(sh) as tf: m = tf.getmember(cut_in)
    sh.write_bytes(sh.read_bytes()[:m.offset_data + m.size // 2])
    return sh

def test_truncated_shard_without_sidecar_says_the_count_is_a_lower_bound(tmp_path):
    "A shard cut inside pair 6 of 10: pairs 0-5 imported; the loss after the cut cannot be counted, and the stats say so."
    man = import_corpus([_truncated(tmp_path)], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert len(man) == 6 and st['n_lost'] == 1 and st['lost_exact'] is False
    assert st['truncated'][0]['last_key'] == '000006' and st['truncated'][0]['lost_after'] is None
    assert 'LOST 1 or more pair(s)' in import_summary(st)

@pytest.mark.parametrize('sidecar', ['stats', 'parquet'])
def test_truncated_shard_with_img2dataset_sidecar_counts_exactly(tmp_path, sidecar):
    "With img2dataset's `_stats.json` or `.parquet` beside the shard the loss is exact: 4 of 10 (the cut pair and the 3 after it)."
    sh = _truncated(tmp_path)
    if sidecar == 'stats': write_json(sh.with_name('00007_stats.json'), dict(count=10, successes=10))
    else: pd.DataFrame(dict(key=[f'{i:06d}' for i in range(10)], status='success')).to_parquet(sh.with_name('00007.parquet'))
    man = import_corpus([sh], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert (len(man), st['n_lost'], st['lost_exact'], st['reasons']) == (6, 4, True, {'shard truncated': 4})
    if sidecar == 'parquet': assert '000007, 000008, 000009' in st['lost'][-1]['reason']


def test_colour_modes_are_converted_not_clipped(tmp_path):
    "16-bit grey (was clipped to white), RGBA (was black, now over white), palette, CMYK: right pixels, counted."
    f = tmp_path/'f'; f.mkdir()
    Image.fromarray(np.full((8, 8), 128 * 257, np.uint16)).save(f/'grey16.png')
    Image.new('RGBA', (8, 8), (10, 20, 30, 0)).save(f/'clear.png')
    p = Image.new('P', (8, 8), 1); p.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762); p.save(f/'palette.png')
    Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save(f/'cmyk.jpg', quality=100)
    names = ['grey16.png', 'clear.png', 'palette.png', 'cmyk.jpg']
    (f/'metadata.jsonl').write_text(''.join(json.dumps(dict(file_name=n, text=n)) + '\n' for n in names))
    import_corpus([f], tmp_path/'c')
    px = {s['caption']: np.asarray(s['image'])[4, 4].tolist() for s in iter_samples(tmp_path/'c')}
    assert px['grey16.png'] == [128, 128, 128] and px['clear.png'] == [255, 255, 255] and px['palette.png'] == [0, 200, 0]
    assert px['cmyk.jpg'][0] > 240 and max(px['cmyk.jpg'][1:]) < 15
    st = _stats(tmp_path/'c')
    assert st['converted'] == {'16-bit grey scaled to 8 bits': 1, 'transparency composited over white': 1, 'palette converted to RGB': 1, 'CMYK converted to RGB': 1}
    assert st['converted_files']['transparency composited over white'] == ['clear.png']


def test_huge_images_are_downscaled_or_refused_by_name(tmp_path, monkeypatch):
    "PIL's decompression-bomb guard once made a 225 MP image 'unreadable' with no name; the stated limits replace it."
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)   # plain PIL now refuses the 6,000-pixel images below
    f = tmp_path/'f'; f.mkdir()
    Image.new('RGB', (100, 60), (0, 90, 0)).save(f/'wide.png'); Image.new('RGB', (200, 100)).save(f/'huge.png')
    (f/'metadata.jsonl').write_text('{"file_name": "wide.png", "text": "wide"}\n{"file_name": "huge.png", "text": "huge"}\n')
    import_corpus([f], tmp_path/'c', dict(max_side=32, max_pixels=10_000))
    st = _stats(tmp_path/'c')
    assert [s['image'].size for s in iter_samples(tmp_path/'c')] == [(32, 19)]
    assert st['downscaled'] == dict(n=1, max_side=32, files=['wide.png (100x60 -> 32x19)'])
    assert st['lost'][0]['file'] == 'huge.png' and 'above max_pixels' in st['lost'][0]['reason']
    assert Image.MAX_IMAGE_PIXELS == 1000   # PIL's own setting is left as it was


def test_several_captions_per_image_stay_in_one_split(tmp_path):
    "COCO-style: five lines with one file_name (once: a duplicate that aborted the import) and a list of captions."
    f = _folder(tmp_path/'f', 3)
    lines = [json.dumps(dict(file_name='photo_000.png', text=f'caption {j}')) for j in range(5)]
    lines += [json.dumps(dict(file_name='photo_001.png', text=['one', 'two'])), json.dumps(dict(file_name='photo_002.png', text='single'))]
    (f/'metadata.jsonl').write_text('\n'.join(lines))
    man = import_corpus([f], tmp_path/'c'); st = _stats(tmp_path/'c')
    assert (len(man), st['n_images']) == (8, 3)
    assert man.uid.tolist() == ['photo_000', *[f'photo_000-c{j}' for j in range(1, 5)], 'photo_001', 'photo_001-c1', 'photo_002']
    assert man.groupby('file_name').group_id.nunique().max() == 1 and man.groupby('group_id').split.nunique().max() == 1


def test_uids_do_not_collide(tmp_path):
    "'a b.png' and 'a_b.png' once both became uid a_b (a duplicate-uid abort)."
    f = tmp_path/'f'; f.mkdir()
    for n in ('a b.png', 'a_b.png'): Image.new('RGB', (8, 8)).save(f/n)
    (f/'metadata.jsonl').write_text('{"file_name": "a b.png", "text": "x"}\n{"file_name": "a_b.png", "text": "y"}\n')
    man = import_corpus([f], tmp_path/'c')
    assert man.uid.is_unique and man.uid.iloc[0] == 'a_b' and re.fullmatch(r'a_b-[0-9a-f]{8}', man.uid.iloc[1])
    assert man.set_index('uid').file_name.to_dict() == {man.uid.iloc[0]: 'a b.png', man.uid.iloc[1]: 'a_b.png'}


def test_overwrite(tmp_path, capsys):
    f = _folder(tmp_path/'f', 3)
    assert _main(capsys, 'data', 'import', f, '--out', tmp_path/'c')[0] == 0
    rc, _, err = _main(capsys, 'data', 'import', f, '--out', tmp_path/'c')
    assert rc == 2 and 'corpus exists' in err and '--overwrite' in err
    _folder(tmp_path/'f', 5, seed=1)
    assert _main(capsys, 'data', 'import', f, '--out', tmp_path/'c', '--overwrite')[0] == 0 and len(read_manifest(tmp_path/'c')) == 5


def test_files_get_normal_permissions(tmp_path):
    "Corpus, manifest, stats and scores are created as `open` and `mkdir` would (0644 / 0755 under umask 022), not 0600 / 0700."
    old = os.umask(0o022)
    try:
        import_corpus([_folder(tmp_path/'f', 3)], tmp_path/'c')
        data.write_scores(tmp_path/'c'/'scores'/'x.parquet', ['a'], [1.0], record={})
    finally: os.umask(old)
    c = tmp_path/'c'
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (c, c/'manifest.parquet', c/'import_stats.json', c/'corpus.json', c/'scores'/'x.parquet', c/'scores'/'x.json')} == \
        {'c': '0o755', 'manifest.parquet': '0o644', 'import_stats.json': '0o644', 'corpus.json': '0o644', 'x.parquet': '0o644', 'x.json': '0o644'}


# --- errors a person can act on ---------------------------------------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path):
    "A 60-pair imported corpus (its held-out split has enough pairs for the rater)."
    import_corpus([_folder(tmp_path/'my_images', 60, res=16)], tmp_path/'my_corpus')
    return tmp_path/'my_corpus'

@pytest.fixture
def no_work(monkeypatch):
    "Meta-training, scoring and downstream training that fail the test if reached."
    from alchemist import experiments as ex
    def boom(*a, **k): raise AssertionError('work started before the config was checked')
    for name in ('meta_train', 'score_corpus', 'train_and_evaluate', 'build_synthetic'): monkeypatch.setattr(ex, name, boom)

BAD_KEYS = [('seed=abc', "ExperimentConfig.seed must be an integer, got 'abc'"),
            ('retention=abc', "ExperimentConfig.retention must be a number, got 'abc'"),
            ('device=tpu', "unknown device 'tpu'"),
            ('epochs=-1', "ExperimentConfig.epochs must be > 0 with budget='epochs', got -1"),
            ('size=xl', "ExperimentConfig.size must be one of ['s', 'm', 'l'] for family 'unet', got 'xl'")]

@pytest.mark.parametrize('kv,msg', BAD_KEYS)
def test_bad_keys_fail_before_any_work(tmp_path, capsys, corpus, no_work, kv, msg):
    "From the command line, a YAML file and Python alike; nothing runs and no run folder is made."
    rc, _, err = _main(capsys, 'run', f'corpus={corpus}', kv)
    assert rc == 2 and msg in err
    k, v = kv.split('=')
    (tmp_path/'c.yaml').write_text(f"corpus: {corpus}\n{k}: {v}\n")
    rc, _, err = _main(capsys, 'run', '--config', tmp_path/'c.yaml')
    assert rc == 2 and msg in err
    from alchemist.experiments import run
    with pytest.raises(ConfigError, match=re.escape(msg)): run({'corpus': str(corpus), k: cli._kv([kv])[k]})
    assert not (tmp_path/'runs').exists()


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    (tmp_path/'bad.yaml').write_text('method: random\nseed: [1, 2\n')
    rc, _, err = _main(capsys, 'run', '--config', tmp_path/'bad.yaml')
    assert rc == 2 and 'bad.yaml is not valid YAML' in err and 'line 3' in err
    (tmp_path/'list.yaml').write_text('- method\n')
    assert 'expected a mapping' in _main(capsys, 'run', '--config', tmp_path/'list.yaml')[2]


def test_stage_commands_reject_keys_that_do_not_apply(capsys, corpus, no_work):
    rc, _, err = _main(capsys, 'score', corpus, '--selector', 'alchemist', 'epochs=3')
    assert rc == 2 and "key(s) ['epochs'] do not apply to `alchemist score`" in err
    rc, _, err = _main(capsys, 'score', corpus, '--selector', 'best')
    assert rc == 2 and "unknown method 'best'" in err
    rc, _, err = _main(capsys, 'rater', 'train', corpus, 'meta_epochs=zero')
    assert rc == 2 and 'ExperimentConfig.meta_epochs must be an integer' in err


def test_read_only_corpus_and_work_dir(tmp_path, capsys, corpus, monkeypatch):
    "A corpus that cannot be written: a one-line error with the path and what to do (exit 3); with --work-dir it works and the corpus is untouched."
    real = core.tempfile.mkstemp
    def ro(*a, dir=None, **k):
        if str(dir).startswith(str(corpus)): raise OSError(errno.EROFS, 'Read-only file system', str(dir))
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(core.tempfile, 'mkstemp', ro)
    rc, _, err = _main(capsys, 'score', corpus, '--selector', 'clarity')
    assert rc == 3 and f"could not write {corpus}/cache/images_16.npy: the file system is read-only; nothing was written" in err and '--work-dir' in err
    assert 'Traceback' not in err
    before = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob('*'))
    rc, out, _ = _main(capsys, 'score', corpus, '--selector', 'clarity', '--work-dir', tmp_path/'work')
    assert rc == 0 and f"scores: {tmp_path/'work'}" in out
    assert sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob('*')) == before


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    "torch.save on a full disk ('[enforce fail at inline_container.cc:672]') once left a traceback; now the old checkpoint is intact and the error says so."
    from alchemist.rater import Rater, RaterConfig, load_rater, save_rater
    torch.manual_seed(0); r = Rater(RaterConfig(resolution=8, width=4, depth=1, text_dim=8, hidden=4))
    p = save_rater(r, tmp_path/'rater.pt', corpus=dict(name='c', resolution=8))
    def full(*a, **k): raise RuntimeError('[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed')
    monkeypatch.setattr(torch, 'save', full)
    with torch.no_grad():
        for q in r.parameters(): q.add_(1.0)
    with pytest.raises(WriteError, match=re.escape(f"could not write {p}")) as e: save_rater(r, p, corpus=dict(name='c', resolution=8))
    assert 'the previous rater.pt is intact' in str(e.value) and 'free some space' in str(e.value)
    monkeypatch.undo()
    assert sorted(x.name for x in tmp_path.iterdir()) == ['rater.pt']                       # no half-written temporary left
    back = load_rater(p); torch.manual_seed(0); fresh = Rater(RaterConfig(resolution=8, width=4, depth=1, text_dim=8, hidden=4))
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), fresh.state_dict().values()))


def test_cli_reports_a_full_disk_in_one_line(tmp_path, capsys, corpus, monkeypatch):
    from alchemist import experiments as ex
    def meta_train(cfg):
        def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
        with atomic_path(Path(cfg.out_dir)/'checkpoint.pt') as tmp: full(tmp)
    monkeypatch.setattr(ex, 'meta_train', meta_train)
    rc, _, err = _main(capsys, 'rater', 'train', corpus)
    assert rc == 3 and 'checkpoint.pt: no space left on the device; nothing was written. What to do: free some space' in err


def test_metrics_json_has_no_bare_nan(tmp_path):
    write_json(tmp_path/'m.json', dict(fd=float('nan'), kid=[1.0, float('inf')], n=np.int64(3)))
    assert (tmp_path/'m.json').read_text().count('NaN') == 0 and read_json(tmp_path/'m.json') == dict(fd=None, kid=[1.0, None], n=3)


# --- caches keyed on content ------------------------------------------------------------------------------------------------

@pytest.fixture
def stub_training(monkeypatch):
    "Downstream training and the evaluation caches replaced by a stub that counts its calls (NaN on purpose: metrics.json must stay strict JSON)."
    from alchemist import experiments as ex
    calls = []
    def train_and_evaluate(cfg, corpus_dir, out, n_pool):
        calls.append(read_manifest(corpus_dir).caption.iloc[0]); return dict(fd_effnet=float('nan'), train_steps=1)
    monkeypatch.setattr(ex, 'train_and_evaluate', train_and_evaluate); monkeypatch.setattr(ex, 'warm_caches', lambda cfg, c: None)
    return calls

def test_run_is_redone_when_the_corpus_is_reimported(tmp_path, corpus, stub_training, log):
    "Re-importing another corpus at the same path once returned the old metrics and an old subset.json whose uids no longer existed."
    from alchemist.experiments import ExperimentConfig, run, run_outputs
    cfg = ExperimentConfig(corpus=str(corpus), method='random', retention=0.5)
    m1 = run(cfg); assert run(cfg) == json.loads(json.dumps(m1).replace('NaN', 'null')) and len(stub_training) == 1   # reused
    assert 'NaN' not in Path(run_outputs(cfg)['metrics']).read_text()
    import_corpus([_folder(tmp_path/'other', 40, seed=7, res=16)], corpus, dict(overwrite=True))
    m2 = run(cfg)
    assert len(stub_training) == 2 and m2['n_pool'] != m1['n_pool']
    assert any('the corpus changed (manifest fingerprint' in l for l in log.lines)
    assert set(data.read_subset(run_outputs(cfg)['subset']).uids) <= set(read_manifest(corpus).uid)

def test_run_is_redone_when_the_code_version_changes(corpus, stub_training, log, monkeypatch):
    from alchemist.experiments import ExperimentConfig, run
    cfg = ExperimentConfig(corpus=str(corpus), method='random')
    run(cfg); monkeypatch.setattr(core, '__version__', '99.0'); run(cfg)
    assert len(stub_training) == 2 and any('the code version changed (' in l and '-> 99.0' in l for l in log.lines)


def test_rater_and_scores_are_reused_only_for_the_same_content(corpus, monkeypatch, log):
    from alchemist import experiments as ex
    from alchemist.rater import Rater, RaterConfig, save_rater
    trained, scored = [], []
    def meta_train(cfg):
        trained.append(cfg.out_dir); torch.manual_seed(len(trained))
        p = save_rater(Rater(RaterConfig(resolution=16, width=4, depth=1)), Path(cfg.out_dir)/'rater.pt', corpus=dict(name='my_corpus', resolution=16))
        return dict(rater_checkpoint=p)
    def score_corpus(cfg):
        scored.append(cfg.rater); uids = read_manifest(cfg.corpus_dir).query("split == 'train'").uid
        data.write_scores(cfg.out, uids, np.linspace(1, 0, len(uids)), record=dict(seconds=0.1))
        return Path(cfg.out)
    monkeypatch.setattr(ex, 'meta_train', meta_train); monkeypatch.setattr(ex, 'score_corpus', score_corpus)
    cfg = ex.ExperimentConfig(corpus=str(corpus))
    ex.rater_scores(cfg, corpus); ex.rater_scores(cfg, corpus)
    assert (len(trained), len(scored)) == (1, 1)                                   # both reused
    man = read_manifest(corpus); man.loc[0, 'caption'] = 'edited in place'; man.to_parquet(corpus/'manifest.parquet')
    ex.rater_scores(cfg, corpus)
    assert (len(trained), len(scored)) == (2, 2) and any('the corpus changed' in l for l in log.lines)
    # a default changed in another module (here the rater's learning rate): the MetaConfig is part of the key
    real = ex.MetaConfig
    monkeypatch.setattr(ex, 'MetaConfig', lambda **k: real(**k, lr=real().lr * 2))
    ex.rater_scores(cfg, corpus)
    assert (len(trained), len(scored)) == (3, 3) and any('the config changed' in l for l in log.lines)


def test_image_cache_follows_the_corpus(corpus, log):
    "The pixel cache every stage reads is keyed on the fingerprint too: a manifest rewritten in another order is not read with the old rows."
    first = np.asarray(data.image_cache(corpus, 16)); man = read_manifest(corpus)
    man.iloc[::-1].to_parquet(corpus/'manifest.parquet', index=False)
    assert (np.asarray(data.image_cache(corpus, 16)) == first[::-1]).all()
    assert any(f"rebuilding {corpus/'cache'/'images_16.npy'}: the corpus changed (manifest fingerprint" in l for l in log.lines)


def test_run_is_redone_when_a_default_of_another_stage_changes(corpus, stub_training, log, monkeypatch):
    "The run key covers the TrainConfig and EvalConfig built from the experiment, defaults included, not only the ExperimentConfig."
    import dataclasses
    from alchemist import experiments as ex
    cfg = ex.ExperimentConfig(corpus=str(corpus), method='random')
    ex.run(cfg); ex.run(cfg); assert len(stub_training) == 1
    real = ex.train_config
    monkeypatch.setattr(ex, 'train_config', lambda *a: dataclasses.replace(real(*a), warmup_steps=real(*a).warmup_steps + 1))
    ex.run(cfg)
    assert len(stub_training) == 2 and any('the config changed (hash ' in l for l in log.lines)


# --- the stage commands ------------------------------------------------------------------------------------------------------

def test_select_and_export_with_a_baseline(tmp_path, capsys, corpus):
    "score (a cheap baseline) -> select -> export in all three formats; the outputs read back with webdataset and as an imagefolder."
    import webdataset as wds
    rc, out, _ = _main(capsys, 'score', corpus, '--selector', 'clarity', '--out', tmp_path/'scores.parquet')
    assert rc == 0 and f"scores: {tmp_path/'scores.parquet'} (a copy of {corpus/'scores'/'clarity.parquet'})" in out
    sc = data.read_scores(tmp_path/'scores.parquet')
    assert list(sc.columns) == ['uid', 'score', 'rank', 'file_name'] and sorted(sc['rank']) == list(range(1, len(sc) + 1))
    assert (sc.file_name == sc.uid + '.png').all()
    rc, out, err = _main(capsys, 'select', tmp_path/'scores.parquet', '--retention', '0.5', '--sampler', 'top_k', '--out', tmp_path/'subset.json')
    n = round(len(sc) * 0.5)
    assert rc == 0 and f"{n} of {len(sc)} pairs (top_k, retention 0.5, seed 0)" in out
    assert set(data.read_subset(tmp_path/'subset.json').uids) == set(sc.nsmallest(n, 'rank').uid)
    for fmt in ('webdataset', 'imagefolder', 'uids'):
        rc, out, err = _main(capsys, 'export', tmp_path/'subset.json', '--format', fmt, '--out', tmp_path/fmt)
        assert rc == 0 and f"{n} pairs as {fmt}" in out, err
    got = list(wds.WebDataset(str(tmp_path/'webdataset'/'shard-000000.tar'), shardshuffle=False).decode('pil'))
    assert len(got) == n and {'png', 'txt', 'json'} <= set(got[0]) and got[0]['json']['file_name'] == got[0]['__key__'] + '.png'
    assert read_json(tmp_path/'webdataset'/'shard-000000_stats.json')['successes'] == n
    md = pd.read_json(tmp_path/'imagefolder'/'metadata.jsonl', lines=True)
    assert list(md.columns[:2]) == ['file_name', 'text'] and all((tmp_path/'imagefolder'/x).is_file() for x in md.file_name)
    assert sorted(np.load(tmp_path/'uids'/'uids.npy').tolist()) == sorted(md.uid)
    rc, _, err = _main(capsys, 'export', tmp_path/'subset.json', '--format', 'uids', '--out', tmp_path/'uids')
    assert rc == 2 and 'not empty' in err and '--overwrite' in err
    # the corpus re-imported after the selection: the subset's uids may be gone, so export refuses
    import_corpus([_folder(tmp_path/'other', 30, seed=3, res=16)], corpus, dict(overwrite=True))
    rc, _, err = _main(capsys, 'export', tmp_path/'subset.json', '--format', 'uids', '--out', tmp_path/'again')
    assert rc == 2 and 'changed since' in err and 'score and select again' in err and not (tmp_path/'again').exists()


def test_select_rejects_bad_parameters(tmp_path, capsys):
    data.write_scores(tmp_path/'s.parquet', ['a', 'b', 'c', 'd'], [4, 3, 2, 1])
    rc, _, err = _main(capsys, 'select', tmp_path/'s.parquet', '--retention', '1.5')
    assert rc == 2 and 'retention must be a fraction in (0, 1]' in err
    rc, _, err = _main(capsys, 'select', tmp_path/'s.parquet', '--retention', '0.5', '--sampler', 'gsample', 'mu=50', 'sgima=3')
    assert rc == 2 and "unknown parameter(s) ['sgima'] for sampler 'gsample'" in err
    with pytest.raises(SystemExit): cli.main(['select', str(tmp_path/'s.parquet'), '--retention', 'abc'])
    assert 'invalid float value' in capsys.readouterr().err


def test_run_prints_where_its_subset_and_scores_are(capsys, corpus, stub_training):
    rc, out, _ = _main(capsys, 'run', f'corpus={corpus}', 'method=clarity')
    assert rc == 0
    paths = dict(re.findall(r'^(\w+):\s+(\S+)$', out, re.M))
    assert Path(paths['subset']).is_file() and paths['scores'] == str((corpus/'scores'/'clarity.parquet').resolve())


# --- help and the README ------------------------------------------------------------------------------------------------------

def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e: cli.main(list(argv) + ['--help'])
    assert e.value.code == 0
    return capsys.readouterr().out

def test_help_shows_the_workflow_in_order_and_every_key(capsys):
    top = _help(capsys)
    order = [top.index(s) for s in ('alchemist data import', 'alchemist score', 'alchemist select', 'alchemist export', 'train your model')]
    assert order == sorted(order) and 'exit status' in top
    sc = _help(capsys, 'score')
    assert re.search(r'meta_epochs\s+\(int, default 2\) passes over the held-out split', sc) and 'writes:' in sc and 'retention' not in sc
    run = _help(capsys, 'run')
    assert re.search(r'ckpt_every\s+\(int, default 200\)', run) and re.search(r'retention\s+\(float, default 0.5\)', run) and 'writes:' in run
    assert 'meta_mode' in _help(capsys, 'rater', 'train')
    imp = _help(capsys, 'data', 'import')
    assert re.search(r'max_side\s+\(int, default 2048\)', imp) and 'import_stats.json' in imp
    assert 'shift_gsample: n=None, mu=53.0, sigma=10.0' in _help(capsys, 'select')
    assert 'diffusers --train_data_dir' in _help(capsys, 'export')


def _readme_commands() -> list:
    text = (ROOT/'README.md').read_text()
    section = text.split('## Bring your own data', 1)[1].split('\n## ', 1)[0]
    block = section.split('```sh', 1)[1].split('```', 1)[0]
    return [shlex.split(l, comments=True) for l in block.splitlines() if l.strip().startswith('alchemist ')]

def test_readme_bring_your_own_data(tmp_path, capsys, monkeypatch):
    "The README's section, command by command, on a tiny imagefolder at smoke size (the real rater: about a minute)."
    cmds = _readme_commands()
    assert [c[1] for c in cmds] == ['data', 'score', 'select', 'export']
    monkeypatch.chdir(tmp_path); _folder(tmp_path/'my_images', 80, res=16)
    for c in cmds:
        rc, out, err = _main(capsys, *c[1:])
        assert rc == 0, f"{' '.join(c)}:\n{out}\n{err[-3000:]}"
    sub = data.read_subset('subset.json')
    md = pd.read_json('my_subset/metadata.jsonl', lines=True)
    assert len(md) == len(sub.uids) > 0 and set(md.uid) == set(sub.uids) and set(md.original_file_name) <= {p.name for p in Path('my_images').glob('*.png')}
