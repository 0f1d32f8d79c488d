"""Downstream models (ASR, unit vocoder), scoring and metrics: built on TokenInput from the heads."""
