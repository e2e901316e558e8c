"""Channel/spatial attention modules (one file each) and their registry.

Choices of a stage's ``channel_attention``: ``none``, ``se`` (Hu et al., 2018), ``eca`` (Wang et
al., 2020), ``gc`` (GCNet, Cao et al., 2019), ``cat`` (Wu et al., 2022) and ``wavelet``
(WaveNet-C, Salman et al., 2022). See each file for the module and its counting.
"""

from .registry import (
    NO_ATTENTION,
    AttentionStyle,
    AttentionType,
    attention_names,
    attention_style,
    attention_styles,
    bottleneck_width,
    get_attention,
    register,
)

__all__ = ["NO_ATTENTION", "AttentionStyle", "AttentionType", "attention_names", "attention_style",
           "attention_styles", "bottleneck_width", "get_attention", "register"]  # fmt: skip
