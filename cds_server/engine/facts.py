"""Derived patient facts (clinical-coding.md §2), computed once per order.

Each fact reads the record through value sets and settings named in the
CarePath's ``facts`` block; nothing here knows which guideline it serves.
Facts return evidence references with every value so that criteria can
explain themselves.

This module is the one name operators and the evaluator read facts through
(``facts.symptom_onset(ctx)``); the facts themselves live by subject:
:mod:`~cds_server.engine.evidence` (windows, proof, denials and doubts),
:mod:`~cds_server.engine.episode` (onset, pain scores, regions),
:mod:`~cds_server.engine.sessions` (prior sessions, relief) and
:mod:`~cds_server.engine.care` (conservative care).
"""

from __future__ import annotations

from cds_server.engine.care import (
    Component,
    ConservativeCare,
    combination,
    conservative_care,
    conservative_care_at,
)
from cds_server.engine.episode import (
    Onset,
    OrderRegion,
    PainScore,
    canonical_region,
    entry_region,
    order_region,
    pain_reduction,
    pain_scores,
    region_of_codes,
    same_region,
    symptom_onset,
)
from cds_server.engine.evidence import (
    counts_in_window,
    denials,
    doubts,
    entry_day,
    matching_entries,
    order_reason_codes,
    order_reason_doubts,
    still_active,
    within,
)
from cds_server.engine.sessions import (
    HISTORY_CHILDREN,
    Relief,
    Session,
    history_known,
    relief_after,
    session_doubts,
    sessions,
)

__all__ = [
    "HISTORY_CHILDREN",
    "Component",
    "ConservativeCare",
    "Onset",
    "OrderRegion",
    "PainScore",
    "Relief",
    "Session",
    "canonical_region",
    "combination",
    "conservative_care",
    "conservative_care_at",
    "counts_in_window",
    "denials",
    "doubts",
    "entry_day",
    "entry_region",
    "history_known",
    "matching_entries",
    "order_reason_codes",
    "order_reason_doubts",
    "order_region",
    "pain_reduction",
    "pain_scores",
    "region_of_codes",
    "relief_after",
    "same_region",
    "session_doubts",
    "sessions",
    "still_active",
    "symptom_onset",
    "within",
]
