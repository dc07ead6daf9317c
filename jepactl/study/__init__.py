"""Studies: many runs x seeds x tasks as one resumable object (``jepactl study``).

``spec`` (the study file: validated like a recipe, no torch), ``graph`` (the stages:
pretrain -> extract per task -> probe per kind -> report, each a ``jepactl`` command line),
``state`` (what is done, read from the run directories; what is running, from the job records,
the queue and the run locks), ``runner`` (one stage as a child process, its log and record),
``local`` and ``slurm`` (the two launchers), ``run`` (``study run``), ``report`` (``compare``
over the study, seeds grouped), ``views`` (what plan and status print) and ``cli``.
"""
