"""Progress bars that a caller can switch off, and that the TQDM_DISABLE variable can too."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(enabled: bool, iterable=None, **kwargs) -> tqdm:
    """A text tqdm bar; ``enabled=False`` silences it.

    When enabled, ``disable`` is left unset so that tqdm's environment overrides apply:
    the book build sets ``TQDM_DISABLE=1`` to keep progress bars (stderr) out of the
    rendered pages. Text bars, not widgets: they need no ipywidgets in a notebook.
    """
    if not enabled:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
