"""Featurizer registry: importing this package registers every built-in feature."""

from softtok.tokenizers.features import kaldi, ssl, whisper  # noqa: F401  (registration)
from softtok.tokenizers.features.base import FEATURIZERS, Featurizer, build_featurizer, register_featurizer

__all__ = ["FEATURIZERS", "Featurizer", "build_featurizer", "register_featurizer"]
