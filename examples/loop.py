"""Play the documentation loop against a running service, printing each real request and answer.

    python examples/loop.py [http://127.0.0.1:8080]

1. sign an MRI order whose record does not show enough conservative care;
2. fetch the documentation questionnaire package for the annotated order;
3. answer it (keeping what the record pre-filled) and sign again with the
   completed QuestionnaireResponse attached to the order (supportingInfo).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
SIGN = "/cds-services/crd-order-sign"


def coverage_info(response: dict[str, Any]) -> dict[str, Any]:
    ext = response["systemActions"][0]["resource"]["extension"][-1]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}


def show(title: str, value: Any) -> None:
    print(f"\n## {title}\n{json.dumps(value, indent=2, ensure_ascii=False)[:1800]}")


def complete(questionnaire: dict[str, Any], prefill: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Keep the pre-filled answers and add the clinician's."""
    given = {i["linkId"]: i["answer"] for g in prefill.get("item", []) for i in g.get("item", [])}
    items = []
    for group in questionnaire["item"]:
        children = []
        for item in group["item"]:
            if item["linkId"] in extra:
                value = extra[item["linkId"]]
                answer = [{"valueInteger": value}] if isinstance(value, int) else [{"valueCoding": {"code": value}}]
                children.append({"linkId": item["linkId"], "answer": answer})
            elif item["linkId"] in given:
                children.append({"linkId": item["linkId"], "answer": given[item["linkId"]]})
        if children:
            items.append({"linkId": group["linkId"], "item": children})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-1",
        "status": "completed",
        "questionnaire": prefill["questionnaire"],
        "authored": "2024-03-20T14:00:00Z",
        "item": items,
    }


def main(base: str) -> None:
    http = requests.Session()
    body = json.loads((HERE / "order-sign-mri-needs-documentation.json").read_text())
    first = http.post(base + SIGN, json=body, timeout=10).json()
    show("1. order-sign: coverage information", coverage_info(first))
    print("cards:", [c["summary"] for c in first["cards"]])

    order = first["systemActions"][0]["resource"]
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coverage", "resource": coverage}, {"name": "order", "resource": order}],
    }
    package = http.post(base + "/fhir/Questionnaire/$questionnaire-package", json=params, timeout=10).json()
    questionnaire, prefill = (e["resource"] for e in package["parameter"][0]["resource"]["entry"])
    show("2. $questionnaire-package: what the record already answers", prefill["item"])

    answered = complete(questionnaire, prefill, {"cc.weeks": 8, "mri.contraindication": "none"})
    again = copy.deepcopy(body)
    signed = again["context"]["draftOrders"]["entry"][0]["resource"]
    signed["contained"] = [answered]
    signed["supportingInfo"] = [{"reference": "#qr-1"}]
    second = http.post(base + SIGN, json=again, timeout=10).json()
    show("3. order-sign again, with the answers: coverage information", coverage_info(second))
    print("cards:", [c["summary"] for c in second["cards"]])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
