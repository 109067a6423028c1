"""One hook call, as a pipeline of stages, each in its own module and each called once, in order.

request (``request``: the envelope, context and CRD extensions checked) → orders (``orders``:
in scope, for this patient, valid FHIR) → the record (``patient_data``: Coverage and history
from the prefetch, then the EHR) → decisions (``decide``: the engine, coverage information) →
the answer and the unit of work (``keep``: authorization numbers, cards and system actions
from ``answer``, and everything the call did kept in one transaction). Each stage raises a
:class:`~cds_server.errors.ServiceError` for the HTTP layer to answer, or returns data for the
next one; none calls back into another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_server.pipeline.call import CallResult, Runtime
from cds_server.pipeline.decide import decide
from cds_server.pipeline.keep import Invocation, answer_and_keep
from cds_server.pipeline.orders import find_orders
from cds_server.pipeline.patient_data import check_coverage, gather, history_problem
from cds_server.pipeline.request import fhir_client, validate_request
from hooks import HookService


def handle(
    runtime: Runtime,
    service: HookService,
    body: Any,
    invocation: Invocation,
    base_url: str = "",
    requester: Mapping[str, Any] | None = None,
) -> CallResult:
    """Run one hook call through every stage and return its response, kept with ``invocation``'s row.

    ``requester``: the verified token's claims (authentication on); ``invocation(status, answer)``:
    the invocation row the web layer keeps, written in the call's one transaction.
    """
    call = validate_request(service, body, runtime.settings["CRD_VERSIONS"], runtime.clock())
    call.requester = requester or {}
    call.client = fhir_client(runtime, call)
    pairs = find_orders(call, runtime.carepaths, int(runtime.settings["MAX_ORDERS_PER_CALL"]))
    data = gather(runtime, call, [order for _, order in pairs])
    coverage = check_coverage(runtime, call, data)
    days = [order.authored_on or call.today for _, order in pairs]
    technical = history_problem(data) if coverage.usable_for_any(days) else None
    results = decide(runtime, call, pairs, data, coverage, technical)
    response = answer_and_keep(runtime, call, results, base_url, invocation)
    return CallResult(response, results, coverage)
