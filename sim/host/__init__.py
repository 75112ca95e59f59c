"""host layer (see DESIGN.md)."""
