"""GPU path of the default codec: dither, subset and quantization on the device.

Run on a machine with CUDA: ``python bench/bench_codecs_gpu.py``. Prints the device,
checks that the payload is byte-identical to the numpy CPU path, and the encode time of
each path measured in this run (entropy coding stays on the CPU in both).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from flrd.codecs.message import encode_update
from flrd.codecs.rate_curve import noise_for_bits
from flrd.protocol import CompressionRequest


def best(fn, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main(d: int = 1 << 22) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'CPU (no CUDA)'}; d = {d}")
    x = np.random.default_rng(0).standard_normal(d).astype(np.float32)
    xt = torch.from_numpy(x).to(device)
    print("| bit | identical | numpy ms | torch ms | numpy/torch time |")
    print("|---|---|---|---|---|")
    for bits in (0.003, 0.05, 0.25, 1.0):
        request = CompressionRequest(codec="dithered", noise_var=(noise_for_bits(bits),), seed=3)
        same = encode_update({"x": xt}, request, node_id=1).payload == encode_update({"x": x}, request, node_id=1).payload
        t_np = best(lambda: encode_update({"x": x}, request, node_id=1))
        t_gpu = best(lambda: encode_update({"x": xt}, request, node_id=1))
        print(f"| {bits} | {same} | {t_np * 1e3:.1f} | {t_gpu * 1e3:.1f} | {t_np / t_gpu:.2f} |")


if __name__ == "__main__":
    main()
