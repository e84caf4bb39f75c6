"""docs/conformance.md is generated from the code that negotiates and cannot drift from it."""

from __future__ import annotations

from dicom_node.conformance import ACCEPTED_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES, StoreStatus
from radground.conformance_doc import (
    CONFORMANCE_PATH,
    NODE_SETTINGS_OUTSIDE_POLICY,
    OUTPUT_SOP_CLASSES,
    POLICY_SETTINGS,
    REGENERATE_COMMAND,
    STORE_STATUS_CONDITIONS,
    main,
    render_conformance_statement,
)
from radground.settings import NodeSettings
from worklist.own_outputs import OUTPUT_SOP_CLASSES as RECOGNISED_OWN_OUTPUTS


def test_committed_conformance_statement_matches_the_code():
    committed = CONFORMANCE_PATH.read_text(encoding="utf-8") if CONFORMANCE_PATH.is_file() else ""
    assert committed == render_conformance_statement(), (
        f"docs/conformance.md differs from what the code negotiates; regenerate it with "
        f"`{REGENERATE_COMMAND}` and commit it"
    )


def test_statement_lists_every_negotiated_syntax_class_and_status():
    text = render_conformance_statement()
    for uid in (*ACCEPTED_TRANSFER_SYNTAXES, *STORAGE_SOP_CLASSES):
        assert f"`{uid}`" in text, uid
    for name, value in vars(StoreStatus).items():
        if name.isupper():
            assert f"`0x{value:04X}`" in text, name


def test_every_store_status_constant_is_described():
    constants = {name for name in vars(StoreStatus) if name.isupper()}
    assert constants == set(STORE_STATUS_CONDITIONS), (
        "describe each StoreStatus constant in radground/conformance_doc.py STORE_STATUS_CONDITIONS"
    )


def test_statement_shows_the_association_policy_defaults():
    node = NodeSettings.model_validate({})
    text = render_conformance_statement()
    assert f"| {node.max_pdu_size} |" in text
    assert f"| {node.max_associations} |" in text
    assert f"AE `{node.ae_title}`" in text


def test_output_sop_classes_are_storage_classes_recognised_as_our_own():
    assert set(OUTPUT_SOP_CLASSES) <= set(STORAGE_SOP_CLASSES)
    assert set(OUTPUT_SOP_CLASSES) <= RECOGNISED_OWN_OUTPUTS


def test_check_mode_fails_on_a_stale_file_and_names_the_command(tmp_path, capsys):
    stale = tmp_path / "conformance.md"
    stale.write_text(render_conformance_statement().replace("0xA700", "0xA701"), encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert REGENERATE_COMMAND in capsys.readouterr().err
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


def test_every_node_setting_appears_in_the_statement():
    shown = {name for name, _ in POLICY_SETTINGS} | NODE_SETTINGS_OUTSIDE_POLICY
    assert set(NodeSettings.model_fields) == shown, (
        "add the new [node] setting to POLICY_SETTINGS in radground/conformance_doc.py"
    )
