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
from . import data, decoding, fast_attention, interpret, measure, sampling, train, transformer, viz
from .vision import PatchEmbedding, VisionTransformer

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
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "Transformer",
    "TransformerConfig",
    "beam_search",
    "VisionTransformer",
    "causal_mask",
    "cosine_similarity",
    "data",
    "decoding",
    "describe_environment",
    "dot_product_scores",
    "fast_attention",
    "get_device",
    "greedy_decode",
    "interpret",
    "masked_softmax",
    "measure",
    "padding_mask",
    "scaled_dot_product_attention",
    "sampling",
    "seed_everything",
    "sinusoidal_positional_encoding",
    "target_mask",
    "train",
    "transformer",
    "viz",
]
