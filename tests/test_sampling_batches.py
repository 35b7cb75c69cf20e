"""The batches of every sampler, recorded: a refactoring of lib.sampling must not change one id.

Each entry is the digest of the first 60 batches (over three epochs of 25, so that epoch
boundaries are covered) at seed 0 on two sources of synthetic groups, the digest of the
sampler's ``state_dict()`` after them (checkpoints of earlier runs must still load), and the
first three pairs in clear. Recorded from the samplers as they were before they became one
class per rule; a deliberate change of the batches must re-record them and say so.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from lib.sampling import build_sampler
from tests.test_sampling import make_groups

CASES = {
    "en": dict(name="en"), "xx": dict(name="xx"), "mono": dict(name="mono"), "cross": dict(name="cross"),
    "hybrid": dict(name="hybrid"), "hybrid-a0.2": dict(name="hybrid", alpha=0.2),
    "hybrid-a1": dict(name="hybrid", alpha=1.0), "hybrid-a0": dict(name="hybrid", alpha=0.0),
    "mono-T2-langs": dict(name="mono", source_temperature=2.0, languages=["de", "en", "es", "zh"]),
    "hybrid-T2-langs": dict(name="hybrid", alpha=0.3, source_temperature=2.0, languages=["de", "en", "es", "zh"]),
}

# label: (digest of the first 60 batches, digest of the state after them, first three pairs)
RECORDED = {
    "en": ("b39a49335ed49c50", "310fb155bcc185c8", [(190, 'en', 'en'), (290, 'en', 'en'), (192, 'en', 'en')]),
    "xx": ("5bba57be081b0680", "36cdadb9ed98fe4a", [(158, 'ar', 'ar'), (292, 'es', 'es'), (133, 'ar', 'ar')]),
    "mono": ("4b5a8598b592811a", "b59ef1aacea62e0e", [(260, 'es', 'es'), (100, 'es', 'es'), (54, 'es', 'es')]),
    "cross": ("6656f3d856169218", "6782ab4abb4416bc", [(125, 'es', 'hi'), (99, 'hi', 'de'), (228, 'vi', 'en')]),
    "hybrid": ("c81e1964d7fc8b5a", "bb27550e31ef599b", [(247, 'ar', 'de'), (218, 'es', 'zh'), (216, 'de', 'es')]),
    "hybrid-a0.2": ("6965259ff8711baf", "6f1a797dd6f202e9", [(247, 'ar', 'de'), (218, 'es', 'zh'), (216, 'de', 'es')]),
    "hybrid-a1": ("4b5a8598b592811a", "506b3f85eb1aeb81", [(260, 'es', 'es'), (100, 'es', 'es'), (54, 'es', 'es')]),
    "hybrid-a0": ("6656f3d856169218", "529999ee8735d5c9", [(125, 'es', 'hi'), (99, 'hi', 'de'), (228, 'vi', 'en')]),
    "mono-T2-langs": ("82738541e2948040", "bc8544a11c6331f9", [(313, 'es', 'es'), (354, 'es', 'es'), (305, 'es', 'es')]),
    "hybrid-T2-langs": ("116321e68aadcb85", "2f849188e9ece464", [(261, 'de', 'es'), (240, 'zh', 'de'), (117, 'zh', 'de')]),
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def groups():
    return make_groups(300, source="a", distinct_qids=240) + make_groups(120, source="b", seed=1)


@pytest.mark.parametrize("label", list(CASES))
def test_batches_are_those_recorded(groups, label):
    case = dict(CASES[label])
    sampler = build_sampler(case.pop("name"), groups, 8, seed=0, batches_per_epoch=25, **case)
    batches, iterator = [], iter(sampler)
    while len(batches) < 60:
        try:
            batches.append([tuple(pair) for pair in next(iterator)])
        except StopIteration:
            iterator = iter(sampler)
    batch_digest, state_digest, first = RECORDED[label]
    assert batches[0][:3] == first
    assert _digest(batches) == batch_digest
    assert _digest(sampler.state_dict()) == state_digest
