"""Card text a clinician reads in five seconds (issue 10 §1).

Two kinds of test. Golden texts: one order-sign answer per outcome (approve, not
met, contraindicated, documentation needed, outside the cohort, no CarePath),
rendered as the clinician sees the cards, reviewed in diffs under
``tests/golden/cards/`` (regenerate with ``UPDATE_GOLDEN=1``). And a lint over
every card the scenario library produces: no criterion id, value-set id, code
system, resource reference or Python repr; summaries under 140 characters, cut
only between words; the count of answers on a card is the number of questions
it lists.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_server.carepath_store import load_carepaths
from cds_server.engine import CarePath, Outcome
from cds_server.pipeline.card_detail import fit
from cds_server.pipeline.card_text import PlainWords
from cds_server.pipeline.dtr_response import open_questions
from cds_server.scenarios import SCENARIO_DIR, Scenario, hook_request, iter_scenarios, load_scenario, run_scenario
from cds_server.web.app import create_app
from tests.card_lint import criterion_ids, problems

GOLDEN = Path(__file__).parent / "golden" / "cards"
OUTCOMES = {
    "approved": "mri/met-failed-conservative-care",
    "not-met": "mri/combination-medication-answered-none",
    "contraindicated": "mri/device-labelled-mr-unsafe",
    "documentation-needed": "mri/conservative-care-exactly-42-days",
    "outside-cohort": "mri/outside-cohort-shoulder-pain",
    "no-carepath": "routing/no-carepath-knee-mri-and-office-visit",
}
_NUMBERED = re.compile(r"^\d+\. ", re.MULTILINE)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Flask, list[date]]:
    """One app for many scenarios; each call happens on its scenario's own date (``today[0]``)."""
    today = [date(2024, 3, 20)]
    db = tmp_path_factory.mktemp("cards") / "c.sqlite"
    flask_app = create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{db}",
            "CLOCK": lambda: datetime.combine(today[0], datetime.min.time(), UTC).replace(hour=15),
            "PUBLIC_BASE_URL": "https://cds.payer.example",
        }
    )
    return flask_app, today


def cards_for(app: tuple[Flask, list[date]], scenario: Scenario) -> list[dict[str, Any]]:
    flask_app, today = app
    today[0] = scenario.evaluation_date
    response = flask_app.test_client().post("/cds-services/crd-order-sign", json=hook_request(scenario))
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["cards"])


def rendered(cards: list[dict[str, Any]]) -> str:
    """The cards as an EHR shows them, with generated numbers and signed links replaced."""
    parts = []
    for card in cards:
        parts.append(f"## [{card['indicator']}] {card['summary']}\n")
        if card.get("detail"):
            parts.append(card["detail"] + "\n")
        parts += [f"- link: {link['label']}" for link in card.get("links", [])]
        parts += [f"- suggestion: {s['label']}" for s in card.get("suggestions", [])]
        parts.append("")
    text = "\n".join(parts) or "(no cards: the coverage information on the order says it all)\n"
    text = re.sub(r"PA-[0-9A-Z]{10}", "PA-<number>", text)
    return re.sub(r"\]\(https://cds\.payer\.example/determinations/[^)]*\)", "](<decision page>)", text)


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_golden_card_text(outcome: str, app: tuple[Flask, list[date]]) -> None:
    scenario = load_scenario(SCENARIO_DIR / f"{OUTCOMES[outcome]}.json")
    got = rendered(cards_for(app, scenario))
    target = GOLDEN / f"{outcome}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(got)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{target} was missing in CI; generate goldens locally and commit them")
    assert got == target.read_text(), f"{target} differs: review, then UPDATE_GOLDEN=1"


def test_the_count_on_the_card_is_the_questions_the_decision_still_needs(
    app: tuple[Flask, list[date]], neck_pain: CarePath
) -> None:
    scenario = load_scenario(SCENARIO_DIR / f"{OUTCOMES['documentation-needed']}.json")
    (decision,) = run_scenario(scenario, [neck_pain])
    assert decision.outcome is Outcome.DOCUMENTATION_NEEDED
    card = cards_for(app, scenario)[0]
    still_open = open_questions(decision)  # the questionnaire's required, unanswered items
    assert card["summary"].endswith(f": {len(still_open)} answers needed for prior authorization")
    assert len(_NUMBERED.findall(card["detail"])) == len(still_open) == 2  # weeks (record: a lower bound), HEP start


