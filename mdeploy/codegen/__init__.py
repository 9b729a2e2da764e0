"""Code and file generation from templates/ (sandboxed Jinja, StrictUndefined, path-guarded)."""
