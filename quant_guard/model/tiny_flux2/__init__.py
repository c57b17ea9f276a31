"""The embedded tiny FLUX.2 (klein) checkpoint: DiffSynth's FLUX.2 classes at small widths; see FACTS.md."""
