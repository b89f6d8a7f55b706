"""Dynamic providers of the program's own resources (the engine's provider process imports them by name, so
nothing here creates a resource at import time or holds an unpicklable global)."""
