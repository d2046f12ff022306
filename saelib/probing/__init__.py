"""Probing: do SAE latents make better linear probes than the activations themselves?

``probes``: group-wise splits, pooling, dense / PCA / k-sparse SAE probes, the quiver.
``layers``: the probes at many layers of a language model, fixed vs per-task layer.
``tasks``: binary probing tasks built offline from real text.
"""

from saelib.probing.probes import group_split, probe_task, quiver

__all__ = ["group_split", "probe_task", "quiver"]
