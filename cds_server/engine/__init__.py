"""The decision core: CarePaths compiled from data, evaluated against FHIR facts.

Charter (enforced by tests/test_purity.py): no Flask, no HTTP, no files, no
database, no clock. Everything comes in as arguments (the compiled CarePath,
the draft orders, the patient's record, the evaluation date) and everything
goes out as result objects that explain themselves criterion by criterion.
The engine never names a guideline, service, code or drug: all of that is
data in a CarePath file.
"""

from cds_server.engine.compile import InvalidCarePathError, compile_carepath
from cds_server.engine.evaluate import evaluate_orders
from cds_server.engine.logic import Tri
from cds_server.engine.model import CarePath
from cds_server.engine.result import CriterionResult, OrderDecision, Outcome
from cds_server.engine.routing import governs

__all__ = [
    "governs",
    "CarePath",
    "CriterionResult",
    "InvalidCarePathError",
    "OrderDecision",
    "Outcome",
    "Tri",
    "compile_carepath",
    "evaluate_orders",
]
