"""The model the job keeps: the best-model keeper and the spot checkpoints."""
