"""Named and anonymous volumes (``store``) and the mount planning of a container (``planner``)."""
