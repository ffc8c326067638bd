"""``python -m launcher`` is the ``sagemaker-optuna`` console script."""

from launcher.cli import main

main()
