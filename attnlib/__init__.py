"""attnlib: the small package behind the course "Attention, from dot products to Transformers".

Each lesson derives one idea from scratch and then imports it from here, so later
lessons build on tested code. Everything runs on cuda, mps or cpu.
"""

from .additive_attention import AdditiveAttention
from .attention import causal_mask, scaled_dot_product_attention
from .decoding import beam_search, greedy_decode
from .device import describe_environment, get_device, seed_everything
from .gpt import GPT
from .interpret import AttentionOnlyTransformer
from .kv_cache import KVCache
from .layers import DecoderLayer, EncoderLayer
from .multi_head import MultiHeadAttention
from .positions import (
    LearnedPositionalEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    sinusoidal_positional_encoding,
)
from .qkv import QKVProjection
from .seq2seq import Seq2Seq
from .similarity import cosine_similarity, dot_product_scores
from .softmax import masked_softmax
from .transformer import Transformer, TransformerConfig, padding_mask, target_mask
from .vision import PatchEmbedding, VisionTransformer
# Submodules a lesson reaches as attnlib.<name>. The two scripts, bench and ddp_train, are left to
# `from attnlib import bench` so that `python -m attnlib.bench` runs them fresh.
from . import (
    data,
    decoding,
    distributed,
    fast_attention,
    interpret,
    launch,
    measure,
    sampling,
    train,
    transformer,
    viz,
)

__version__ = "0.2.0"  # the same as pyproject.toml's (a test checks): notebooks install this release

__all__ = [
    "AdditiveAttention",
    "AttentionOnlyTransformer",
    "DecoderLayer",
    "EncoderLayer",
    "GPT",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "PatchEmbedding",
    "QKVProjection",
    "Seq2Seq",
    "Transformer",
    "TransformerConfig",
    "VisionTransformer",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "beam_search",
    "causal_mask",
    "cosine_similarity",
    "data",
    "decoding",
    "describe_environment",
    "distributed",
    "dot_product_scores",
    "fast_attention",
    "get_device",
    "greedy_decode",
    "interpret",
    "launch",
    "masked_softmax",
    "measure",
    "padding_mask",
    "sampling",
    "scaled_dot_product_attention",
    "seed_everything",
    "sinusoidal_positional_encoding",
    "target_mask",
    "train",
    "transformer",
    "viz",
]
