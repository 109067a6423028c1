"""``questionnaire``: print the DTR Questionnaire of a CarePath service, as the FHIR endpoint serves it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from cds_server.tools.common import CommandError, in_process_app

if TYPE_CHECKING:
    from flask import Flask


def register(commands: Any) -> None:
    """Add ``questionnaire`` to the command line."""
    questionnaire = commands.add_parser("questionnaire", help="print the DTR Questionnaire of a CarePath service")
    questionnaire.add_argument("service", metavar="SERVICE", help="service id (e.g. mri) or Questionnaire id")
    questionnaire.set_defaults(run=cmd_questionnaire)


def questionnaire_ids(app: Flask) -> dict[str, str]:
    """Map each name a user may type (service id, and Questionnaire id) to the Questionnaire id.

    A service id two CarePaths share maps to nothing: then only the full id is unambiguous.
    """
    from cds_server.pipeline.questionnaires import questionnaire_id

    names: dict[str, str] = {}
    shared: set[str] = set()
    for carepath in app.extensions["cds"].carepaths:
        for service in carepath.services:
            qid = questionnaire_id(carepath, service)
            names[qid] = qid
            if service.id in names and names[service.id] != qid:
                shared.add(service.id)
            names.setdefault(service.id, qid)
    return {name: qid for name, qid in names.items() if name not in shared}


def cmd_questionnaire(args: argparse.Namespace) -> int:
    """Print the Questionnaire exactly as GET /fhir/Questionnaire/<id> serves it."""
    with in_process_app() as app:
        names = questionnaire_ids(app)
        qid = names.get(args.service)
        if qid is None:
            services = sorted(n for n, q in names.items() if n != q)
            raise CommandError(f"unknown service {args.service!r}; available: {', '.join(services)}", code=2)
        response = app.test_client().get(f"/fhir/Questionnaire/{qid}")
    print(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
    return 0
