"""Unit vocoder (units -> 16 kHz waveform) and its evaluation metrics (:mod:`.metrics`)."""
