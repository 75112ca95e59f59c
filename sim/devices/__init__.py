"""devices layer (see DESIGN.md)."""
