"""pdscale workers package."""
