"alchemist.sources (and its steps: fetch, catalogues, render, dedup) on real files cut from the pinned packages (tests/fixtures/web): no network."
import io, json, os, shutil, tarfile
from pathlib import Path

import numpy as np
import pytest

from alchemist import catalogues as C
from alchemist import cli
from alchemist import data as adata
from alchemist import fetch as F
from alchemist import sources as S

FIX = Path(__file__).resolve().parent/'fixtures'/'web'


def _cfg(tmp, **kw):
    d = dict(local_root=str(FIX), out_dir=str(tmp/'web'), card_dir=str(tmp/'reports'), cache_dir=str(tmp/'cache'), name='fixture', workers=1,
             emoji_vendors=['google', 'twitter'])
    d.update(kw)
    return S.web_config(d)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('web')
    cfg = _cfg(tmp)
    return cfg, S.build_web(cfg), tmp


def test_corpus_streams_like_the_synthetic_one(built):
    cfg, out, _ = built
    man = adata.read_manifest(out)
    assert list(man.columns) == adata.MANIFEST_COLUMNS
    got = list(adata.iter_samples(out))
    assert [s['uid'] for s in got] == list(man.uid)
    for s in got:
        assert s['image'].size == (32, 32) and s['image'].mode == 'RGB'
        assert s['caption'].strip() == s['caption'] and s['caption']
        assert s['meta']['source'] in S.SOURCES and s['meta']['license']
    imgs, uids = adata.load_images(out, 32)
    assert imgs.shape == (len(man), 32, 32, 3)
    assert set(man.source) == {'iconify', 'openclipart', 'emoji'}


def test_counts_and_skips(built):
    _, out, _ = built
    info = json.loads((out/'build_info.json').read_text())
    sk = info['skips']
    assert sk['iconify: hidden icon'] == 1                       # twemoji 'adult'
    assert sk['openclipart: empty caption'] == 1                 # navigation_display_panel_01: no title, description or keyword
    assert sk['openclipart: symlink (same file, second folder)'] == 1
    assert sk['emoji: empty sprite cell'] == 1                   # the twitter cat cell left blank in the fixture sheet
    man = adata.read_manifest(out)
    assert info['n_written'] == len(man) == info['n_selected'] - sk['emoji: empty sprite cell']
    assert 'ic-twemoji-adult' not in set(man.uid) and 'ic-noto-person' in set(man.uid)
    assert 'em-twitter-1f431' not in set(man.uid) and 'em-google-1f431' in set(man.uid)


def test_groups_keep_twins_in_one_split(built):
    _, out, _ = built
    man = adata.read_manifest(out)
    assert man.groupby('group_id').split.nunique().max() == 1
    cat = man[man.uid.isin(['ic-twemoji-cat-face', 'ic-noto-cat-face', 'em-google-1f431'])]
    assert len(cat) == 3 and cat.group_id.nunique() == 1      # one emoji, three drawings, one group
    heart = man[man.uid.str.endswith('red-heart') | man.uid.str.endswith('-2764')]
    assert heart.group_id.nunique() == 1 and len(heart) >= 3
    attrs = man['attrs'].map(json.loads)
    assert all({'ink', 'near_blank', 'exact_dups', 'group_size', 'caption_repeats'} <= set(a) for a in attrs)


def test_licences_and_captions(built):
    _, out, _ = built
    man = adata.read_manifest(out).set_index('uid')
    assert man.loc['ic-twemoji-grinning-face', 'license'] == 'CC-BY-4.0'
    assert man.loc['ic-noto-grinning-face', 'license'] == 'Apache-2.0'
    assert man.loc['em-google-1f600', 'license'] == 'Apache-2.0'
    oc = man[man.source == 'openclipart']
    assert set(oc.license) == {C.OPENCLIPART_LICENSE}
    assert any(c.startswith('gramastar') for c in oc.caption)   # template titles are kept: real noise
    assert any('HASH(0x' in c for c in oc.caption)


