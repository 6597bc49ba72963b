"""The dense CRF of `wsseg.wsss.crf` in PyTorch, batched over images of one size, so that it runs on a GPU.

Mean-field inference follows pydensecrf's densecrf library (Krähenbühl & Koltun, NeurIPS'11) step for step, so
the two agree to float rounding: Q starts as softmax(−unary); each iteration adds, per kernel, compat · n ⊙
K(n ⊙ Q) to −unary and takes the softmax again, where K is the Gaussian filter over the kernel's features and
n = 1/√K(1) its symmetric normalisation (densecrf's default NORMALIZE_SYMMETRIC; Potts compatibility makes the
message of each label its own filtered mass). K is the same approximation densecrf uses, Adams et al.'s
permutohedral lattice (Eurographics'10): splat onto the vertices of each feature's enclosing simplex, blur with
[1/2, 1, 1/2] along the lattice's d + 1 axes, slice back. Hash tables become sorted integer codes here; lattice
vertices of different images never meet because each code carries its image's index.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from wsseg.wsss.crf import CrfParams, kernel_widths, unary_energy


def crf_marginals(image: np.ndarray, probabilities: np.ndarray, params: CrfParams,
                  device: torch.device | str | None = None) -> np.ndarray:
    """The (N, H, W) float32 marginals after mean-field inference, as `wsseg.wsss.crf.crf_marginals` gives them."""
    return crf_marginals_batch([image], [probabilities], params, device)[0]


def crf_marginals_batch(images: Sequence[np.ndarray], probabilities: Sequence[np.ndarray], params: CrfParams,
                        device: torch.device | str | None = None) -> list[np.ndarray]:
    """Marginals of several images of one size at once: `images` (H, W, 3) uint8 RGB, `probabilities`
    (N_i, H, W) scores; the label counts N_i may differ. `device` defaults to the GPU when there is one."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    height, width = _common_size(images, probabilities)
    counts = [len(scores) for scores in probabilities]
    unary = _padded_unary(probabilities, max(counts), device)
    colours = torch.from_numpy(np.stack([np.asarray(image, np.uint8) for image in images])).to(device)
    gaussian_sxy, bilateral_sxy = kernel_widths(params, height, width)
    bilateral = torch.cat([_positions(height, width, bilateral_sxy, device).expand(len(images), -1, -1),
                           colours.reshape(len(images), -1, 3).float() / params.bilateral_srgb], dim=2)
    kernels = [(_SpatialFilter(PermutohedralLattice(_positions(height, width, gaussian_sxy, device)[None])),
                params.gaussian_compat),
               (PermutohedralLattice(bilateral).filter, params.bilateral_compat)]
    marginals = mean_field(unary, kernels, params.iterations)
    marginals = marginals.reshape(len(images), height, width, -1).permute(0, 3, 1, 2).cpu().numpy()
    return [np.ascontiguousarray(marginals[row, :count]) for row, count in enumerate(counts)]


Filter = Callable[[torch.Tensor], torch.Tensor]


def mean_field(unary: torch.Tensor, kernels: list[tuple[Filter, float]], iterations: int) -> torch.Tensor:
    """Q (B, N, L) for a (B, N, L) unary energy (+inf on padded labels, whose Q stays 0); each kernel is a
    filter of (B, N, C) values and its Potts compatibility."""
    normalisers = [filter_(torch.ones_like(unary[..., :1])).add_(1e-20).rsqrt_() for filter_, _ in kernels]
    negative_unary = -unary
    marginals = torch.softmax(negative_unary, dim=-1)
    for _ in range(iterations):
        energy = negative_unary
        for (filter_, compat), normaliser in zip(kernels, normalisers, strict=True):
            energy = energy + compat * normaliser * filter_(normaliser * marginals)
        marginals = torch.softmax(energy, dim=-1)
    return marginals


