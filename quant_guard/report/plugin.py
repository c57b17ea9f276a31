"""pytest hooks of the quant_guard report (registered through its own pytest11 entry point)."""