def test_data_card(built):
    cfg, _, tmp = built
    card = (tmp/'reports'/'data_card_fixture.md').read_text()
    for h in ['## Counts per source and set', '## Dropped', '## Captions', '## Duplicates', '## Near-blank images', '## Licences', '## Splits']:
        assert h in card, h
    assert 'emoji: empty sprite cell | 1' in card
    assert (tmp/'reports'/'figures'/'fixture_samples.png').stat().st_size > 1000
    assert (tmp/'reports'/'figures'/'fixture_junk.png').exists()


def test_built_once_then_reused(built):
    cfg, out, _ = built
    before = (out/'manifest.parquet').stat().st_mtime_ns
    assert S.build_web(cfg) == out
    assert (out/'manifest.parquet').stat().st_mtime_ns == before


def test_limit_is_a_fixed_nested_subsample(tmp_path):
    recs, _ = S.catalogue(_cfg(tmp_path), S.package_dirs(_cfg(tmp_path)))
    a, b = S.subsample(recs, 5), S.subsample(recs, 10)
    assert len(a) == 5 and len(b) == 10
    assert {r['uid'] for r in a} <= {r['uid'] for r in b}
    assert {r['uid'] for r in a} == {r['uid'] for r in S.subsample(list(reversed(recs)), 5)}   # order-free
    out = S.build_web(_cfg(tmp_path, limit=6, write_card=False, sources=['iconify', 'openclipart']))
    assert len(adata.read_manifest(out)) == 6


def test_exclude_noncommercial(tmp_path, monkeypatch):
    # the fixtures ship no Apple art; mark Twitter's as Apple's licence to see the filter work
    monkeypatch.setitem(C.EMOJI_LICENSES, 'twitter', 'Apple-proprietary-NC')
    out = S.build_web(_cfg(tmp_path, exclude_noncommercial=True, sources=['emoji'], write_card=False))
    man = adata.read_manifest(out)
    assert len(man) > 0 and not man.uid.str.startswith('em-twitter').any()
    assert json.loads((out/'build_info.json').read_text())['skips']['excluded non-commercial: twitter'] > 0


def test_bad_svg_is_counted_not_fatal(tmp_path):
    root = tmp_path/'pk'
    shutil.copytree(FIX, root, symlinks=True)
    text = (FIX/'openclipart-svg/usr/share/openclipart/svg/food/beverages/pop_can.svg').read_text()
    # real metadata, but a <use> inside the group it references: cairosvg would recurse forever
    loop = text.replace('</svg>', '<g id="selfref"><use xlink:href="#selfref"/></g></svg>')
    (root/'openclipart-svg/usr/share/openclipart/svg/food/loop.svg').write_text(loop)
    bad = root/'openclipart-svg/usr/share/openclipart/svg/food/not_xml.svg'
    bad.write_text('<svg><metadata>')
    out = S.build_web(_cfg(tmp_path, local_root=str(root), sources=['openclipart'], write_card=False, render_timeout=3))
    sk = json.loads((out/'build_info.json').read_text())['skips']
    assert sk['openclipart: unparseable SVG'] == 1
    assert sk.get('openclipart: render timed out', 0) + sk.get('openclipart: render failed (RecursionError)', 0) == 1
    assert not any(u.startswith('oc-food_loop') for u in adata.read_manifest(out).uid)
    assert len(adata.read_manifest(out)) >= 5


def test_missing_tools_and_downloads_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(F.FetchError, match=r"npm is needed to download @iconify/json@2\.2\.535.*apt-get install npm"):
        F.fetch_npm('@iconify/json', '2.2.535', tmp_path/'dl', tmp_path/'ck.json')
    with pytest.raises(F.FetchError, match=r"apt-get is needed to download the Debian package openclipart-svg=1:0\.18"):
        F.fetch_deb('openclipart-svg', '1:0.18+dfsg-19', tmp_path/'dl', tmp_path/'ck.json')
    with pytest.raises(F.FetchError, match='emoji-datasource'):
        S.package_dirs(S.web_config(dict(local_root=str(tmp_path), sources=['emoji'])))


