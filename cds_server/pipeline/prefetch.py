"""Prefetch templates, and getting the patient's data from prefetch or from the EHR.

The client may satisfy any subset of the templates (CDS Hooks §Prefetch): a
key it sends is used (``null`` = nothing there; an OperationOutcome = it
failed, so we query ourselves); a key it omits is fetched from ``fhirServer``
with the hook's token, all missing keys in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from cds_server.pipeline.fhir_client import FhirClient, FhirError, page_resources
from fhir_mappings.codes import arr, obj
from fhir_mappings.record import bundle_problems, literal_target
from hooks.base import HookService

TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")

# Key -> template. Reads use a context id; searches are by patient. The history
# searches cover every resource type the CarePath operators read
# (tests/test_service.py::test_prefetch_covers_every_resource_type_the_carepath_reads checks that).
TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    "encounter": "Encounter/{{context.encounterId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}&_sort=-date",
    "observations": "Observation?patient={{context.patientId}}&_sort=-date",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
    "medicationDispenses": "MedicationDispense?patient={{context.patientId}}",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "devices": "Device?patient={{context.patientId}}",
    "diagnosticReports": "DiagnosticReport?patient={{context.patientId}}&_sort=-date",
    "imagingStudies": "ImagingStudy?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}&_sort=-date",
    "questionnaireResponses": "QuestionnaireResponse?patient={{context.patientId}}&status=completed,amended",
}
# Keys whose data is needed only when some order is governed by a CarePath.
HISTORY_KEYS = tuple(k for k in TEMPLATES if k not in ("coverage",))


def templates_for(service: HookService) -> dict[str, str]:
    """Return the templates whose tokens all name this hook's prefetch-eligible context fields."""
    return {
        key: template
        for key, template in TEMPLATES.items()
        if all(name in service.token_fields for name in TOKEN.findall(template))
    }


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill a template's tokens from the context; None when a token's field is absent."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = context.get(match.group(1))
        if not isinstance(found, str) or not found:
            missing = True
            return ""
        return found

    rendered = TOKEN.sub(value, template)
    return None if missing else rendered


@dataclass
class PatientData:
    """What prefetch and fetching produced, key by key."""

    resources: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> why (no fhirServer, error ...)
    fetched: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)  # key -> why its data may lack resources

    def all_resources(self, keys: tuple[str, ...] | None = None) -> list[Mapping[str, Any]]:
        return [r for k, rs in self.resources.items() if keys is None or k in keys for r in rs]

    def incomplete_by_type(self) -> dict[str, str]:
        """Resource type -> why the record of that type may be incomplete (product-decisions.md §1)."""
        return {searched_type(TEMPLATES.get(key, "*")): why for key, why in self.incomplete.items()}


def searched_type(template: str) -> str:
    """The resource type a template reads (``Condition?patient=...`` -> ``Condition``)."""
    return re.split(r"[/?]", template, maxsplit=1)[0] or "*"


def _from_prefetch(value: Any) -> list[Mapping[str, Any]] | None:
    """Return a prefetch value's resources; None when the client reported a failure."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return None
    if value.get("resourceType") == "OperationOutcome":
        return None
    if value.get("resourceType") == "Bundle":
        return page_resources(value)
    return [value]


def resolve(
    templates: Mapping[str, str],
    keys: tuple[str, ...],
    context: Mapping[str, Any],
    prefetch: Mapping[str, Any],
    client: FhirClient | None,
    pool: ThreadPoolExecutor,
    on_fetched: Callable[[str, list[Mapping[str, Any]]], None] | None = None,
) -> PatientData:
    """Get the data of ``keys``: from prefetch when given, else from the FHIR server in parallel.

    ``on_fetched`` is given each key and its resources as they come in (the reads of what they
    name or miss can start before the slowest search is done), the prefetched keys first.
    """
    data = PatientData()
    to_fetch: dict[str, str] = {}
    for key in keys:
        query = render(templates[key], context) if key in templates else None
        if query is None:
            continue  # the template's token has no value in this call (e.g. no encounterId)
        if key in prefetch:
            resources = _from_prefetch(prefetch[key])
            if resources is not None:
                data.resources[key] = resources
                _continue_pages(data, key, prefetch[key], client)
                _note_problems(data, key, prefetch[key], client)
                continue
        to_fetch[key] = query
    if not to_fetch:
        return data
    if client is None:
        for key in to_fetch:
            data.unavailable[key] = "not prefetched and no fhirServer to query"
        return data
    futures = {key: pool.submit(_fetch, client, query) for key, query in to_fetch.items()}
    if on_fetched is not None:
        for key, resources in list(data.resources.items()):  # what was prefetched names Medications too
            on_fetched(key, resources)
    _collect(data, futures, client, on_fetched)
    return data


def wait_budget(client: FhirClient) -> float | None:
    """How long to wait for the reads: what is left of the call's budget and half a second; None without a deadline."""
    left = client.remaining()
    return None if left == float("inf") else max(0.0, left) + 0.5


