"""protocols layer (see DESIGN.md)."""
