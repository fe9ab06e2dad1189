"""What each FHIR interaction does (R4 http.html), apart from HTTP and from storage."""
