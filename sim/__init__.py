"""pdscale sim package."""