def test_every_card_of_the_scenario_library_reads_as_plain_words(app: tuple[Flask, list[date]]) -> None:
    ids = criterion_ids(load_carepaths())
    found = []
    for scenario in iter_scenarios():
        if not scenario.record_available:
            continue  # a request cannot say the record is unavailable
        for card in cards_for(app, scenario):
            found += [f"{scenario.name}: {p}" for p in problems(card, ids) + _count_problems(card)]
    assert not found, "\n".join(found[:20])


def _count_problems(card: dict[str, Any]) -> list[str]:
    """ "N answers needed" must list N questions; a word before "…" must be whole (it is in the detail)."""
    out = []
    count = re.search(r": (\d+) answers? needed", card["summary"])
    if count and len(_NUMBERED.findall(card.get("detail", ""))) != int(count.group(1)):
        out.append(f"summary counts {count.group(1)} answers, detail lists another number")
    cut = re.search(r"(\w+)…", card["summary"])
    if cut and not re.search(rf"\b{cut.group(1)}\b", card.get("detail", ""), re.IGNORECASE):
        out.append(f"summary cut mid-word: {card['summary']!r}")
    return out


def test_lint_catches_what_issue_10_saw(neck_pain: CarePath) -> None:
    """The lint is not vacuous: each complaint of the issue is caught."""
    ids = criterion_ids([neck_pain])
    bad = {
        "detail": "✗ not met (MRI-I1; Service) VS-RF-GAIT answered 'False' C106047 (Thesaurus.owl) "
        "11 (Place\\_of\\_Service\\_Code\\_Set) in Device/scs; pregnancy test = 10828004",
        "summary": "x" * 140,
    }
    found = " ".join(problems(bad, ids))
    for name in ("criterion id", "value-set id", "Python repr", "code system", "resource reference", "raw code", "140"):
        assert name in found, name


def test_fit_cuts_between_words_only() -> None:
    text = "MRI of the cervical spine: not approved — pain fell by at least thirty percent since therapy began"
    assert fit(text, 60) == "MRI of the cervical spine: not approved — pain fell by at…"
    assert fit("short", 60) == "short"
    assert len(fit(text, 60)) <= 60


def test_plain_words_name_codes_answers_and_record_places(neck_pain: CarePath) -> None:
    words = PlainWords(neck_pain)
    assert words.fact("M54.2 (icd-10-cm) is the order's reason") == "Cervicalgia is the order's reason"
    assert words.fact("C106047 (Thesaurus.owl) in Device/scs on 2009-05-01") == (
        "Magnetic Resonance Unsafe in a device record on 2009-05-01"
    )
    assert words.fact("answered 'False' to “Saddle anesthesia?”") == "answered No to “Saddle anesthesia?”"
    assert "None of these" in words.fact("answered 'none' to “Presenting findings”")
    assert words.fact("none recorded (checked: VS-CLAUSTROPHOBIA in Condition, Observation)") == (
        "none recorded (checked: problem list, observations)"
    )
    assert words.fact("physicalTherapy: met (physical therapy); homeExercise: unknown; medication: not-met") == (
        "physical therapy: yes; home exercise: not documented; medication: no"
    )


def test_the_decision_page_colours_by_meaning_and_reads_parameters_as_words(app: tuple[Flask, list[date]]) -> None:
    """An absent contraindication is good news on the page; parameters never show as a Python dict."""
    flask_app, _ = app
    cards = cards_for(app, load_scenario(SCENARIO_DIR / f"{OUTCOMES['not-met']}.json"))
    url = re.search(r"\]\((https://cds\.payer\.example(/determinations/[^)]*))\)", cards[0]["detail"])
    assert url, "the decision card links its decision page"
    page = flask_app.test_client().get(url.group(2), headers={"Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    claustrophobia = html[html.index('id="c-MRI-NI3"') :][:400]
    assert 'class="tone good">not present' in claustrophobia, "a contraindication not present reads as good"
    assert 'class="tone bad">not met' in html[html.index('id="c-MRI-I2.combination"') :][:400]
    assert "{&#39;" not in html and "{'" not in html, "no Python dict on the page"
    assert "conservative care combination" in html and "all of (any of (physical therapy, home exercise)" in html
    assert "MRI-I2.combination" in html and "Evidence:" in html, "ids and evidence stay for the reviewer"
    css = flask_app.test_client().get("/static/decision.css")
    body, status = css.get_data(), css.status_code
    css.close()  # a static file is streamed: close it
    assert status == 200 and b".tone.good" in body
