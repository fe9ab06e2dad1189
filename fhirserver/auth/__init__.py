"""SMART on FHIR authorization (DESIGN.md "Authorization", issue 16).

Values and decisions only: scopes, the `Access` every interaction receives, the one
policy, passwords, signing keys, access and id tokens, client assertions. HTTP
endpoints and stores come later and use these; nothing here imports `fhirserver.rest`.
"""
