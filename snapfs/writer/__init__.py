"""The snapshot writer: walker → bounded pipeline → packs, index, trees, manifest."""
