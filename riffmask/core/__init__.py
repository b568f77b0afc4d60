"""The spectrogram core: the format, the codec, phase reconstruction and audio I/O (the bottom layer)."""
