"""The judge wing: pure functions of images and numbers. Metrics (LPIPS, SSIM, PSNR), the LPIPS
weights, the scorecard and its meaning scorers, regions, budget checks, the drift decision and
the trend statistics. No pipeline, no session, no pytest.

May import: config, store.
"""
