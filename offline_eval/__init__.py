"""offline_eval package."""
