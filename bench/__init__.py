"""Throughput benchmark: Patient create and read over loopback HTTP, against a bare baseline.

`python -m bench` (or `make bench`) measures requests per second of POST /fhir/Patient
and GET /fhir/Patient/{id} on a real `fhirserver serve` process, and the same load on a
bare Starlette app storing the same bytes in SQLite (bench.baseline), and prints the ratio.
"""
