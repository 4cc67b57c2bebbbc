"""advx: reproduce the key experiments of adversarial-examples research from one command line."""

__version__ = "0.1.0"
