"""Baseline policies run through the same harness as pdscale. Each module registers itself with
``sim.policies.register_policy``; ``sim.policies`` imports every module of this package on first lookup."""
