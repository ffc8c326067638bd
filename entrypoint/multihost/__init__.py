"""Several hosts in one job: who leads, the storage proxy between them, who keeps the model."""
