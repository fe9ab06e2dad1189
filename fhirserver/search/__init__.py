"""Search: parameter registry, index extraction, query parsing; no storage here."""
