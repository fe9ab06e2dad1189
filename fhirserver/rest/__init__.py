"""HTTP: routes, content negotiation, headers, Bundles and OperationOutcome errors."""
