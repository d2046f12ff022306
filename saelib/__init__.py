"""saelib: sparse autoencoders for interpretability, and the experiments of the saelib book.

Modules: ``saes`` (architectures), ``losses``, ``training``, ``data``, ``synthetic``, ``ito``,
``sparse_coding``, ``flops``,
``metrics``, ``evaluation``, ``io``, ``plotting``, ``parameters``.
"""

__version__ = "0.1.0"
