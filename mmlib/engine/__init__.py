"""mmlib.engine."""
