"""fhirserver: a standalone FHIR R4 (4.0.1) server."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
