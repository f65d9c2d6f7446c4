"""The AzureML scoring-image recipe: score.py + model + requirements on a Debian base."""
