"""Feature export: item embeddings and semantic IDs published as a Feast feature repository (`export_features`)."""
