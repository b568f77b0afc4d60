"""Logging of the ``riffmask`` commands: one format, and the libraries' known noise left out.

Three messages that every run would print and that say nothing to a riffmask user are dropped:
transformers' note that torchvision is absent (riffmask does not use it, on purpose), bitsandbytes'
missing optional CPU 4-bit kernel (riffmask uses its 8-bit optimizers only), and diffusers'
"modules that should be kept in float32: []" on every ``.to(dtype)`` even when there are none.
Everything else, from those libraries too, is shown as usual.
"""

from __future__ import annotations

import logging

#: logger name -> text that marks the record to drop
_NOISE = {
    "transformers.utils.import_utils": "requires torchvision (not installed)",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
    "diffusers.models.modeling_utils": "should be kept in float32: []",
}


class _DropText(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with ``verbose``) as ``LEVEL logger: message``, without the libraries' known noise."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, text in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropText) and f.text == text for f in logger.filters):
            logger.addFilter(_DropText(text))
