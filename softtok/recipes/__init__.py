"""Corpus preparation and the Python stages that egs/*/run.sh scripts call."""
