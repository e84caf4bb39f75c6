"""Route explanations: which condition failed, with the instance's value and the wanted one."""

from worklist.routing import InstanceFacts, Route, choose_route, explain_routes, no_route_reason


def facts(modality: str, body_part: str = "", *, series_description: str = "Patient Name in here",
          calling_ae_title: str = "PACS") -> InstanceFacts:
    return InstanceFacts(sop_instance_uid="1.2.3.4", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                         series_instance_uid="1.2.3", modality=modality, body_part=body_part,
                         series_description=series_description, calling_ae_title=calling_ae_title, path="x")


CXR = Route(name="cxr", modalities=frozenset({"CR", "DX"}), body_parts=frozenset({"CHEST"}))
HEAD = Route(name="head", modalities=frozenset({"CT"}), body_parts=frozenset({"HEAD"}),
             series_description="^AX", calling_ae_titles=frozenset({"SCANNER"}))


def test_each_route_says_which_conditions_the_closest_instance_fails():
    study = [facts("CT", "ABDOMEN"), facts("CR", "ABDOMEN")]
    cxr, head = explain_routes((CXR, HEAD), study)
    assert (cxr.matched, [str(m) for m in cxr.mismatches]) == (0, ["body part is ABDOMEN, wanted CHEST"])
    assert head.matched == 0
    assert [m.condition for m in head.mismatches] == ["body part", "calling AE title", "series description"]
    assert "series description does not match /^AX/" in [str(m) for m in head.mismatches]
    assert not any("Patient Name" in str(m) for m in head.mismatches)  # header text is never quoted
    assert no_route_reason([cxr, head]) == "cxr: body part; head: body part, calling AE title, series description"
    assert choose_route((CXR, HEAD), study) is None


def test_a_matching_route_counts_its_instances_and_the_reason_for_one_route_is_a_word():
    study = [facts("DX", "chest"), facts("DX", "CHEST"), facts("CT")]
    [verdict] = explain_routes((CXR,), study)
    assert (verdict.matched, verdict.mismatches) == (2, ())
    [verdict] = explain_routes((CXR,), [facts("MR", "CHEST")])
    assert no_route_reason([verdict]) == "modality"
    assert no_route_reason([]) == "no routes"
