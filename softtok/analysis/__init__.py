"""Representation analysis: phone labels by CTC forced alignment, phone separability, token purity/PNMI, RankMe."""
