"""One camera model for every clip: exposure drift, sensor noise, quantisation, blur and a JPEG
round trip."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.synth.geometry import smooth_noise


def camera_model(frames: torch.Tensor, rng: np.random.Generator, fps: float) -> np.ndarray:
    """The capturing camera: auto-exposure drift, signal-dependent sensor noise, 8-bit
    quantisation (batched torch), then slight lens blur and a JPEG round trip per frame (OpenCV:
    JPEG is per picture anyway). ``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8."""
    T = frames.shape[0]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    gain = float(rng.uniform(0.95, 1.05)) * (1 + smooth_noise(rng, T, fps, float(rng.uniform(0.01, 0.04))))
    gain = torch.as_tensor(gain * 255.0, dtype=frames.dtype, device=frames.device).view(T, 1, 1, 1)
    s0, s1 = float(rng.uniform(1.0, 2.5)), float(rng.uniform(0.01, 0.03))  # noise std: s0 + s1 * level (8-bit)
    x = torch.addcmul(torch.full((1,), 0.5, dtype=frames.dtype, device=frames.device), frames, gain)  # +0.5: rounding
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    x.addcmul_(noise, x * s1 + s0)
    u8 = x.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    sigma = float(rng.uniform(0.4, 0.8))
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(rng.integers(60, 88))]
    out = np.empty_like(u8)
    for i in range(T):
        im = cv2.GaussianBlur(u8[i], (0, 0), sigma)
        ok, buf = cv2.imencode(".jpg", im, params)  # channel order is irrelevant to the round trip
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else im
    return out
