"""Temporal compressors: turn every ``k`` consecutive encoder frames into one token.

Every compressor maps ``(x [B, N, D], mask [B, N] bool)`` to ``(x' [B, N', D'], mask' [B, N'])``.
``mask[b, t]`` is True for real frames and False for padding. Samples are expected right-padded
(valid frames form a prefix); the window rule below is applied to absolute positions, so any
mask works, but only a prefix mask gives a prefix ``mask'``.

Windows. Output token ``j`` reads frames ``[j·k, j·k + K)`` where ``k`` is the rate (stride) and
``K`` the window (``K = k`` except for a conv with a larger ``kernel``).

Remainder (frames that do not fill a last window), chosen by ``remainder``:

* ``"drop"`` (default, Llama-AVSR): a window is kept only if *all* its frames are valid. A sample
  with ``L`` valid frames gives ``max(0, ⌊(L − K)/k⌋ + 1)`` tokens (``⌊L/k⌋`` when ``K = k``);
  the batch tensor has ``N' = max(0, ⌊(N − K)/k⌋ + 1)`` positions.
* ``"keep"``: a window is kept if *any* of its frames is valid; padding and missing frames count
  as zeros (stack, conv) or are left out of the mean (avg-pool). A sample gives ``⌈L/k⌉`` tokens;
  ``N' = ⌈N/k⌉``.

So a padded batch gives, for each sample, exactly what that sample gives alone without padding
(padded frames are zeroed, even NaN/inf ones, before compressing). Positions where ``mask'`` is False are zero.
A sample shorter than one window under ``"drop"`` gives zero tokens (nothing is invented).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Compressor", "StackCompressor", "AvgPoolCompressor", "ConvCompressor", "IdentityCompressor",
           "check_inputs", "REMAINDERS"]

REMAINDERS = ("drop", "keep")


def check_inputs(x: Tensor, mask: Tensor | None, where: str = "projector") -> Tensor:
    """Validate ``x [B, N, D]`` and ``mask [B, N]``; return a bool mask (all True when None)."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: features x must be a [B, N, D] tensor, got {shape}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{where}: mask must have shape [B, N] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"{where}: mask must be bool (True = real frame), got {mask.dtype}")
    return mask.to(device=x.device, dtype=torch.bool)


