"""CMT compound scaling: one base architecture -> a Ti/XS/S/B family, with counted (not assumed) MACs."""

from .compound import Coefficients, KVChange, Scaled, expand, fix_kv_reductions, scale
from .family import Member, build_family, write_family

__all__ = [
    "Coefficients", "KVChange", "Scaled", "expand", "fix_kv_reductions", "scale", "Member", "build_family",
    "write_family",
]  # fmt: skip
