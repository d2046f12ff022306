"""Probing: do SAE latents make better linear probes than the activations themselves?

``probes``: group-wise splits, dense / PCA / k-sparse SAE probes, the quiver.
``pooling``: which tokens of a text count at an SAE's site, and last or mean of them.
``layers``: pooled features at many layers of a language model, the probes on them.
``protocols``: fixed vs per-task layer, with and without SAE probes; their summaries.
``cache``: pooled features on disk, computed once and verified (sha256) on every load.
``selection``: which tasks count (group counts, chance / ceiling flags) and the bootstrap
null of the best layers.
``findings``: the probing chapter's claims measured, one effect per task.
``tasks``: binary probing tasks built offline from real text.
"""

from saelib.probing.probes import group_split, probe_task, quiver

__all__ = ["group_split", "probe_task", "quiver"]
