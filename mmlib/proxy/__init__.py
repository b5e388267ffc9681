"""mmlib.proxy."""
