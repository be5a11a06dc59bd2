"""Offline evaluation: sample-quality metrics (digits classifier features, Inception FID/KID/IS/
precision-recall, as each dataset declares in ``Dataset.metrics``), memorization (distance to the
nearest training image), restoration metrics of cold degradations, the ``corediff eval`` command and
the comparison-table generator (``python -m corediff.evaluation.results``).

Imported only by ``corediff eval``; torch-fidelity is needed only for Inception metrics.
"""
