"""flrd's Flower client side: ``compression_mod`` for any ClientApp, and the transport.

The reference ClientApp for the paper's MNIST task lives in ``client_app`` and is
loaded by Flower from the app config (``clients.client_app:app``); importing this
package does not import torch models, torchvision or matplotlib.
"""

from .compress import CompressedUpdate, compress_update, layer_seed
from .mod import EF_STATE_RECORD, compression_mod
from .transport import wrap_payload, wrap_payloads

__all__ = [
    "EF_STATE_RECORD",
    "CompressedUpdate",
    "compress_update",
    "compression_mod",
    "layer_seed",
    "wrap_payload",
    "wrap_payloads",
]
