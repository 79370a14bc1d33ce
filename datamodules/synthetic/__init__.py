"""Synthetic twins of the datasets, written in each real release's on-disk layout.

* :mod:`datamodules.synthetic.world`: shared seeded primitives (scenes, glyphs, concept
  registry, noisy text).
* :mod:`datamodules.synthetic.nuswide`: the NUS-WIDE twin (``write_nuswide``, ``ensure_nuswide``).

The modules are imported explicitly (nothing is re-exported here) so that
``python -m datamodules.synthetic.nuswide`` runs without importing itself twice.
"""