class Compressor(nn.Module):
    """Base class: rate ``k`` (stride), window ``K``, remainder rule, output width."""

    def __init__(self, rate: int, window: int | None = None, remainder: str = "drop"):
        super().__init__()
        if int(rate) < 1:
            raise ValueError(f"compression rate must be >= 1, got {rate}")
        window = int(rate) if window is None else int(window)
        if window < rate:
            raise ValueError(f"compressor window ({window}) must be >= its rate ({rate}); frames would be skipped")
        if remainder not in REMAINDERS:
            raise ValueError(f"remainder must be one of {REMAINDERS}, got {remainder!r}")
        self.rate = int(rate)
        self.window = window
        self.remainder = remainder

    def out_dim(self, d_in: int) -> int:
        """Width ``D'`` of a compressed token given the frame width ``D``."""
        raise NotImplementedError

    def out_len(self, n: int | Tensor, tokens_per_step: int = 1) -> int | Tensor:
        """Number of tokens from ``n`` frames (int or an integer tensor of per-sample lengths).

        With ``tokens_per_step = g > 1``, ``n`` counts tokens (``n / g`` steps) and so does the result.
        """
        g = int(tokens_per_step)
        if g > 1:
            return self.out_len(n // g) * g
        k, K = self.rate, self.window
        if self.remainder == "keep":
            return (n + k - 1) // k
        if isinstance(n, Tensor):
            return torch.where(n >= K, (n - K) // k + 1, torch.zeros_like(n))
        return (n - K) // k + 1 if n >= K else 0

    def forward(self, x: Tensor, mask: Tensor | None = None, tokens_per_step: int = 1) -> tuple[Tensor, Tensor]:
        """``(x [B, N, D], mask [B, N]) -> (x' [B, N', D'], mask' [B, N'])``.

        ``tokens_per_step = g > 1``: ``N = S·g`` tokens laid out step-major (a spatial grid of ``g``
        tokens per time step, as in ``Features``); compression then runs over time for each spatial
        position separately: ``[B, S·g, D] -> [B, S'·g, D']``, still step-major. A step is valid
        when its first token is (``mask`` must be constant within a step).
        """
        name = type(self).__name__
        mask = check_inputs(x, mask, name)
        g = int(tokens_per_step)
        if g == 1:
            return self._compress(x, mask)
        B, N, D = x.shape
        if g < 1 or N % g:
            raise ValueError(f"{name}: {N} tokens are not a whole number of steps of tokens_per_step={g}")
        S = N // g
        m_steps = mask.view(B, S, g)
        if not torch.equal(m_steps, m_steps[..., :1].expand_as(m_steps)):
            raise ValueError(f"{name}: mask differs between tokens of one step (tokens_per_step={g})")
        xs = x.view(B, S, g, D).transpose(1, 2).reshape(B * g, S, D)          # one sequence per grid position
        ms = m_steps[..., 0].repeat_interleave(g, dim=0)                     # [B·g, S]
        out, new_mask = self._compress(xs, ms)                               # [B·g, S', D']
        S2, D2 = out.shape[1], out.shape[2]
        out = out.view(B, g, S2, D2).transpose(1, 2).reshape(B, S2 * g, D2)
        new_mask = new_mask.view(B, g, S2)[:, 0].repeat_interleave(g, dim=1)  # [B, S'·g], step-major
        return out, new_mask

    def _compress(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _windows(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Zero the padding, then cut into windows.

        Returns ``xw [B, N', K, D]`` (zeros past the end), ``mw [B, N', K]`` (False past the end)
        and ``mask' [B, N']``.
        """
        B, N, D = x.shape
        k, K = self.rate, self.window
        n_out = int(self.out_len(N))
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        if n_out == 0:
            return x.new_zeros(B, 0, K, D), mask.new_zeros(B, 0, K), mask.new_zeros(B, 0)
        need = (n_out - 1) * k + K
        if need > N:  # only with remainder="keep"
            x = torch.cat([x, x.new_zeros(B, need - N, D)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(B, need - N)], dim=1)
        else:
            x, mask = x[:, :need], mask[:, :need]
        if K == k:
            xw = x.reshape(B, n_out, K, D)
            mw = mask.reshape(B, n_out, K)
        else:
            xw = x.unfold(1, K, k).transpose(-1, -2)  # [B, N', D, K] -> [B, N', K, D]
            mw = mask.unfold(1, K, k)
        new_mask = mw.any(-1) if self.remainder == "keep" else mw.all(-1)
        return xw, mw, new_mask

    def extra_repr(self) -> str:
        extra = f", window={self.window}" if self.window != self.rate else ""
        return f"rate={self.rate}{extra}, remainder={self.remainder!r}"


class StackCompressor(Compressor):
    """Concatenate ``k`` consecutive frames: ``[B, N, D] -> [B, N', k·D]`` (Llama-AVSR ``stack``).

    Token ``j`` is ``concat(x[j·k], x[j·k+1], …, x[j·k+k−1])`` in time order (the same layout as
    ``x.view(B, N // k, k * D)``). Remainder: see the module docstring (``"keep"`` zero-fills the
    missing frames of the last window).
    """

    def __init__(self, rate: int, remainder: str = "drop"):
        super().__init__(rate, None, remainder)

    def out_dim(self, d_in: int) -> int:
        return self.rate * d_in

    def _compress(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        xw, _, new_mask = self._windows(x, mask)
        B, n_out, K, D = xw.shape
        out = xw.reshape(B, n_out, K * D)
        return out * new_mask.unsqueeze(-1).to(out.dtype), new_mask


class AvgPoolCompressor(Compressor):
    """Mean of ``k`` consecutive frames: ``[B, N, D] -> [B, N', D]``.

    ``x'_j = Σ_{t∈W_j} m_t x_t / Σ_{t∈W_j} m_t`` over the window ``W_j``: under ``"drop"`` every
    kept window is full, so this is ``nn.AvgPool1d(k, k)``; under ``"keep"`` the last partial
    window is the mean of its valid frames only.
    """

    def __init__(self, rate: int, remainder: str = "drop"):
        super().__init__(rate, None, remainder)

    def out_dim(self, d_in: int) -> int:
        return d_in

    def _compress(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        xw, mw, new_mask = self._windows(x, mask)
        count = mw.sum(-1, keepdim=True).clamp(min=1).to(xw.dtype)  # [B, N', 1]
        out = xw.sum(2) / count
        return out * new_mask.unsqueeze(-1).to(out.dtype), new_mask


class ConvCompressor(Compressor):
    """Strided 1-D convolution: ``Conv1d(D, D_out, kernel=K, stride=k)``: ``[B, N, D] -> [B, N', D_out]``.

    ``x'_j = b + Σ_{i<K} W_i x_{j·k+i}`` with ``W_i [D_out, D]``. With ``K = k`` this is a linear map
    of the stacked window (``StackCompressor`` followed by a ``Linear(k·D → D_out)``); ``K > k``
    gives overlapping windows. Padding and frames past the end are zeros (the bias still acts on
    kept tokens); remainder as in the module docstring.
    """

    def __init__(self, rate: int, d_in: int, d_out: int | None = None, kernel: int | None = None,
                 remainder: str = "drop"):
        super().__init__(rate, kernel, remainder)
        self.d_out = int(d_out or d_in)
        self.conv = nn.Conv1d(d_in, self.d_out, kernel_size=self.window, stride=self.rate)

    def out_dim(self, d_in: int) -> int:
        if d_in != self.conv.in_channels:
            raise ValueError(f"ConvCompressor was built for width {self.conv.in_channels}, got {d_in}")
        return self.d_out

    def _compress(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.conv.in_channels:
            raise ValueError(f"ConvCompressor: feature width {x.shape[-1]} != built width {self.conv.in_channels}")
        B, N, _ = x.shape
        n_out = int(self.out_len(N))
        new_mask = self._windows(x[..., :0], mask)[2]  # windows of the mask only (no data copy)
        if n_out == 0:
            return x.new_zeros(B, 0, self.d_out), new_mask
        need = (n_out - 1) * self.rate + self.window
        xz = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        if need > N:
            xz = torch.cat([xz, xz.new_zeros(B, need - N, xz.shape[-1])], dim=1)
        out = self.conv(xz[:, :need].transpose(1, 2)).transpose(1, 2)  # [B, N', D_out]
        return out * new_mask.unsqueeze(-1).to(out.dtype), new_mask


class IdentityCompressor(Compressor):
    """No compression (``k = 1``): padding zeroed, mask unchanged. Used with QLadder (Arcana)."""

    def __init__(self, rate: int = 1, remainder: str = "drop"):
        if rate != 1:
            raise ValueError(f"the 'none' compressor has rate 1, got {rate}")
        super().__init__(1, None, remainder)

    def out_dim(self, d_in: int) -> int:
        return d_in

    def _compress(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return x.masked_fill(~mask.unsqueeze(-1), 0.0), mask
