import pytest

from dicom_node.uids import is_valid_uid, short_uid


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.2", "2.25.0", "0", "1." + "2" * 62])
def test_valid_uids(uid):
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "../../x",
        "1.2/../3",
        "1.2.03",
        "1..2",
        "1.2.",
        ".1.2",
        "1.2.abc",
        "1.2 ",
        "1.2\n",
        "1." + "2" * 63,
        None,
        12,
    ],
)
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)


def test_short_uid_is_stable_short_and_does_not_contain_the_uid():
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert short_uid(uid) == short_uid(uid)
    assert len(short_uid(uid)) == 8 and uid not in short_uid(uid)
    assert short_uid(uid) != short_uid(uid + "1")
    assert short_uid(None) == "-"
