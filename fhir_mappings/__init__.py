"""Read FHIR R4 JSON into the small, typed shapes the decision engine needs.

Charter: pure functions and plain data only. No Flask, no HTTP, no files, no
clock. Everything here takes resources that were already parsed from JSON
and returns values; the evaluation date is always passed in by the caller.
"""
