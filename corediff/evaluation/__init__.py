"""Offline evaluation: sample-quality metrics (digits classifier features, Inception FID/KID/IS/
precision-recall, as each dataset declares in ``Dataset.metrics``), memorization (distance to the
nearest training image) and restoration metrics of cold degradations, used by ``corediff eval``
and ``corediff study``.

torch-fidelity is needed only for Inception metrics.
"""
