"Tests of alchemist.encoders: the frozen MiniLM encoder (shapes, masks, the sentence embedding) and the per-corpus caption cache."
import pytest, torch

from alchemist.encoders import TextEncoder, caption_embeddings, encode_to_cache, rows_for, TEXT_DIM
from alchemist.data import read_manifest
from alchemist.toy import toy_corpus

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def enc():
    return TextEncoder(max_tokens=8, batch_size=2)


def test_shapes_mask_and_norm(enc):
    tb = enc.encode(['a red circle', 'three small green triangles at the bottom right of a grey background', ''])
    assert tb.tokens.shape == (3, 8, TEXT_DIM) and tb.mask.shape == (3, 8) and tb.pooled.shape == (3, TEXT_DIM)
    assert tb.mask.dtype == torch.bool
    assert tb.mask.sum(1).tolist() == [5, 8, 2]          # [CLS] a red circle [SEP]; long caption cut at 8; empty = [CLS][SEP]
    assert torch.all(tb.tokens[~tb.mask] == 0)
    assert torch.allclose(tb.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_order_independent(enc):
    caps = ['a blue square', 'a red circle at the top', 'noise']
    a, b = enc.encode(caps), enc.encode(caps[::-1])
    assert torch.allclose(a.pooled, b.pooled.flip(0), atol=1e-5) and torch.allclose(a.tokens, b.tokens.flip(0), atol=1e-4)


def test_semantics(enc):
    p = enc.encode(['a red circle', 'a crimson round disc', 'quarterly tax report']).pooled
    assert p[0] @ p[1] > p[0] @ p[2]


def test_bad_caption(enc):
    with pytest.raises(TypeError, match='caption 1'): enc.encode(['ok', 3])


def test_cache_roundtrip_and_rows(enc, tmp_path):
    a = encode_to_cache(tmp_path, ['x', 'y'], ['a red circle', 'a blue square'], max_tokens=8, encoder=enc)
    b = encode_to_cache(tmp_path, ['x', 'y'], ['a red circle', 'a blue square'], max_tokens=8)   # from disk, no encoder built
    assert torch.equal(a.tokens, b.tokens) and a.tokens.dtype == torch.float16 and a.uids == ['x', 'y']
    assert rows_for(a, ['y']).uids == ['y']
    with pytest.raises(KeyError, match='zzz'): rows_for(a, ['zzz'])
    with pytest.raises(ValueError, match='max_tokens'): encode_to_cache(tmp_path, ['x'], ['other'], max_tokens=4, encoder=enc)


def test_caption_embeddings_manifest_order(enc, tmp_path):
    toy_corpus(tmp_path/'c', n=3, resolution=8)
    man = read_manifest(tmp_path/'c')
    tb = caption_embeddings(tmp_path/'c', max_tokens=8)
    assert tb.uids == man.uid.tolist()
    ref = enc.encode(man.caption.tolist())
    assert torch.allclose(tb.pooled.float(), ref.pooled, atol=2e-3)
    assert any((tmp_path/'c'/'cache').iterdir())
