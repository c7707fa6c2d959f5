"""Launch strategy names, in the order the planner tries them (least sharding first); torch-free.

One home for the names ``launch`` (config files), ``plan`` (estimates) and the runtime checks share, so that
``plan`` need not import ``launch`` (which imports ``plan`` for ``launch slurm``'s default).
"""

STRATEGIES = ("ddp", "zero2", "fsdp2", "zero3", "zero3_offload")
