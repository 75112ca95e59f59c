"""rootport layer (see DESIGN.md)."""
