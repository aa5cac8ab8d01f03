"""Built-in analyses, one module each."""
