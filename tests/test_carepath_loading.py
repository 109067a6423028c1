"""CarePath files are validated when they load; a broken file names the JSON path at fault."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_carepath, load_carepaths, load_schema, read_document
from cds_server.engine import CarePath, InvalidCarePathError, compile_carepath
from cds_server.engine.operators import REGISTRY

DOC: dict[str, Any] = read_document(DEFAULT_CAREPATHS[0])


def broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    mutate(doc)
    return doc


def service(doc: dict[str, Any], service_id: str) -> dict[str, Any]:
    return next(s for s in doc["services"] if s["id"] == service_id)


def load(doc: Any, overrides: dict[str, Any] | None = None) -> CarePath:
    return compile_carepath(doc, load_schema(), overrides, source="test.json")


def test_shipped_carepath_loads(neck_pain: CarePath) -> None:
    assert (neck_pain.id, neck_pain.version, neck_pain.effective) == ("neck-pain", "3.0.0", "2023-01-13")
    assert len(neck_pain.services) == 9


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (lambda d: d.update(formatVersion=2), "$.formatVersion", "unsupported format version 2"),
        (lambda d: d.pop("cohort"), "$", "'cohort' is a required property"),
        (lambda d: d.update(version="three"), "$.version", "does not match"),
        (
            lambda d: service(d, "mri")["criteria"]["indications"]["any"][0]["all"][0].pop("cite"),
            "$.services[1].criteria.indications.any[0].all[0]",
            "'cite' is a required property",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["indications"]["any"][0]["all"][0].update(op="coded_findings"),
            "$.services[1].criteria.indications.any[0].all[0].op",
            "unknown operator 'coded_findings'",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["indications"]["any"][0]["all"][0]["args"].update(
                lookbackDays="soon"
            ),
            "$.services[1].criteria.indications.any[0].all[0].args.lookbackDays",
            "'soon' is not of type",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["indications"]["any"][0]["all"][0]["args"].update(
                valueSets=["VS-NOPE"]
            ),
            "$.services[1].criteria.indications.any[0].all[0].args.valueSets[0]",
            "unknown value set 'VS-NOPE'",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["indications"]["any"][0]["all"][0]["answer"].update(linkId="x.y"),
            "$.services[1].criteria.indications.any[0].all[0].answer.linkId",
            "unknown question linkId 'x.y'",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["nonIndications"]["any"][1].update(id="MRI-NI1"),
            "$.services[1].criteria.nonIndications.any[1].id",
            "duplicate criterion id 'MRI-NI1'",
        ),
        (
            lambda d: service(d, "mri")["criteria"]["nonIndications"]["any"][0]["args"].update(
                lookbackDays={"param": "nope"}
            ),
            "$.services[1].criteria.nonIndications.any[0].args.lookbackDays",
            "unknown parameter 'nope'",
        ),
        (
            lambda d: service(d, "facet-subsequent")["criteria"]["indications"]["all"][0].update(ref="FI-I9"),
            "$.services[5].criteria.indications.all[0].ref",
            "reference to unknown criterion 'FI-I9'",
        ),
        (lambda d: d["valueSets"].append(copy.deepcopy(d["valueSets"][0])), "$.valueSets[", "duplicate value set id"),
        (
            lambda d: d["valueSets"][0]["include"][0].update(code="M54 2"),
            "$.valueSets[0].include[0].code",
            "does not match",
        ),
        (
            lambda d: service(d, "mri").update(
                codes=[{"system": "http://example.org", "code": "x", "display": "x", "role": "claim-only"}]
            ),
            "$.services[1].codes",
            "at least one code with role 'order'",
        ),
    ],
)
def test_broken_file_names_the_json_path(mutate: Any, path: str, message: str) -> None:
    with pytest.raises(InvalidCarePathError) as info:
        load(broken(mutate))
    assert info.value.path.startswith(path), str(info.value)
    assert message in info.value.message, str(info.value)
    assert str(info.value).startswith("test.json: ")


def test_json_syntax_errors_are_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"formatVersion": 1,\n "id": }')
    with pytest.raises(InvalidCarePathError, match=r"bad\.json: \$: not valid JSON: .*line 2"):
        load_carepath(path)


def test_parameter_overrides_are_checked() -> None:
    assert load(DOC, {"mriCareWeeks": 8}).parameters["mriCareWeeks"].value == 8
    with pytest.raises(InvalidCarePathError, match="does not declare"):
        load(DOC, {"noSuchParameter": 1})
    with pytest.raises(InvalidCarePathError, match="must be of type int"):
        load(DOC, {"mriCareWeeks": "eight"})


def test_overrides_flow_into_criteria() -> None:
    strict = load(DOC, {"mriMalignancyInfectionIndication": True})
    assert "MRI-I10" in strict.nodes
    assert "MRI-I10" not in load(DOC).nodes


def test_switching_off_every_part_of_a_group_is_an_error() -> None:
    def only_switchable(d: dict[str, Any]) -> None:
        node = service(d, "mri")["criteria"]["indications"]
        node["any"] = [n for n in node["any"] if n["id"] == "MRI-I10"]

    with pytest.raises(InvalidCarePathError, match="switched off"):
        load(broken(only_switchable))


def test_two_carepaths_with_one_id_are_rejected() -> None:
    with pytest.raises(InvalidCarePathError, match="loaded twice"):
        load_carepaths((DEFAULT_CAREPATHS[0], DEFAULT_CAREPATHS[0]))


def test_schema_is_itself_valid_json_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_every_operator_documents_itself_and_has_an_argument_schema() -> None:
    for name, op in REGISTRY.items():
        assert op.doc, f"{name} has no docstring"
        assert op.schema["type"] == "object" and op.schema["additionalProperties"] is False


def test_file_declares_its_schema() -> None:
    assert json.loads(DEFAULT_CAREPATHS[0].read_text())["$schema"] == "./carepath.schema.json"


def test_switching_off_a_criterion_switches_off_references_and_alternatives_that_depend_on_it() -> None:
    carepath = load(DOC, {"facetLimitLevels": False})
    assert "FI-F1" not in carepath.nodes and "FS-F1" not in carepath.nodes
    facet = carepath.service("facet-initial")
    assert "frequency" not in facet.groups
    assert all(a["id"] != "two-levels-per-session" for a in facet.alternatives)