def _collect(
    data: PatientData,
    futures: Mapping[str, Future[list[Mapping[str, Any]]]],
    client: FhirClient,
    on_fetched: Callable[[str, list[Mapping[str, Any]]], None] | None,
) -> None:
    """Wait for the reads, handing each search's resources to ``on_fetched`` as soon as it is in.

    The keys still go into ``data`` in template order, whatever order the answers came in, so the
    record is read the same way every time.
    """
    keys = {future: key for key, future in futures.items()}
    results: dict[str, list[Mapping[str, Any]] | str] = {}
    try:
        for future in as_completed(keys, timeout=wait_budget(client)):
            try:
                results[keys[future]] = resources = future.result()
            except FhirError as exc:
                results[keys[future]] = str(exc)
                continue
            if on_fetched is not None:
                on_fetched(keys[future], resources)
    except FutureTimeout:
        pass
    for key in futures:
        found = results.get(key, "the time budget of the hook call is spent")
        if isinstance(found, str):
            data.unavailable[key] = found
        else:
            data.resources[key] = found
            data.fetched.append(key)


def _continue_pages(data: PatientData, key: str, value: Any, client: FhirClient | None) -> None:
    """Follow the next links of a paginated prefetch Bundle when we can reach the server."""
    if client is None or not isinstance(value, Mapping) or value.get("resourceType") != "Bundle":
        return
    if not any(isinstance(link, Mapping) and link.get("relation") == "next" for link in arr(value.get("link"))):
        return
    try:
        data.resources[key] = client.continue_bundle(value)
    except FhirError as exc:
        data.unavailable[key] = str(exc)


def _note_problems(data: PatientData, key: str, value: Any, client: FhirClient | None) -> None:
    """Record why a prefetched Bundle may not hold the whole search: an error outcome, or pages left unread.

    With a FHIR server the further pages were read (:func:`_continue_pages`; a failure there makes
    the key unavailable), so only an error outcome remains to note.
    """
    if not isinstance(value, Mapping) or value.get("resourceType") != "Bundle":
        return
    problems = [p for p in bundle_problems(value) if client is None or not p.startswith("further pages")]
    if problems:
        data.incomplete[key] = "; ".join(problems)


def _fetch(client: FhirClient, query: str) -> list[Mapping[str, Any]]:
    if "?" in query:
        return client.search(query)
    found = client.read(query)
    return [found] if found is not None else []


MAX_REFERENCED_READS = 50  # Medications read one by one; past this the rest stay unresolved (not understood)


class ReferencedMedications:
    """Read the Medications that requests name by ``medicationReference`` and the record does not hold.

    EHRs often send MedicationRequests whose drug is a separate Medication resource. One that is
    neither contained, nor anywhere in the prefetch, nor readable from the EHR stays unresolved,
    and the record reader counts the request as not understood (product-decisions.md §1).

    :meth:`start` begins the reads of what one search brought (``resolve``'s ``on_fetched``), so
    they overlap the searches still running; :meth:`finish` decides which Medications are wanted
    from the whole record, exactly as if nothing had started early, reads any not started yet and
    keeps the answers of those only. (So a record naming more than the cap of Medications, in a
    different order in different searches, may cost up to twice the cap in reads, never fewer answers.)
    """

    def __init__(self, client: FhirClient | None, pool: ThreadPoolExecutor) -> None:
        self.client = client
        self.pool = pool
        self.reads: dict[str, Future[Mapping[str, Any] | None]] = {}

    def start(self, key: str, resources: list[Mapping[str, Any]]) -> None:
        """Begin reading what one search's resources name and do not hold themselves (``_include``)."""
        held = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
        for path in _wanted(resources, held):
            if self.client is not None and path not in self.reads and len(self.reads) < MAX_REFERENCED_READS:
                self.reads[path] = self.pool.submit(self.client.read, path)

    def finish(self, data: PatientData) -> None:
        client = self.client
        if client is None:
            return
        resources = data.all_resources()
        wanted = _wanted(resources, {f"{r.get('resourceType')}/{r.get('id')}" for r in resources})
        if not wanted:
            return
        for path in wanted[:MAX_REFERENCED_READS]:
            if path not in self.reads:
                self.reads[path] = self.pool.submit(client.read, path)
        found = []
        for path in wanted[:MAX_REFERENCED_READS]:
            try:
                medication = self.reads[path].result(timeout=wait_budget(client))
            except (FhirError, FutureTimeout):
                continue  # unresolved: the request is not understood, never taken for "no drug"
            if isinstance(medication, Mapping) and medication.get("resourceType") == "Medication":
                found.append(medication)
        data.resources["medications"] = found


def _wanted(resources: list[Mapping[str, Any]], known: set[str]) -> list[str]:
    """The ``Medication/id`` paths the resources name by ``medicationReference``, in order, not in ``known``."""
    wanted: list[str] = []
    for resource in resources:
        ref = obj(resource.get("medicationReference")).get("reference")
        target = literal_target(ref) if isinstance(ref, str) else None
        if target and target[0] == "Medication" and f"{target[0]}/{target[1]}" not in known:
            path = f"{target[0]}/{target[1]}"
            if path not in wanted:
                wanted.append(path)
    return wanted
