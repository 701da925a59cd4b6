"""Quantizers behind one interface, found by name in ``REGISTRY``."""

from indexer.quantizers.base import REGISTRY, Quantizer, QuantizerConfig, load_quantizer, quantizer_class
from indexer.quantizers.rq_kmeans import ACRQKMeans, RQKMeans
from indexer.quantizers.rq_vae import ACRQ, RQVAE

__all__ = ["ACRQ", "ACRQKMeans", "REGISTRY", "RQKMeans", "RQVAE", "Quantizer", "QuantizerConfig", "load_quantizer", "quantizer_class"]
