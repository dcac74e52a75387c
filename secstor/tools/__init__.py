"""Developer tools that ship with the package (documentation generators)."""
