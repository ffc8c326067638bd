"""The `serve` command: the best trial's model behind SageMaker's /ping and /invocations."""
