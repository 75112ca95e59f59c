"""firmware layer (see DESIGN.md)."""
