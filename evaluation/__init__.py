"""Evaluation: fixed-latent sampling, FID/KID, CLIP score, diversity, MLflow reporting, the table."""
