"""pdscale metrics_adapter package."""
