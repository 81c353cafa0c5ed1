"""The pipeline users call: ``prepare_pt2e`` / ``prepare_qat_pt2e`` / ``convert_pt2e`` as a
sequence of passes, the model checks they start with, observer construction, train / eval
switching of exported models and the calibration loop."""
