"""Restoring a snapshot (or part of one) into a local directory."""
