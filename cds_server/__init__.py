"""Payer-side CDS Hooks / Da Vinci CRD service deciding medical necessity from CarePaths."""
