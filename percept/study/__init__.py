"""Layer 5, study: the paper's experiments, their tables and figures, and sharing the models they make.

What exists (``catalog``), sharing (``export`` with its model cards), the paper's tables as data
(``paper_specs``, ``paper``), results and the unified model (``results``, ``unified``), sweeps and their
launchers (``sweep``, ``launch``), the whole plan (``plan``: the file; ``reproduce``: running it;
``paper_figures``: its figures), throughput (``bench``), the demo runner (``demo``), and the analysis:
interpretability (``interpret``), error analysis (``analysis``), figures (``figures``).
"""
