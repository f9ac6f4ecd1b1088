"""Task models: a backbone plus a task head."""
