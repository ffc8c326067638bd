"""The trial loop: data, the objective and its network, per-epoch reporting, the runner."""
