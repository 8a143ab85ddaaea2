"""Speech recognition with CTC: manifests and audio (data), log-mel features (features), decoding (ctc).

The model is recurrent/models/speech.py; the task on the one training loop is recurrent/tasks/speech.py.
"""
