"""The embedded ``tiny`` checkpoint: DiffSynth's Flux classes at small widths, so that the real
DiffSynth pipeline (loading, float8 storage, denoising loop, VAE decode) runs on a CPU in
milliseconds. See ``architecture.py`` for the model classes and ``build.py`` for how a
checkpoint directory is written."""