def test_checksum_mismatch_is_an_error(tmp_path):
    f = tmp_path/'x-1.0.0.tgz'; f.write_bytes(b'one')
    F.record_checksum(f, tmp_path/'ck.json', package='x', version='1.0.0')
    F.record_checksum(f, tmp_path/'ck.json', package='x', version='1.0.0')   # same bytes: fine
    f.write_bytes(b'two')
    with pytest.raises(F.FetchError, match='checksum mismatch'):
        F.record_checksum(f, tmp_path/'ck.json', package='x', version='1.0.0')


def test_deb_unpacks_without_dpkg(tmp_path, monkeypatch):
    # a minimal .deb (ar archive holding data.tar.gz), unpacked by the pure-python path
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tf:
        payload = b'<svg/>'; ti = tarfile.TarInfo('./usr/share/openclipart/svg/a.svg'); ti.size = len(payload)
        tf.addfile(ti, io.BytesIO(payload))
    members = [('debian-binary', b'2.0\n'), ('control.tar.gz', b''), ('data.tar.gz', buf.getvalue())]
    ar = b'!<arch>\n'
    for name, body in members:
        ar += f'{name + "/":<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n'.encode() + body + (b'\n' if len(body) % 2 else b'')
    deb = tmp_path/'p_1_all.deb'; deb.write_bytes(ar)
    monkeypatch.setenv('PATH', str(tmp_path))                 # no dpkg-deb
    d = F.unpack(deb, tmp_path/'out')
    assert (d/'usr/share/openclipart/svg/a.svg').read_bytes() == b'<svg/>'


def test_cli_rejects_unknown_source(capsys):
    # the config check raises a ValueError naming the source; the CLI prints it and exits 2 (before fetching anything)
    with pytest.raises(ValueError, match='nope'):
        S.web_config({'sources': 'nope'})
    assert cli.main(['data', 'build', 'web', '--sources', 'nope']) == 2
    assert 'nope' in capsys.readouterr().err


def test_cli_help_lists_the_web_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(['data', 'build', 'web', '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ['--profile', '--sources', '--exclude-noncommercial', '--workers', '--name', '--limit', '--resolution', '--out',
                 '--overwrite', '--set']:
        assert flag in out, flag


def test_cli_builds_from_flags(tmp_path, capsys):
    argv = ['data', 'build', 'web', '--sources', 'iconify,openclipart', '--limit', '5', '--workers', '1', '--name', 'clitest',
            '--out', str(tmp_path/'x'), '--set', f'local_root={FIX}', f'cache_dir={tmp_path/"cache"}', 'write_card=false']
    assert cli.main(argv) == 0
    assert f"{tmp_path/'x'}: 5 samples" in capsys.readouterr().out   # path, samples written, seconds, MB
    man = adata.read_manifest(tmp_path/'x')
    assert len(man) == 5 and set(man.source) <= {'iconify', 'openclipart'}
    assert json.loads((tmp_path/'x'/'corpus.json').read_text())['name'] == 'clitest-iconify+openclipart-n5'
    assert cli.main(['data', 'build', 'web', '--profile', 'smoke', '--exclude-noncommercial', '--sources', 'emoji', '--out', str(tmp_path/'y'),
                     '--set', f'local_root={FIX}', f'cache_dir={tmp_path/"cache"}', 'write_card=false', "emoji_vendors=google,twitter"]) == 0
    assert 'samples' in capsys.readouterr().out


def test_cli_style_call(tmp_path):
    # build_web(config_from_dict(WebConfig, ...), out_dir=...) with list fields given as 'a,b' strings (as --set gives them)
    from alchemist.core import config_from_dict
    cfg = config_from_dict(S.WebConfig, dict(local_root=str(FIX), sources='iconify', limit=4, workers=1, write_card=False,
                                             cache_dir=str(tmp_path/'cache')))
    out = S.build_web(cfg, out_dir=tmp_path/'x')
    assert out == tmp_path/'x' and len(adata.read_manifest(out)) == 4
    assert set(adata.read_manifest(out).source) == {'iconify'}
