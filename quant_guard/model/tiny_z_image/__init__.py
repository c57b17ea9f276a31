"""The embedded tiny Z-Image checkpoint: DiffSynth's Z-Image classes at small widths, so the real
``ZImagePipeline`` (loading, float8 storage, denoising loop, VAE decode) runs on a CPU.
``architecture.py`` holds the model classes, ``build.py`` writes a checkpoint folder, FACTS.md the
family's facts for the model-family seam."""
