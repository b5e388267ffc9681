"""mmlib.data."""
