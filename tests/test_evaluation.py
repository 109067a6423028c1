"""How evidence, answers and silence decide criteria, and how criteria decide the outcome."""

from __future__ import annotations

from datetime import date
from typing import Any

from cds_server.carepath_store import terminology_for
from cds_server.engine import CarePath, OrderDecision, Outcome, Tri, evaluate_orders
from fhir_mappings.orders import read_order
from fhir_mappings.record import PatientRecord
from tests import builders as b

TODAY = date(2024, 3, 20)


def decide(
    cp: CarePath,
    order: dict[str, Any],
    record: list[dict[str, Any]],
    available: bool = True,
    others: list[dict[str, Any]] = (),
) -> OrderDecision:  # type: ignore[assignment]
    orders = [read_order(order)] + [read_order(o, i + 1) for i, o in enumerate(others)]
    return evaluate_orders([cp], orders, PatientRecord(record, None, terminology_for([cp])), TODAY, available)[0]


def failed_care() -> list[dict[str, Any]]:
    """Nine weeks of therapy and ibuprofen with pain 7 -> 6: conservative care failed."""
    return [
        b.patient(),
        b.condition("neck", "M54.2", "2024-01-02"),
        b.procedure("pt1", "97110", "2024-01-15"),
        b.med_statement("ibu", "5640", "2024-01-10"),
        b.pain("s1", "2024-01-12", 7),
        b.pain("s2", "2024-03-10", 6),
    ]


def test_silent_record_leaves_indications_unknown_and_contraindications_absent(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), [b.patient()])
    assert d.outcome is Outcome.DOCUMENTATION_NEEDED
    assert d.criterion("MRI-I2.weeks").result is Tri.UNKNOWN
    ni = d.criterion("MRI-NI1")
    assert ni.result is Tri.NOT_MET and ni.reason.startswith("none recorded (checked: VS-MRI-UNSAFE-DEVICE")


def test_record_that_could_not_be_obtained_never_reads_as_absent(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), failed_care(), available=False)
    assert d.criterion("MRI-NI1").result is Tri.UNKNOWN
    assert d.outcome is Outcome.DOCUMENTATION_NEEDED, "never auto-approve on a record we did not see"


def test_failed_conservative_care_meets_mri_and_auto_approves(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), failed_care())
    assert d.outcome is Outcome.CRITERIA_MET and d.auto_approval
    assert d.criterion("MRI-I2.failed").evidence == ["Observation/s1", "Observation/s2"]
    assert d.questions == [] and d.failing == []


def test_suggestive_code_asks_and_the_answer_decides(neck_pain: CarePath) -> None:
    record = [*failed_care(), b.condition("pacer", "Z95.0")]
    d = decide(neck_pain, b.order("72141"), record)
    assert d.criterion("MRI-NI1").result is Tri.UNKNOWN
    assert d.outcome is Outcome.DOCUMENTATION_NEEDED and "mri.contraindication" in d.questions
    ok = decide(
        neck_pain, b.order("72141"), [*record, b.answers("q", "2024-03-19", [b.answer("mri.contraindication", "none")])]
    )
    assert ok.criterion("MRI-NI1").result is Tri.NOT_MET and ok.outcome is Outcome.CRITERIA_MET
    assert ok.answers_used == ["QuestionnaireResponse/q#mri.contraindication"]
    unsafe = decide(
        neck_pain,
        b.order("72141"),
        [*record, b.answers("q", "2024-03-19", [b.answer("mri.contraindication", "mr-unsafe-device")])],
    )
    assert unsafe.outcome is Outcome.CONTRAINDICATED and unsafe.failing == ["MRI-NI1"]


