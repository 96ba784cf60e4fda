"""StyleGAN3's low-pass filter design and filtered leaky ReLU in plain torch (no custom CUDA, no scipy).

Filtered nonlinearity (Alias-Free GAN, Sec. 3.2, Fig. 4b): with s' = up * s_in the temporary rate,
    y = D_down( F_d * clamp( gain * lrelu( F_u * U_up( pad(x + b) ) ), +-clamp ) )
U_up inserts up-1 zeros between samples, F_u / F_d are the low-pass filters (up^2 gain on F_u keeps DC), and
D_down keeps every down-th sample. Separable (1-D) filters run as two 1-D convolutions; the radial filter of
the R config is a 2-D kernel.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _kaiser_beta(atten_db: float) -> float:
    # Kaiser's empirical beta for a stopband attenuation A (dB) (Oppenheim & Schafer, eq. 7.62).
    if atten_db > 50:
        return 0.1102 * (atten_db - 8.7)
    if atten_db > 21:
        return 0.5842 * (atten_db - 21) ** 0.4 + 0.07886 * (atten_db - 21)
    return 0.0


def _kaiser_window(numtaps: int, width: float, fs: float) -> np.ndarray:
    # Attenuation reached by `numtaps` taps over a transition band `width` (Kaiser: A = 2.285 (N-1) pi dw + 7.95).
    atten = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    return np.kaiser(numtaps, _kaiser_beta(atten))


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR (float32): 1-D sinc (separable) or 2-D jinc (radial); None for 1 tap.

    1-D: h[n] = (2 f_c / fs) sinc(2 f_c / fs * m_n) w[n], m_n = n - (N-1)/2, normalised to unit DC gain.
    Radial: h(r) = J1(2 pi f_c r) / (pi r) (the jinc, r in 1/fs units) times the separable window, unit sum."""
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    m = np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2
    window = _kaiser_window(numtaps, width, fs)
    if not radial:
        c = cutoff / (fs / 2)
        h = c * np.sinc(c * m) * window
        return torch.as_tensor(h / h.sum(), dtype=torch.float32)
    x = m / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64)
    arg = 2 * cutoff * math.pi * r
    jinc = torch.where(r > 0, torch.special.bessel_j1(arg) / (math.pi * r.clamp_min(1e-300)),
                       torch.full_like(r, cutoff))  # lim_{r->0} J1(2 pi f r) / (pi r) = f
    h = jinc * torch.as_tensor(np.outer(window, window), dtype=torch.float64)  # in torch: traceable with fake tensors
    return (h / h.sum()).to(torch.float32)


def _fir(x: torch.Tensor, f: torch.Tensor | None, gain: float, stride: int) -> torch.Tensor:
    """True convolution of every channel with `f` (1-D: along W then H; 2-D: at once), valid part, strided."""
    if f is None:
        return x * gain if gain != 1 else x
    c = x.shape[1]
    f = f.to(x.dtype)
    if f.ndim == 1:
        k = f.flip(0) * math.sqrt(gain)  # gain split over the two axes
        x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c, stride=(1, stride))
        return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c, stride=(stride, 1))
    k = f.flip(0, 1) * gain
    return F.conv2d(x, k.reshape(1, 1, *k.shape).expand(c, 1, *k.shape), groups=c, stride=stride)


def _up_axis(x: torch.Tensor, k: torch.Tensor, up: int, lo: int, hi: int, dim: int) -> torch.Tensor:
    """One axis of F_u * pad(U_up(x)) as a transposed convolution (no zeros are stored or multiplied).

    conv_transpose scatters x[i] k[t] to out[i up + t] (full length (L-1) up + T); the zero-inserted, padded,
    convolved signal is that output shifted by T-1-lo and cut (or zero-extended) to L up + lo + hi - T + 1."""
    c, taps, length = x.shape[1], k.numel(), x.shape[dim]
    shape, stride = ((1, 1, taps, 1), (up, 1)) if dim == 2 else ((1, 1, 1, taps), (1, up))
    y = F.conv_transpose2d(x, k.reshape(shape).expand(c, *shape[1:]), stride=stride, groups=c)
    start, want = taps - 1 - lo, length * up + lo + hi - taps + 1
    cut = [-start, want - (y.shape[dim] - start)]  # negative pads crop
    return F.pad(y, cut if dim == 3 else [0, 0, *cut])


def upsample_filter(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: tuple[int, int]) -> torch.Tensor:
    """F_u * pad(U_up(x)): zero insertion, padding (low, high) on both axes, filter with DC gain up^2."""
    lo, hi = padding
    if f is not None and f.ndim == 1 and up > 1:  # separable: W then H, gain up per axis
        k = f.to(x.dtype) * up
        return _up_axis(_up_axis(x, k, up, lo, hi, dim=3), k, up, lo, hi, dim=2)
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [lo, hi, lo, hi])  # negative values crop
    return _fir(x, f, float(up * up), 1)


def filtered_lrelu(x: torch.Tensor, bias: torch.Tensor, up_filter: torch.Tensor | None,
                   down_filter: torch.Tensor | None, up: int, down: int, padding: tuple[int, int], gain: float,
                   slope: float, clamp: float | None) -> torch.Tensor:
    """The filtered nonlinearity of the module docstring (ToRGB: slope 1, gain 1, no filters)."""
    x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = upsample_filter(x, up_filter, up, padding)
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return _fir(x, down_filter, 1.0, down)  # D_down(F_d * x) as one strided convolution
