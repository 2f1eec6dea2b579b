"""The pure core: types, policy, capacity models, forecasting, stabilization, budget split.

Nothing here does I/O or reads a clock: time is passed in. The import-linter contract in setup.cfg
enforces it, so the same code runs in the simulator and in the cluster.
"""
