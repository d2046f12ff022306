"""saelib: sparse autoencoders for interpretability, and the experiments of the saelib book.

The core (imports nothing below):
    saes/        one module per architecture over a base; the SAE owns its training loss
    losses, training, data, metrics, evaluation, io, flops
    files, validation, progress       atomic writes and checksums; argument checks; bars
The parts of the book (each imports the core, never each other's chapters' code):
    coding/      inference-time optimisation, sparse coding, encoders fitted to a known answer
    toys/        ground-truth data, the composed-features toy, scoring against known features
    lm/          language models offline, corpus, activation cache, splice, sweeps, site record
    probing/     probes, probing at many layers, probing tasks from real text (lm below it)
For the notebooks:
    parameters, schemas/   chapter parameter schemas and their check
    plotting/              one figure style and each chapter family's figures
"""

__version__ = "0.1.0"
