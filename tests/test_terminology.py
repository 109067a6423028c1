"""The terminology file and its lookups: shape, integrity, and the classifications the record reader relies on."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from cds_server.carepath_store import DEFAULT_TERMINOLOGY as DEFAULT_PATH
from cds_server.carepath_store import TERMINOLOGY_SCHEMA, load_terminology
from fhir_mappings.systems import ATC, ICD10CM, NDC, RXNORM, SNOMED
from fhir_mappings.terminology import InvalidTerminologyError, is_icd10cm_syntax
from fhir_mappings.terminology import parse_terminology as _parse


def parse_terminology(doc: dict) -> object:
    return _parse(doc, json.loads(TERMINOLOGY_SCHEMA.read_text(encoding="utf-8")))


ROOT = Path(__file__).resolve().parent.parent
CAREPATH = ROOT / "cds_server" / "carepaths" / "neck-pain.json"


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def term():
    return load_terminology()


def test_default_load_is_cached(term) -> None:
    assert load_terminology() is term
    assert load_terminology(DEFAULT_PATH) is term
    assert re.match(r"^\d{4}\.\d+\.\d+$", term.version)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["products"][3].pop("ingredients"), "$.products[3]"),
        (lambda d: d["products"][0].__setitem__("tty", "IN"), "$.products[0].tty"),
        (lambda d: d["ingredients"][2]["atc"].append("B01"), "$.ingredients[2].atc[1]"),
        (lambda d: d["maps"][1]["to"][0].__setitem__("code", "54.2"), "$.maps[1].to[0].code"),
        (lambda d: d["units"][0].__setitem__("factor", "1"), "$.units[0].factor"),
        (lambda d: d["systems"][0].__setitem__("policy", "some"), "$.systems[0].policy"),
    ],
)
def test_schema_rejects_malformed_file_with_its_path(doc, mutate, path) -> None:
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(InvalidTerminologyError) as err:
        parse_terminology(bad)
    assert str(err.value).startswith(path)


def test_malformed_file_on_disk_is_rejected(tmp_path, doc) -> None:
    bad = copy.deepcopy(doc)
    bad["products"][0]["ingredients"] = ["999999999"]
    path = tmp_path / "terminology.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(InvalidTerminologyError, match=r"^\$\.products\[0\]\.ingredients\[0\]"):
        load_terminology(path)


def test_every_product_ingredient_is_an_ingredient(doc) -> None:
    rxcuis = {i["rxcui"] for i in doc["ingredients"]}
    for row in doc["products"] + doc["ndc"]:
        assert set(row["ingredients"]) <= rxcuis, row


def test_no_duplicate_codes(doc) -> None:
    codes = [i["rxcui"] for i in doc["ingredients"]] + [p["code"] for p in doc["products"]]
    assert len(codes) == len(set(codes))
    ndcs = [n["code"] for n in doc["ndc"]]
    assert len(ndcs) == len(set(ndcs))
    sources = [(m["from"]["system"], m["from"]["code"]) for m in doc["maps"]]
    assert len(sources) == len(set(sources))
    names = [i["name"] for i in doc["ingredients"]]
    assert len(names) == len(set(names))


def test_every_source_is_cited(doc) -> None:
    for section in ("ingredients", "products", "ndc", "maps"):
        for row in doc[section]:
            assert row["source"].strip(), (section, row)


def test_map_targets_are_known_icd10cm_codes(doc, term) -> None:
    for row in doc["maps"]:
        assert row["mark"] in {"V", "L"}
        for target in row["to"]:
            assert target["system"] == ICD10CM
            assert is_icd10cm_syntax(target["code"]), row
            assert term.is_known((ICD10CM, target["code"]))


def test_warfarin_product_expands_to_ingredient_and_atc(term) -> None:
    assert term.expand((RXNORM, "855332")) >= {(RXNORM, "11289"), (ATC, "B01AA03")}
    assert (RXNORM, "855332") not in term.expand((RXNORM, "855332"))
    assert term.is_known((RXNORM, "855332"))


def test_ingredient_expands_to_its_atc_only(term) -> None:
    assert term.expand((RXNORM, "1364430")) == {(ATC, "B01AF02")}


def test_brand_text_classifies_to_ingredient(term) -> None:
    assert (RXNORM, "1364430") in term.classify_text("Eliquis 5 MG Oral Tablet")
    assert (RXNORM, "1364430") in term.classify_text("ELIQUIS 5mg tab")
    assert (RXNORM, "1364430") in term.classify_text("apixaban [Eliquis]")
    assert (RXNORM, "29046") in term.classify_text("Lisinopril 10 MG Oral Tablet")
    assert (RXNORM, "11289") in term.classify_text("Warfarin Sodium 5 MG Oral Tablet")
    assert (ATC, "B01AA03") in term.classify_text("Warfarin Sodium 5 MG Oral Tablet")


def test_text_matches_whole_words_only(term) -> None:
    assert term.classify_text("") == frozenset()
    assert term.classify_text("Physical therapy twice weekly") == frozenset()
    # "morphine" inside "hydromorphone" is not morphine
    assert (RXNORM, "7052") not in term.classify_text("hydromorphone 2 MG Oral Tablet")


def test_neck_pain_snomed_expands_to_cervicalgia(term) -> None:
    assert term.expand((SNOMED, "81680005")) == {(ICD10CM, "M54.2")}
    assert term.is_known((SNOMED, "81680005"))
    assert (ICD10CM, "M54.2") not in term.expand((SNOMED, "279039007"))


def test_local_and_unknown_codes_are_not_known(term) -> None:
    assert not term.is_known(("urn:oid:1.2.840.114350.1.13.0.1.7.2.698288", "12345"))
    assert not term.is_known((SNOMED, "999999999999"))
    assert not term.is_known((RXNORM, "999999999"))
    assert term.expand((SNOMED, "999999999999")) == frozenset()


def test_complete_systems_are_known(term) -> None:
    assert term.is_known((ICD10CM, "Z99.89"))
    assert term.is_known(("urn:oid:2.16.840.1.113883.6.90", "m54.2"))
    assert term.is_known((ATC, "B01AC04"))


def test_with_known_adds_codes_without_changing_the_original(term) -> None:
    code = ("http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "C106047")
    wider = term.with_known([code, (SNOMED, "22325002")])
    assert wider.is_known(code) and wider.is_known((SNOMED, "22325002"))
    assert not term.is_known(code)


def test_ndc_layouts_normalise(doc) -> None:
    """Every printed layout of a listed NDC reads as that package (a synthetic row: the shipped list is empty)."""
    with_ndc = copy.deepcopy(doc)
    with_ndc["ndc"] = [{"code": "00056017270", "display": "test row", "ingredients": ["11289"], "source": "test"}]
    term = parse_terminology(with_ndc)
    for layout in ("00056017270", "00056-0172-70", "0056-0172-70"):
        assert (RXNORM, "11289") in term.expand((NDC, layout)), layout
        assert term.is_known((NDC, layout))


def test_an_unlisted_ndc_is_not_understood(term) -> None:
    """NDC is a listed system: a package the file does not map is not understood (fail closed), never 'no drug'."""
    assert not term.is_known((NDC, "00056-0172-70"))
    assert term.expand((NDC, "00056-0172-70")) == frozenset()


def test_platelet_units(term) -> None:
    assert term.to_unit("platelets", 150000, "/uL") == pytest.approx(150)
    assert term.to_unit("platelets", 150000, "/mm3") == pytest.approx(150)
    assert term.to_unit("platelets", 150, "10*9/L") == pytest.approx(150)
    assert term.to_unit("platelets", 150, "K/uL") == pytest.approx(150)
    assert term.to_unit("platelets", 150, "furlongs") is None


def test_glucose_hba1c_inr_units(term) -> None:
    assert term.to_unit("glucose", 10, "mmol/L") == pytest.approx(180.16)
    assert term.to_unit("glucose", 180, "mg/dL") == pytest.approx(180)
    assert term.to_unit("hba1c", 53, "mmol/mol") == pytest.approx(7.0, abs=0.05)
    assert term.to_unit("inr", 2.5, "") == pytest.approx(2.5)
    assert term.to_unit("inr", 2.5, "{INR}") == pytest.approx(2.5)


def _carepath_rxnorm() -> list[tuple[str, str, str]]:
    data = json.loads(CAREPATH.read_text(encoding="utf-8"))
    out = []
    for vs in data["valueSets"]:
        for row in vs.get("include", []):
            if row["system"] == RXNORM:
                out.append((vs["id"], row["code"], row.get("display", "")))
    return out


@pytest.mark.parametrize(("vs_id", "rxcui", "display"), _carepath_rxnorm())
def test_carepath_ingredients_are_listed_with_matching_name(doc, vs_id, rxcui, display) -> None:
    by_rxcui = {i["rxcui"]: i for i in doc["ingredients"]}
    assert rxcui in by_rxcui, f"{vs_id}: RxCUI {rxcui} ({display}) is not an ingredient"
    assert by_rxcui[rxcui]["name"] == display.split("(")[0].strip().lower(), vs_id


def test_a_conversion_remembered_per_unit_converts_as_the_unit_table_says() -> None:
    # convert() remembers, per unit and targets, which conversion applies; every answer must be the one the
    # table gives when asked afresh (the first quantity whose canonical unit is wanted and lists the unit).
    term = load_terminology()

    def afresh(value: float, unit: str, targets: list[str]) -> float | None:
        key = "".join((unit or "").split()).lower()
        wanted = ["".join(t.split()).lower() for t in targets]
        if key in wanted:
            return value
        for quantity, canonical in term.canonical_units.items():
            if "".join(canonical.split()).lower() in wanted and term.to_unit(quantity, value, unit) is not None:
                return term.to_unit(quantity, value, unit)
        return None

    spellings = sorted({unit for _, unit in term.units} | {"", "mg", "K/uL", "10^3/UL", "% ", "nonsense"})
    canonicals = sorted(set(term.canonical_units.values())) + ["mg/dL", "nonsense"]
    for unit in spellings:
        for targets in ([c] for c in canonicals):
            for value in (0.0, 7.25, 250.0):
                assert term.convert(value, unit, targets) == afresh(value, unit, targets)
                assert term.convert(value, unit, targets) == afresh(value, unit, targets)  # remembered
