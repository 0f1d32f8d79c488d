"""Token ASR: model from espnet2 modules, training, decoding."""
