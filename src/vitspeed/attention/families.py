"""Imports every attention family module so that their variants are registered, in book order."""
from vitspeed.attention import quadratic  # noqa: F401  softmax, softmax_explicit, cosine, euclidean, jaccard
from vitspeed.attention import linear  # noqa: F401  linear_* kernels, taylor1, efficient
from vitspeed.attention import focused  # noqa: F401  FLatten focused linear attention
from vitspeed.attention import taylor  # noqa: F401  QT-ViT quadratic Taylor kernels and ablations
from vitspeed.attention import hallucinated  # noqa: F401  hMHSA
