"""Imports the modules that register periodic tasks (see secstor.services.background)."""
