"""accessd's fault and fuzz suite: power cuts, reader faults, clock faults, attacks, full disks,
fuzzed parsers and the network, each scenario counted against its invariant.

Not shipped with the package: run it from the repository root with `scripts/faults`.
See docs/reliability.md.
"""
