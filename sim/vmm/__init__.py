"""vmm layer (see DESIGN.md)."""
