"""weldvision desktop training: recorded sessions -> dataset -> Lightning runs -> verified ONNX.

One command, ``weld-train`` (training/cli.py), with a subcommand per step: convert (sessions into a
dataset; ``dataset`` lists its versions, removes sessions, prunes), release (the model to deploy),
fit and crossval (experiments), export, evaluate, compare. Each subcommand is a module here with a
``main(argv)`` and a Python function of the same name.
"""
