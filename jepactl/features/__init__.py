"""The feature room: evaluation tasks, their clips, the frozen encoder, and the token cache.

``benchmarks`` (the task definitions) and ``registry`` (every task by name, the synthetic
motion tasks included), ``clips`` (a split's clips under the task's protocol), ``encoder``
(a run's frozen encoder), ``cache`` (the HDF5 format: the only module that reads or writes
it), ``extract`` (``jepactl extract-features``) and ``synth_motion`` (the synthetic motion
clips, generated once into a shared cache folder).
"""
