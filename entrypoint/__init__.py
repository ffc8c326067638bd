"""The training job (``train``): Optuna-aware SageMaker training of Chainer models.

train.py runs the job; cli.py is the ``train`` command. job/: its context, hyperparameters.json,
paths, stop signal and failure file. study/: joining the study (schema lock, heartbeats). trials/:
the trial loop (runner, objective, data, per-epoch reporting, the built-in model). model/: the
kept model and spot checkpoints. multihost/: several hosts in one job. What the laptop shares
with the job about a study (settings schema, database, best trial, report) is hpo_study/.
"""
