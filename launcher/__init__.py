"""The launching side: start training jobs on one study, watch it, find and deploy its best model.

Runs on a laptop or in CI (``sagemaker-optuna``), never inside the image's jobs.
"""
