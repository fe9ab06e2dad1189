"""Profiles (R4 profiling.html): StructureDefinitions that constrain a resource type,
compiled once into a tree of checks and applied to resources (validation.html).

`model` compiles a snapshot; `check` walks a resource with it; `matching` tells fixed,
pattern and slice discriminator values apart; `terminology` expands the small
ValueSets a profile's required bindings name; `constraints` runs the profile's own
invariants; `source` finds a profile by canonical URL (the store, extensions/);
`package` reads a FHIR package (.tgz).
"""
