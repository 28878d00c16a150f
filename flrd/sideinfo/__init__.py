"""Wyner-Ziv coding of client updates against the server's side information.

The encoder sends a dithered quantizer's index modulo a coarse lattice, described
by LDPC syndromes sized for the entropy that remains once the server knows its side
information (:mod:`.wyner_ziv`, :mod:`.ldpc`); the server decodes the round's
replies one after another against the running estimate (:mod:`.successive`), with
per-client parameters from the successive-decoding vertex of the CEO rate region
(:mod:`.allocation`). No Flower imports.
"""

from . import wyner_ziv
from .allocation import ClientPlan, LayerPlan, conditional_vars, plan_layer
from .successive import Observed, RoundDecode, decode_successive
from .wyner_ziv import Decoded, decode, dithered_rate, encode, encode_reconstruct, plane_entropies, wz_rate

__all__ = [
    "ClientPlan",
    "Decoded",
    "LayerPlan",
    "Observed",
    "RoundDecode",
    "conditional_vars",
    "decode",
    "decode_successive",
    "dithered_rate",
    "encode",
    "encode_reconstruct",
    "plan_layer",
    "plane_entropies",
    "wyner_ziv",
    "wz_rate",
]
