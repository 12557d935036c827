"""Data I/O that is not a workspace: raw dataset splits (generated, a directory, the hub), the sampled files of a
run, and the run directory's records. Tasks call these; the rules that decide what to keep stay in tasks/."""
