"""FHIR resources: JSON codec, the R4 type list, validation, meta and element filtering."""
