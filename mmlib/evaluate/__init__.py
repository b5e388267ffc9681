"""mmlib.evaluate."""
