"""attnlib: the small package behind the course "Attention, from dot products to Transformers".

Each lesson derives one idea from scratch and then imports it from here, so later
lessons build on tested code. Everything runs on cuda, mps or cpu.
"""

from .additive_attention import AdditiveAttention
from .attention import causal_mask, scaled_dot_product_attention
from .device import describe_environment, get_device, seed_everything
from .gpt import GPT
from .kv_cache import KVCache
from .layers import DecoderLayer, EncoderLayer
from .multi_head import MultiHeadAttention
from .positions import alibi_bias, alibi_slopes, apply_rope, sinusoidal_positional_encoding
from .qkv import QKVProjection
from .seq2seq import Seq2Seq
from .similarity import cosine_similarity, dot_product_scores
from .softmax import masked_softmax
from . import data, sampling, train, viz
from . import distributed, launch, ddp_train  # lesson 14: data parallelism on several processes

__version__ = "0.2.0"  # the same as pyproject.toml's (a test checks): notebooks install this release

__all__ = [
    "AdditiveAttention",
    "DecoderLayer",
    "EncoderLayer",
    "GPT",
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
    "ddp_train",
    "describe_environment",
    "distributed",
    "dot_product_scores",
    "get_device",
    "launch",
    "masked_softmax",
    "scaled_dot_product_attention",
    "sampling",
    "seed_everything",
    "sinusoidal_positional_encoding",
    "train",
    "viz",
]
