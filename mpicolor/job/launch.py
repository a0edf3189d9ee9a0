"""What the MPI launcher tells a process through its environment, before MPI itself is started."""

import os

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launcher_rank():
    """This process's rank as MPICH, Open MPI or a PMIx launcher announce it; None when not launched by one."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None
