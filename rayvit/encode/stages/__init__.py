"""The stages of encode's data path: read (CPU tasks) -> device (actor pool) -> write (CPU tasks)."""
