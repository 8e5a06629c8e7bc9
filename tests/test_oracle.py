"Tests of alchemist.oracle: a tiny oracle beats chance on every head, input formats, checkpoints, grading rules."
import json
import numpy as np, pytest
from alchemist.oracle import (HEADS, OracleConfig, attribute_accuracy, clean_dataset, labels_of, load_oracle, predict_attributes,
                              read_oracle, to_input, train_oracle)
from alchemist.synthetic import COLOURS, SyntheticConfig, generate_samples
from alchemist.data import images_to_tensor


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp('oracle')/'o16.pt'
    train_oracle(OracleConfig(resolution=16, n_train=2048, n_val=200, epochs=4, batch_size=64, threads=1, out=str(p)))
    return p, load_oracle(16, path=p, train_if_missing=False)


@pytest.fixture(scope='module')
def heldout():
    s = list(generate_samples(SyntheticConfig.clean(n=300, resolution=16, seed=777, uid_prefix='t')))
    return np.stack([x['image'] for x in s]), [x['attrs'] for x in s]


def test_accuracy_above_chance(tiny, heldout):
    _, o = tiny; x, attrs = heldout
    acc = attribute_accuracy(o, x, attrs)
    assert set(acc) == {*HEADS, 'all'}
    for k, v in HEADS.items(): assert acc[k] > 1 / len(v) + 0.2, (k, acc[k])
    assert acc['all'] > 0.3
    # the grade follows the claim: claiming another colour makes the colour accuracy collapse
    wrong = [{**a, 'colour': next(c for c in COLOURS if c != a['colour'])} for a in attrs]
    assert attribute_accuracy(o, x, wrong)['colour'] < 0.3


def test_input_formats(tiny, heldout):
    _, o = tiny; x, _ = heldout
    a = predict_attributes(o, x[:16])
    b = predict_attributes(o, images_to_tensor(x[:16]))
    assert list(a.columns) == [*HEADS, *[f'p_{k}' for k in HEADS]] and len(a) == 16
    assert a[list(HEADS)].equals(b[list(HEADS)])
    big = to_input(np.repeat(np.repeat(x[:4], 2, 1), 2, 2), 32)           # a 32 px image is resized to the oracle's 16 px
    assert predict_attributes(o, big).shape[0] == 4
    with pytest.raises(ValueError, match='NHWC'): predict_attributes(o, np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match='attribute dicts'): attribute_accuracy(o, x[:3], [{}] * 2)


def test_checkpoint_roundtrip_and_errors(tiny, heldout, tmp_path):
    p, o = tiny; x, _ = heldout
    o2 = read_oracle(p)
    assert predict_attributes(o2, x[:32]).equals(predict_attributes(o, x[:32]))
    assert o2.metrics['heldout']['colour'] > 0.5 and o2.cfg.resolution == 16
    with pytest.raises(FileNotFoundError, match='missing.pt'): load_oracle(16, path=tmp_path/'missing.pt', train_if_missing=False)
    (tmp_path/'bad.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='bad.pt'): read_oracle(tmp_path/'bad.pt')
    with pytest.raises(ValueError, match='16px oracle'): load_oracle(32, path=p)


def test_grading_rules():
    y = labels_of([dict(shape='circle', colour='red', size='small', count=1, position='centre', background='grey'),
                   json.dumps(dict(shape='square', colour='blue', size='tiny', count=3, position=None, background='black')),
                   dict(shape=None, colour=None, size=None, count=0, position=None, background='white')])
    pos = list(HEADS).index('position')
    assert y[0, pos] == list(HEADS['position']).index('centre')
    assert y[1, pos] == -1 and y[1, list(HEADS).index('size')] == -1     # position of 3 objects, 'tiny': not graded
    assert (y[2, :5] == -1).all() and y[2, 5] == list(HEADS['background']).index('white')
    x, yy = clean_dataset(5, 16, 0)
    assert x.shape == (5, 16, 16, 3) and yy.shape == (5, len(HEADS))
