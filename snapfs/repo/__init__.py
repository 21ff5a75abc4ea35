"""The repository format (docs/format.md) and the Repository facade over a Store."""