class PermutohedralLattice:
    """Gaussian filtering of (B, N, C) values at points with (B, N, d) features, each image's points apart.

    Splatting, each blur step and slicing are sparse matrix products (a point's row holds its d + 1 barycentric
    weights, a lattice point's its own and its two neighbours' along an axis): on a CPU several times faster
    than scatter-adds and gathers, and cuSPARSE's on a GPU.
    """

    def __init__(self, features: torch.Tensor):
        images, points, dims = features.shape
        keys, weights = _enclosing_simplices(features.reshape(-1, dims).float())
        image_index = torch.arange(images, device=features.device).repeat_interleave(points)
        codes = _KeyCodes(keys, image_index)
        self.codes, vertices = torch.unique(codes.encode(keys, image_index[:, None]), return_inverse=True)
        self.blurs = [_blur_rows(*pair) for pair in self._neighbours(keys, image_index, vertices, codes)]
        self.slicing = _point_rows(vertices, weights, len(self.codes))
        self.splatting = _lattice_rows(vertices, weights, len(self.codes))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N, C) values → their Gaussian-weighted sums over each image's points (splat, blur, slice)."""
        lattice = self.splatting @ values.reshape(-1, values.shape[-1])
        for blur in self.blurs:
            lattice = blur @ lattice
        # densecrf scales the slice by a constant ("alpha"), which the symmetric normalisation cancels.
        return (self.slicing @ lattice).reshape(values.shape)

    def _neighbours(self, keys: torch.Tensor, image_index: torch.Tensor, vertices: torch.Tensor,
                    codes: _KeyCodes) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per lattice axis, the index of each lattice point's two neighbours along it (M where absent)."""
        size, dims = len(self.codes), keys.shape[-1]
        point_keys = keys.new_empty(size, dims).index_copy_(0, vertices.reshape(-1), keys.reshape(-1, dims))
        point_image = image_index.new_empty(size).index_copy_(
            0, vertices.reshape(-1), image_index[:, None].expand_as(vertices).reshape(-1))
        steps = torch.eye(dims + 1, dims, dtype=keys.dtype, device=keys.device) * (dims + 1) - 1
        return [(self._find(codes.encode(point_keys + step, point_image)),
                 self._find(codes.encode(point_keys - step, point_image))) for step in steps]

    def _find(self, codes: torch.Tensor) -> torch.Tensor:
        position = torch.searchsorted(self.codes, codes).clamp_(max=len(self.codes) - 1)
        return torch.where(self.codes[position] == codes, position, len(self.codes))


class _SpatialFilter:
    """A lattice over pixel positions alone, which every image of a batch shares: one filtering of all images'
    values side by side, (N, B·C), instead of one lattice per image."""

    def __init__(self, lattice: PermutohedralLattice):
        self.lattice = lattice

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        images, points, channels = values.shape
        side_by_side = values.transpose(0, 1).reshape(1, points, images * channels)
        return self.lattice.filter(side_by_side).reshape(points, images, channels).transpose(0, 1)


