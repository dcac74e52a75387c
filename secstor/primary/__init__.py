"""Primary storage: where volumes live while in use (see posix.py for the built-in pool)."""
