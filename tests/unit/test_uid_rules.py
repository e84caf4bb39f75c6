"""One UID rule: engine.uids and its twin dicom_node.uids (dicom_node imports nothing of ours)
validate and hash UIDs identically, and no message ever carries part of a UID."""

from __future__ import annotations

import random
import string

import pytest

import dicom_node.uids as node_uids
import engine.uids as engine_uids

_SAMPLES = [
    None, "", "0", "1.2", "1.2\n", "1.02", "1..2", "1.2.", "../../x", "1." + "2" * 62, "1." + "2" * 63,
    "1.2.840.10008.5.1.4.1.1.1.1", "2.25.329800735698586629295641978511506172918", "?", 12, "é.1",
]


def _random_samples(count: int) -> list[str]:
    rng = random.Random(12)
    alphabet = string.digits * 4 + ".\n /"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 70))) for _ in range(count)]


@pytest.mark.parametrize("value", _SAMPLES + _random_samples(300))
def test_the_twins_are_identical(value):
    assert node_uids.is_valid_uid(value) == engine_uids.is_valid_uid(value)
    assert node_uids.short_uid(value) == engine_uids.short_uid(value)


def test_the_twins_have_the_same_source():
    """Same code, not only the same answers on the samples: change both or neither."""
    import inspect

    for name in ("is_valid_uid", "short_uid"):
        assert inspect.getsource(getattr(node_uids, name)) == inspect.getsource(getattr(engine_uids, name))


@pytest.mark.parametrize("uid", ["1.2.840.113619.2.55.3.604688119.969.1268071029.320", "1.2.3.4.5.6.7.8.9.10.11.12"])
def test_no_part_of_the_uid_appears_in_its_token(uid):
    token = engine_uids.short_uid(uid)
    assert len(token) == 8
    assert not any(uid[i : i + 4] in token for i in range(len(uid) - 3) if "." not in uid[i : i + 4])
    assert uid[-8:] not in token and uid[:8] not in token


def test_a_trailing_newline_is_not_a_valid_uid():
    """pydicom's UID.is_valid uses re.match with "$", which lets "1.2\\n" through; a path
    component must never end in a newline."""
    from pydicom.uid import UID

    assert UID("1.2\n").is_valid  # pydicom's rule, for the record
    assert not engine_uids.is_valid_uid("1.2\n")
    assert not node_uids.is_valid_uid("1.2\n")