def test_decisive_record_evidence_beats_an_answer_denying_it(neck_pain: CarePath) -> None:
    device = {
        "resourceType": "Device",
        "id": "stim",
        "status": "active",
        "type": b.concept(b.SCT, "14106009"),
        "safety": [b.concept("http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "C106047")],
    }
    record = [*failed_care(), device, b.answers("q", "2024-03-19", [b.answer("mri.contraindication", "none")])]
    d = decide(neck_pain, b.order("72141"), record)
    assert d.outcome is Outcome.CONTRAINDICATED
    assert d.criterion("MRI-NI1").evidence == ["Device/stim"]


def test_answers_fill_what_the_record_does_not_show(neck_pain: CarePath) -> None:
    qr = b.answers(
        "q",
        "2024-03-19",
        [
            b.answer("cc.pt.completed", True),
            b.answer("cc.pt.start-date", "2023-12-01"),
            b.answer("cc.meds.classes", "nsaid"),
            b.answer("cc.failed", True),
        ],
    )
    d = decide(neck_pain, b.order("72141"), [b.patient(), b.condition("neck", "M54.2", "2023-11-01"), qr])
    assert d.criterion("MRI-I2").result is Tri.MET
    assert d.outcome is Outcome.CRITERIA_MET
    assert "QuestionnaireResponse/q#cc.failed" in d.answers_used


def test_answers_to_another_questionnaire_are_ignored(neck_pain: CarePath) -> None:
    qr = b.answers(
        "q", "2024-03-19", [b.answer("cc.failed", True)], questionnaire="http://other.example/Questionnaire/x"
    )
    d = decide(neck_pain, b.order("72141"), [*failed_care()[:4], qr])
    assert d.criterion("MRI-I2.failed").result is Tri.UNKNOWN


def test_only_questions_that_still_matter_are_asked(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), [b.patient(), b.condition("neck", "M54.2", "2024-01-02")])
    assert d.outcome is Outcome.DOCUMENTATION_NEEDED
    assert {"cc.failed", "rf.hyperreflexia", "mri.contraindication"} - set(d.questions) == {"mri.contraindication"}
    met = decide(neck_pain, b.order("72141"), failed_care())
    assert met.questions == [], "a met ANY does not ask for its unknown red flags"


def test_contraindication_wins_over_unmet_indications(neck_pain: CarePath) -> None:
    record = [
        b.patient(birth="1960-01-01"),
        b.condition("sepsis", "A41.9", "2024-03-10"),
        b.condition("neck", "M47.812", "2023-01-01"),
    ]
    d = decide(neck_pain, b.order("64490", reason="M47.812"), record)
    assert d.service_id == "facet-initial" and d.outcome is Outcome.CONTRAINDICATED
    assert d.failing == ["FI-NI1"]
    assert d.summary.startswith(
        "Initial facet injection / medial branch block: not appropriate because of Systemic infection"
    )


def test_authored_on_is_the_evaluation_date(neck_pain: CarePath) -> None:
    record = [b.patient(), b.condition("neck", "M54.2", "2024-01-20")]
    early = decide(neck_pain, b.order("97110", authored="2024-02-20", quantityQuantity={"value": 12}), record)
    assert early.evaluation_date == "2024-02-20"
    assert early.criterion("PT-I1").result is Tri.MET and early.criterion("PT-I2").result is Tri.NOT_MET
    late = decide(neck_pain, b.order("97110", quantityQuantity={"value": 12}), record)
    assert late.evaluation_date == "2024-03-20" and late.criterion("PT-I2").result is Tri.MET


def test_every_criterion_carries_its_citation_and_reason(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), failed_care())
    for root in d.criteria:
        for node in root.walk():
            assert node.cite and node.reason, node.id
    payload = d.to_dict()
    assert payload["carePath"] == {"id": "neck-pain", "version": "3.0.0"}
    assert payload["criteria"][0]["id"] == "MRI-I"


def test_parameters_used_are_reported_with_the_criterion(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("72141"), failed_care())
    assert d.criterion("MRI-I2.weeks").parameters == {"mriCareWeeks": 6}


def test_unlisted_code_needs_to_be_told_apart(neck_pain: CarePath) -> None:
    d = decide(neck_pain, b.order("64999"), [b.patient()])
    assert d.outcome is Outcome.DOCUMENTATION_NEEDED and d.service_id is None
    assert d.questions == ["svc.unlisted-kind"]
    by_text = decide(
        neck_pain,
        b.order("64999")
        | {"code": {"coding": [{"system": b.CPT, "code": "64999"}], "text": "Cervical synovial cyst aspiration"}},
        [b.patient()],
    )
    assert by_text.service_id == "facet-cyst-aspiration"
    qr = b.answers("q", "2024-03-19", [b.answer("svc.unlisted-kind", "rfa")])
    assert decide(neck_pain, b.order("64999"), [b.patient(), qr]).service_id == "rfa"


def test_prior_facet_injection_makes_the_request_subsequent(neck_pain: CarePath) -> None:
    record = [b.patient(), b.procedure("f1", "64490", "2023-12-01")]
    assert decide(neck_pain, b.order("64490"), record).service_id == "facet-subsequent"
    old = [b.patient(), b.procedure("f1", "64490", "2022-12-01")]
    assert decide(neck_pain, b.order("64490"), old).service_id == "facet-initial"


def test_a_ct_myelogram_is_recognised_from_its_companion_order(neck_pain: CarePath) -> None:
    companion = b.order("72240", oid="sr-myelo")
    d = decide(neck_pain, b.order("72126"), [b.patient()], others=[companion])
    assert d.criterion("CT-CTM").result is Tri.MET
    assert d.criterion("CT-CTM").evidence == ["ServiceRequest/sr-myelo"]
    plain = decide(neck_pain, b.order("72126"), [b.patient()])
    assert plain.criterion("CT-CTM").result is Tri.NOT_MET


def _steroid(route: tuple[str, str] | None) -> dict[str, Any]:
    """Methylprednisolone (RxNorm 6902) given once, by the route named (or none coded)."""
    given: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "mp",
        "status": "completed",
        "medicationCodeableConcept": b.concept(b.RXNORM, "6902"),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-10",
    }
    if route:
        given["dosage"] = {"route": b.concept(*route)}
    return given


def test_only_a_steroid_taken_by_mouth_counts_as_conservative_care(neck_pain: CarePath) -> None:
    """The guideline says "oral steroids": an intramuscular dose is not one (VS-ROUTE-ORAL)."""
    base = [r for r in failed_care() if r["id"] != "ibu"]
    intramuscular = decide(neck_pain, b.order("72141"), [*base, _steroid(("http://snomed.info/sct", "78421000"))])
    oral = decide(neck_pain, b.order("72141"), [*base, _steroid(("http://snomed.info/sct", "26643006"))])
    uncoded = decide(neck_pain, b.order("72141"), [*base, _steroid(None)])
    assert "oral corticosteroid" not in intramuscular.criterion("MRI-I2.combination").reason
    assert "oral corticosteroid" in oral.criterion("MRI-I2.combination").reason
    assert "oral corticosteroid" in uncoded.criterion("MRI-I2.combination").reason, "an uncoded route still counts"
