"""The embedded tiny Wan2.1 text-to-video checkpoint: DiffSynth's Wan classes at small widths, so
the real ``WanVideoPipeline`` (loading, float8 storage, the denoising loop over a clip, the causal
3D VAE decode) runs on a CPU. ``architecture.py`` holds the model classes, ``build.py`` writes a
checkpoint folder, ``tokenizers.py`` the umT5-style tokenizer, ``model/families/wan.py`` its
model family, ``clip.py`` builds and renders it, FACTS.md the family's facts."""
