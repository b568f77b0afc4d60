"""A tiny random LAION-CLAP of the real architecture, built offline, for tests and benchmarks.

The processor is the real one (48 kHz, 10 s, 64 mel bands, HTSAT spec size 256) with a byte-level
tokenizer without merges; the model is a ``ClapModel`` with a few small layers. Saved with
``save_pretrained`` (safetensors), it loads through exactly the code that loads the Hub model.
"""

from __future__ import annotations

import os
from pathlib import Path


def save_tiny_clap(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a deterministic tiny ``ClapModel`` + ``ClapProcessor`` to ``out_dir``; return it."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    config = ClapConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 130,
            "projection_dim": 16,
        },
        audio_config={
            "patch_embeds_hidden_size": 8,
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [1, 1, 1, 1],
            "hidden_size": 64,
            "projection_dim": 16,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
