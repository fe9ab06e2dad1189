"""Storage: the Store protocol and its backends. Knows nothing of HTTP or FHIR rules."""
