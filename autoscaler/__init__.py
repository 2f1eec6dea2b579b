"""pdscale: SLO-driven autoscaling of disaggregated prefill/decode LLM serving."""

__version__ = "0.1.0"
