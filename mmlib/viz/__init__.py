"""mmlib.viz."""
