"""The one Patient both servers are sent: realistic in size and shape (US Core style)."""

from __future__ import annotations

import json
from typing import Any

_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "extension": [
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238",
                        "code": "2106-3",
                        "display": "White",
                    },
                },
                {"url": "text", "valueString": "White"},
            ],
        },
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238",
                        "code": "2186-5",
                        "display": "Not Hispanic or Latino",
                    },
                },
                {"url": "text", "valueString": "Not Hispanic or Latino"},
            ],
        },
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
            "valueCode": "F",
        },
        {
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": {"city": "Springfield", "state": "IL", "country": "US"},
        },
    ],
    "identifier": [
        {
            "use": "usual",
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "MR",
                        "display": "Medical Record Number",
                    }
                ]
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "MRN-0012345678",
            "period": {"start": "2015-05-01"},
            "assigner": {"display": "Acme Healthcare"},
        },
        {
            "use": "official",
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "SS",
                        "display": "Social Security Number",
                    }
                ]
            },
            "system": "http://hl7.org/fhir/sid/us-ssn",
            "value": "999-45-6789",
        },
    ],
    "active": True,
    "name": [
        {
            "use": "official",
            "family": "Chalmers",
            "given": ["Margaret", "Anne"],
            "prefix": ["Ms."],
            "period": {"start": "1984-06-12"},
        },
        {"use": "usual", "given": ["Maggie"]},
    ],
    "telecom": [
        {"system": "phone", "value": "+1 217 555 0142", "use": "home", "rank": 2},
        {"system": "phone", "value": "+1 217 555 0199", "use": "mobile", "rank": 1},
        {"system": "email", "value": "margaret.chalmers@example.org", "use": "home"},
    ],
    "gender": "female",
    "birthDate": "1974-12-25",
    "address": [
        {
            "use": "home",
            "type": "both",
            "text": "534 Erewhon St, Apt 4B, Springfield, IL 62701",
            "line": ["534 Erewhon St", "Apt 4B"],
            "city": "Springfield",
            "district": "Sangamon",
            "state": "IL",
            "postalCode": "62701",
            "country": "US",
            "period": {"start": "2009-03-01"},
        }
    ],
    "maritalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                "code": "M",
                "display": "Married",
            }
        ]
    },
    "communication": [
        {
            "language": {
                "coding": [{"system": "urn:ietf:bcp:47", "code": "en-US", "display": "English"}]
            },
            "preferred": True,
        }
    ],
}

PATIENT_JSON: bytes = json.dumps(_PATIENT, separators=(",", ":")).encode()
