"""Face analysis, face model assets and the synthesizer (no networking here)."""
