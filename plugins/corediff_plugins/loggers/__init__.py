"""First-party logger plugins (one experiment tracker per file)."""