def _point_rows(vertices: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """The (P, M) slicing matrix in CSR: row p holds point p's barycentric weights on its simplex's vertices."""
    points, corners = vertices.shape
    columns, order = vertices.sort(dim=1)  # CSR wants each row's columns in order
    rows = torch.arange(0, points * corners + 1, corners, device=vertices.device)
    return _csr(rows, columns.reshape(-1), weights.gather(1, order).reshape(-1), (points, size))


def _lattice_rows(vertices: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """The (M, P) splatting matrix in CSR, the slicing matrix's transpose."""
    points, corners = vertices.shape
    order = vertices.reshape(-1).argsort(stable=True)  # stable: the points of a row stay in order
    counts = torch.bincount(vertices.reshape(-1), minlength=size)
    rows = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return _csr(rows, order // corners, weights.reshape(-1)[order], (size, points))


def _blur_rows(below: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
    """One blur step along a lattice axis as an (M, M) CSR matrix: [1/2, 1, 1/2] over each point and its two
    neighbours, those outside the lattice (index M) left out."""
    size = len(below)
    columns = torch.stack([below, torch.arange(size, device=below.device), above], dim=1)
    weights = torch.tensor([0.5, 1.0, 0.5], device=below.device).expand(size, 3)
    columns, order = columns.sort(dim=1)
    weights = weights.gather(1, order)
    present = columns < size
    rows = torch.cat([present.new_zeros(1, dtype=torch.long), present.sum(1).cumsum(0)])
    return _csr(rows, columns[present], weights[present], (size, size))


def _csr(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags all of its CSR support as beta; sparse-dense products are what it has long supported.
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta state", UserWarning)
        return torch.sparse_csr_tensor(rows, columns, values, shape, check_invariants=False)


class _KeyCodes:
    """Lattice keys (and the image they belong to) as single int64 codes, mixed-radix over the keys' range
    widened by one step on each side, so that every neighbour has a code too."""

    def __init__(self, keys: torch.Tensor, image_index: torch.Tensor):
        dims = keys.shape[-1]
        flat = keys.reshape(-1, dims)
        self.low = flat.amin(dim=0) - (dims + 1)
        spans = (flat.amax(dim=0) + (dims + 1) - self.low + 1).tolist()
        radices = [*spans, int(image_index.max()) + 1]
        if math.prod(radices) >= 2 ** 62:
            raise ValueError(f"the CRF lattice of {radices[-1]} images with {dims}-d features spans {spans}, "
                             "too wide for 64-bit codes; pass fewer images at once")
        strides = [math.prod(radices[:axis]) for axis in range(dims + 1)]
        self.strides = torch.tensor(strides[:dims], dtype=torch.int64, device=keys.device)
        self.image_stride = strides[dims]

    def encode(self, keys: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        return ((keys - self.low) * self.strides).sum(dim=-1) + image_index * self.image_stride


def _enclosing_simplices(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (P, d) feature's enclosing simplex in the permutohedral lattice: the integer keys of its d + 1
    vertices, (P, d + 1, d), and its barycentric weights on them, (P, d + 1) (Adams et al., sec. 3 and 4;
    densecrf's `Permutohedral::init`, whose order of operations this keeps)."""
    points, dims = features.shape
    axis = torch.arange(dims, dtype=torch.float32, device=features.device)
    inverse_std = math.sqrt(2.0 / 3.0) * (dims + 1)  # the blur's standard deviation in lattice units
    scaled = features * (inverse_std / torch.sqrt((axis + 2) * (axis + 1)))
    suffix = torch.cat([scaled.flip(1).cumsum(1).flip(1), scaled.new_zeros(points, 1)], dim=1)
    elevated = suffix.clone()
    elevated[:, 1:] -= (axis + 1) * scaled  # onto the plane Σx = 0 in d + 1 dimensions
    nearest = torch.round(elevated * (1.0 / (dims + 1)))
    remainder0 = nearest * (dims + 1)  # the closest point of the lattice's zero-coloured sublattice
    offset = elevated - remainder0
    rank = _rank(offset) + nearest.sum(dim=1, keepdim=True).long()
    wrap = (rank < 0).long() - (rank > dims).long()  # back onto the plane where rounding left it
    rank += wrap * (dims + 1)
    remainder0 += wrap * (dims + 1)
    offset = (elevated - remainder0) * (1.0 / (dims + 1))
    barycentric = features.new_zeros(points, dims + 2)
    barycentric.scatter_add_(1, dims - rank, offset).scatter_add_(1, dims - rank + 1, -offset)
    barycentric[:, 0] += 1.0 + barycentric[:, dims + 1]
    corner = torch.arange(dims + 1, device=features.device)[None, :, None]
    keys = (remainder0[:, None, :dims].long() + corner
            - (dims + 1) * (rank[:, None, :dims] > dims - corner).long())
    return keys, barycentric[:, :dims + 1]


def _rank(offset: torch.Tensor) -> torch.Tensor:
    """Each coordinate's place when the (P, d + 1) offsets are sorted in decreasing order, ties going to the
    later coordinate as in densecrf."""
    coordinates = offset.shape[1]
    less = offset[:, :, None] < offset[:, None, :]  # [p, i, j]: offset_i < offset_j
    later = torch.ones(coordinates, coordinates, dtype=torch.bool, device=offset.device).triu(1)
    return (less & later).sum(dim=2) + (~less.transpose(1, 2) & later.T).sum(dim=2)


def _positions(height: int, width: int, sxy: float, device: torch.device) -> torch.Tensor:
    """(H·W, 2) pixel coordinates (x, y) over the kernel's spatial width, row-major as densecrf orders them."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([cols.reshape(-1) / sxy, rows.reshape(-1) / sxy], dim=1)


def _padded_unary(probabilities: Sequence[np.ndarray], labels: int, device: torch.device) -> torch.Tensor:
    """(B, N, labels) unary energies of each image's pixels; a label an image lacks costs +inf, so its Q is 0."""
    rows = []
    for scores in probabilities:
        energy = torch.from_numpy(unary_energy(scores)).T
        rows.append(torch.nn.functional.pad(energy, (0, labels - len(scores)), value=math.inf))
    return torch.stack(rows).to(device)


def _common_size(images: Sequence[np.ndarray], probabilities: Sequence[np.ndarray]) -> tuple[int, int]:
    if not images or len(images) != len(probabilities):
        raise ValueError(f"{len(images)} images and {len(probabilities)} probability stacks; give one per image")
    sizes = {image.shape[:2] for image in images} | {scores.shape[1:] for scores in probabilities}
    if len(sizes) != 1:
        raise ValueError(f"a CRF batch holds images of one size; got {sorted(sizes)}")
    return sizes.pop()
