"""First-party parameterizations plugins (one method per file)."""
