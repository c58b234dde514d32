"""attnlib: the small package behind the course "Attention, from dot products to Transformers".

Each lesson derives one idea from scratch and then imports it from here, so later
lessons build on tested code. Everything runs on cuda, mps or cpu.
"""

from .additive_attention import AdditiveAttention
from .attention import causal_mask, scaled_dot_product_attention
from .device import describe_environment, get_device, seed_everything
from .interpret import AttentionOnlyTransformer
from .kv_cache import KVCache
from .layers import DecoderLayer, EncoderLayer
from .multi_head import MultiHeadAttention
from .positions import alibi_bias, alibi_slopes, apply_rope, sinusoidal_positional_encoding
from .qkv import QKVProjection
from .seq2seq import Seq2Seq
from .similarity import cosine_similarity, dot_product_scores
from .softmax import masked_softmax
from . import data, interpret, train, viz

__version__ = "0.2.0"  # the same as pyproject.toml's (a test checks): notebooks install this release

__all__ = [
    "AdditiveAttention",
    "AttentionOnlyTransformer",
    "DecoderLayer",
    "EncoderLayer",
    "KVCache",
    "MultiHeadAttention",
    "QKVProjection",
    "Seq2Seq",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "causal_mask",
    "cosine_similarity",
    "data",
    "describe_environment",
    "dot_product_scores",
    "get_device",
    "interpret",
    "masked_softmax",
    "scaled_dot_product_attention",
    "seed_everything",
    "sinusoidal_positional_encoding",
    "train",
    "viz",
]
