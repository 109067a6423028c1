"""Whose record a resource belongs to, what a reference points at, and what a search Bundle holds.

Everything about references and Bundles the record reader needs before it reads
any code: keeping other patients' resources out, reading literal references
(relative, absolute, versioned; contained ones by ``#id``), unpacking search
Bundles and noting which resource types a Bundle says are incomplete
(product-decisions.md §1: a failed or unfinished search is never silence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhir_mappings.codes import arr, obj

# Elements that say whose record a resource belongs to.
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


def patient_matches(resource: Mapping[str, Any], patient_id: str | None, own: bool = False) -> bool:
    """Return False when a resource plainly belongs to another patient (it must never count as evidence).

    A resource that names no patient (e.g. a QuestionnaireResponse contained in
    the order) is accepted; one that names another patient is not.
    """
    if patient_id is None:
        return True
    if own:
        return resource.get("id") in (None, patient_id)
    for element in _PATIENT_ELEMENTS:
        ref = obj(resource.get(element)).get("reference")
        if ref == "Patient/" + patient_id:
            return True  # the common case, without splitting the reference
        if isinstance(ref, str) and "Patient/" in ref:
            return literal_target(ref) == ("Patient", patient_id)
    return True


def literal_target(reference: str) -> tuple[str, str] | None:
    """Return ``(type, id)`` of a literal reference, or None when it is not one.

    Relative (``Patient/p1``), absolute (``https://ehr/fhir/Patient/p1``) and versioned
    (``.../Patient/p1/_history/2``) references name their last two segments (the version
    dropped); a contained (``#p1``), ``urn:`` or conditional (``Patient?identifier=...``)
    reference names no ``Type/id`` here.
    """
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return None
    return parts[-2], parts[-1]


def foreign_patient_elements(order: Mapping[str, Any], patient_id: str) -> list[str]:
    """Return the elements of an order that name someone other than the patient ``patient_id``.

    Stricter than :func:`patient_matches`, which only keeps other patients' history out of
    the record: an order is decided *for* its patient, so a ``subject`` / ``patient`` naming
    anything but ``Patient/<patient_id>`` (another patient, or a Group, Location or Device,
    which the CRD order profiles do not allow) is listed, as is an Appointment participant
    whose actor is another Patient (``participant[1].actor``). An element that names no
    ``Type/id`` (absent, contained, ``urn:``, identifier only) is not listed: whether it may
    be absent is the FHIR model's question (``ServiceRequest.subject`` is required there).
    """
    found = []
    for element in ("subject", "patient"):
        ref = obj(order.get(element)).get("reference")
        target = literal_target(ref) if isinstance(ref, str) else None
        if target is not None and target != ("Patient", patient_id):
            found.append(element)
    for i, participant in enumerate(arr(order.get("participant"))):
        ref = obj(obj(participant).get("actor")).get("reference")
        target = literal_target(ref) if isinstance(ref, str) else None
        if target is not None and target[0] == "Patient" and target[1] != patient_id:
            found.append(f"participant[{i}].actor")
    return found


def contained(resource: Mapping[str, Any], reference: str) -> Mapping[str, Any] | None:
    if not reference.startswith("#"):
        return None
    for item in arr(resource.get("contained")):
        if (type(item) is dict or isinstance(item, Mapping)) and item.get("id") == reference[1:]:
            return item
    return None


def bundle_problems(bundle: Mapping[str, Any]) -> list[str]:
    """Return why a search Bundle may not hold the whole result (product-decisions.md §1).

    An OperationOutcome entry of severity error or fatal says the search partly failed;
    a ``next`` link says there are pages this Bundle does not hold.
    """
    problems = []
    for entry in arr(bundle.get("entry")):
        resource = obj(obj(entry).get("resource"))
        if resource.get("resourceType") == "OperationOutcome" and any(
            obj(i).get("severity") in ("error", "fatal") for i in arr(resource.get("issue"))
        ):
            problems.append("the search answered with an error (OperationOutcome)")
    if any(obj(link).get("relation") == "next" for link in arr(bundle.get("link"))):
        problems.append("further pages of the search were not read")
    return problems


def bundle_types(bundle: Mapping[str, Any]) -> set[str]:
    types = {obj(obj(e).get("resource")).get("resourceType") for e in arr(bundle.get("entry"))}
    return {t for t in types if isinstance(t, str) and t not in ("OperationOutcome", "Bundle")}


def flatten(resources: Iterable[Any], incomplete: dict[str, str]) -> list[Mapping[str, Any]]:
    """The resources in order, Bundles unpacked, noting in ``incomplete`` what a Bundle says it lacks.

    A Bundle whose entries name no type leaves every type in doubt (``"*"``); so does an
    error OperationOutcome given in place of a resource. A list, not a generator: a long
    history is read once, and a generator per Bundle cost more than the list.
    """
    out: list[Mapping[str, Any]] = []
    _flatten_into(resources, incomplete, out)
    return out


def _flatten_into(resources: Iterable[Any], incomplete: dict[str, str], out: list[Mapping[str, Any]]) -> None:
    for item in resources:
        if type(item) is not dict and not isinstance(item, Mapping):  # the type test first: it is faster
            continue
        rtype = item.get("resourceType")
        if rtype == "Bundle":
            problems = bundle_problems(item)
            if problems:
                for t in bundle_types(item) or {"*"}:
                    incomplete.setdefault(t, "; ".join(problems))
            _flatten_into([obj(e).get("resource") for e in arr(item.get("entry"))], incomplete, out)
        elif rtype == "OperationOutcome":
            if any(obj(i).get("severity") in ("error", "fatal") for i in arr(item.get("issue"))):
                incomplete.setdefault("*", "a search answered with an error (OperationOutcome)")
        else:
            out.append(item)
