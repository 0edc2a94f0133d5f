"""weldvision desktop training: bags -> dataset -> Lightning fit -> verified ONNX.

Commands: ``python -m training.convert | fit | crossval | export | evaluate | compare`` (each also callable as
a Python function of the same name in its module).
"""
