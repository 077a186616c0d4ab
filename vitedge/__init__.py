"""vitedge: train, compress, export and validate Vision Transformers for facial emotion recognition on the edge."""
__version__ = "0.1.0"
