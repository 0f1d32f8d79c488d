"""Inference from audio with a bundle: ``softtok.load(path)`` → an ASR or vocoder model (see :mod:`.model`);
bundles are written by ``softtok export`` (:mod:`.bundle`); ``softtok transcribe`` / ``resynthesize`` (:mod:`.cli`)."""
