"""Bulk data in and out of the store: `fhirserver import` (and, later, $export)."""
