"""The report room: results of many runs as the paper's tables and figure.

``compare`` (``jepactl compare``: Tables 3 and 4, Figure 2) and ``synth_motion`` (Table 6's
shape). Reads run directories and result files only: no torch, no models.
"""
