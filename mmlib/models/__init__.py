"""mmlib.models."""
